"""Run the LiteRT export (``python -m align_tf.export --format=litert``) without TensorFlow.

    from align_tf.litert import Embedder, tokenize

    embedder = Embedder("RUN/litert", threads=2)          # ai-edge-litert + NumPy only
    embedder.embed_images(pixels)       # float32 [B, H, W, 3] in [0, 1] → [B, D], unit norm
    embedder.embed_texts(["a photo of a cat"])                          # → [1, D], unit norm
    tokenize(["a photo"], "RUN/litert/vocab.txt", max_tokens=64)  # the SavedModel's ids

Importing this package imports no TensorFlow (``tests/test_litert.py`` runs it where
``import tensorflow`` fails); ``docs/on-device.md`` has the Android / iOS side.
"""

from align_tf.litert.runner import Embedder, LiteRTError
from align_tf.litert.tokenizer import Tokenizer, pretokenize, tokenize

__all__ = ["Embedder", "LiteRTError", "Tokenizer", "pretokenize", "tokenize"]
