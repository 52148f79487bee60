"""SavedModel export of a trained dual encoder with signatures on raw inputs.

The SavedModel carries the tokenizer and vocabulary, so consumers need only TensorFlow and
tensorflow-text (``import tensorflow_text`` registers the ops) — never align_tf.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def export_saved_model(model, preprocessor, path: str) -> str:
    """Writes ``path`` with ``image_embed`` (float pixels in [0, 1], any size) and ``text_embed``
    (strings) signatures, both returning unit-norm float32 embeddings."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(preprocessor)
    archive.add_endpoint(
        "image_embed",
        lambda images: model.embed_image(images, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    archive.add_endpoint(
        "text_embed",
        lambda texts: model.embed_text(preprocessor(texts), training=False),
        input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    archive.write_out(path, verbose=False)
    return path
