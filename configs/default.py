"""The embedded default: tiny EfficientNet + BERT-tiny on the built-in synthetic shapes corpus (CPU)."""

from align_tf.configs import base


def get_config():
    return base.get_config()
