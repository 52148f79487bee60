"""A user's plugin module, as ``--plugins=export_toy_plugin`` imports it: it registers export
signatures on import (``align_tf.export`` is not edited). ``tests/test_export.py``'s ``exported``
fixture exports through ``python -m align_tf.export --plugins=export_toy_plugin``."""

import tensorflow as tf

from align_tf import export


def _text_stats(parts, texts):
    """A toy export signature defined outside align_tf: the shared tokenizer and text tower."""
    tokens = parts.tokenize(texts)
    return {"num_tokens": tf.reduce_sum(tf.cast(tokens["padding_mask"], tf.int32), axis=1),
            "first": parts.embed_text(texts)[:, 0]}


export.register_signature("text_stats", inputs=[export.TEXTS])(_text_stats)
export.register_signature("never_supported", inputs=[export.TEXTS],
                          supports=lambda parts: False)(_text_stats)
