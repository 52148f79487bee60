"""WordPiece text preprocessing: raw strings → BERT inputs, and vocabulary learning.

``TextPreprocessor`` is a Keras layer (keras-hub ``WordPieceTokenizer`` + ``StartEndPacker``) so it
runs inside ``tf.data``, inside the model graph and inside an exported SavedModel, where the
vocabulary travels with the model. ``build_vocabulary`` learns a WordPiece vocabulary from a corpus
with tensorflow-text's ``bert_vocab_from_dataset`` (the paper learns its vocabulary from its corpus).
"""

from __future__ import annotations

import os
from typing import Iterable

import keras
import keras_hub
import tensorflow as tf

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
RESERVED_TOKENS = [PAD, UNK, CLS, SEP, MASK]


def load_vocabulary(path: str) -> list:
    """Reads a one-token-per-line vocabulary file; raises a clear error if it is missing."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Vocabulary file not found: {path}")
    with tf.io.gfile.GFile(path) as f:
        vocab = [line.rstrip("\n") for line in f]
    missing = [t for t in (PAD, UNK, CLS, SEP) if t not in vocab]
    if missing:
        raise ValueError(f"Vocabulary {path} lacks required tokens {missing}.")
    return vocab


def save_vocabulary(vocab: list, path: str) -> str:
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("\n".join(vocab) + "\n")
    return path


def build_vocabulary(texts: Iterable[str] | tf.data.Dataset, vocab_size: int = 30522,
                     lowercase: bool = True, batch_size: int = 1024) -> list:
    """Learns a WordPiece vocabulary (reserved tokens first) from an iterable or dataset of strings."""
    if not isinstance(texts, tf.data.Dataset):
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))
    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bert_vocab
    vocab = bert_vocab.bert_vocab_from_dataset(
        texts.batch(batch_size).prefetch(2), vocab_size=vocab_size, reserved_tokens=RESERVED_TOKENS,
        bert_tokenizer_params=dict(lower_case=lowercase),
        learn_params=dict(num_iterations=4, max_token_length=50, max_unique_chars=1000))
    return vocab


@keras.saving.register_keras_serializable(package="align_tf")
class TextPreprocessor(keras.layers.Layer):
    """Tokenizes strings to ``{"token_ids", "padding_mask", "segment_ids"}`` of fixed length.

    ``[CLS] wordpieces… [SEP] [PAD]…``, truncated to ``sequence_length`` (the paper uses 64).

    Args:
      vocabulary: a vocabulary file path or a list of tokens.
      sequence_length: output length.
      lowercase: lowercase and strip accents first (BERT uncased).
    """

    def __init__(self, vocabulary, sequence_length: int = 64, lowercase: bool = True, **kwargs):
        kwargs.setdefault("dtype", "int32")
        super().__init__(**kwargs)
        if isinstance(vocabulary, str):
            vocabulary = load_vocabulary(vocabulary)
        self.vocabulary = list(vocabulary)
        self.sequence_length = sequence_length
        self.lowercase = lowercase
        self.tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=self.vocabulary, lowercase=lowercase, strip_accents=lowercase, oov_token=UNK)
        ids = {t: i for i, t in enumerate(self.vocabulary)}
        self.pad_id = ids[PAD]
        self.packer = keras_hub.layers.StartEndPacker(
            sequence_length=sequence_length, start_value=ids[CLS], end_value=ids[SEP],
            pad_value=self.pad_id, return_padding_mask=True)
        self.built = True  # no weights; lets ExportArchive track it before first call

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def call(self, texts):
        texts = tf.convert_to_tensor(texts)
        token_ids, padding_mask = self.packer(self.tokenizer(texts))
        return {"token_ids": tf.cast(token_ids, tf.int32),
                "padding_mask": tf.cast(padding_mask, tf.int32),
                "segment_ids": tf.zeros_like(token_ids, dtype=tf.int32)}

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary=self.vocabulary, sequence_length=self.sequence_length,
                      lowercase=self.lowercase)
        return config
