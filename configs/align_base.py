"""The public kakaobrain/align-base architecture: EfficientNet-B7 (640-d) + BERT-base, paper recipe."""

from align_tf.configs import paper


def get_config():
    c = paper.get_config()
    c.model.image_size_name = "b7"
    c.model.text_size_name = "base"
    c.data.vocab_size = 30522
    c.train.batch_size = 4096  # 256 cores at 16 per core: BN groups of 16 cores, as paper.py
    return c
