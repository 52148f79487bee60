"""WordPiece text preprocessing: raw strings → BERT inputs, and vocabulary learning.

``TextPreprocessor`` is a Keras layer (BERT pre-tokenization in TF string ops, tensorflow-text's
``FastWordpieceTokenizer`` and keras-hub's ``StartEndPacker``) so it runs inside ``tf.data``, inside
the model graph and inside an exported SavedModel, where the vocabulary travels with the model. Its
ids equal HuggingFace's ``BertTokenizer`` (the tokenizer of the public ALIGN checkpoint) for the
same vocabulary; ``tests/test_hf_parity.py`` checks that. ``build_vocabulary`` learns a WordPiece
vocabulary from a corpus with tensorflow-text's ``bert_vocab_from_dataset`` (the paper learns its
vocabulary from its corpus).
"""

from __future__ import annotations

import os
from typing import Iterable

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
RESERVED_TOKENS = [PAD, UNK, CLS, SEP, MASK]

# BERT's normaliser and pre-tokenizer (HF ``BertNormalizer`` + ``BertPreTokenizer``), in RE2 syntax.
# keras-hub's WordPieceTokenizer differs from them in ways that change ids: it lowercases with NFKC
# case folding ("ß"→"ss", "ﬁ"→"fi", full-width→ASCII, "…"→"..."), splits on control/format
# characters that BERT deletes (zero-width space, soft hyphen, ZWJ inside emoji), does not split on
# non-ASCII spaces (NBSP, U+3000) and maps words over 100 *bytes* (not characters) to [UNK].
_DELETED = r"[\x00\x{FFFD}]|[^\P{C}\t\n\r]"  # NUL, U+FFFD, control/format chars except \t\n\r
_SPACES = r"[\t\n\r\p{Z}]"  # become " " (all of Python/Rust whitespace left after _DELETED)
_CJK = (r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
        r"\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]")
# All non-alphanumeric printable ASCII ("$", "^", "`" included) and Unicode punctuation (P*).
_PUNCTUATION = r"[!-/:-@\[-`{-~]|\p{P}"
MAX_CHARS_PER_WORD = 100  # longer words become [UNK] (BERT counts characters)


def bert_pretokenize(texts, lowercase: bool = True) -> tf.RaggedTensor:
    """Splits strings into BERT words exactly as HF's ``BertTokenizer`` does before WordPiece.

    Deletes NUL/U+FFFD/control characters, maps whitespace to spaces, isolates CJK ideographs,
    (uncased:) strips accents (NFD, drop non-spacing marks) then lowercases character by character,
    and splits on spaces and punctuation, keeping punctuation as words.

    Args:
      texts: string tensor of shape ``(batch,)``.
      lowercase: BERT uncased (strip accents and lowercase); ``False`` keeps text as is.

    Returns:
      ``(batch, None)`` ragged string tensor of words.
    """
    texts = tf.strings.regex_replace(texts, _DELETED, "")
    texts = tf.strings.regex_replace(texts, _SPACES, " ")
    texts = tf.strings.regex_replace(texts, _CJK, r" \0 ")
    if lowercase:
        texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFD"), r"\p{Mn}", "")
        # HF's Rust normaliser lowercases character by character; ICU's string lowering differs
        # only in its one context-dependent rule, word-final "Σ" → "ς" (HF: "σ"), so pre-empt it.
        texts = tf.strings.lower(tf.strings.regex_replace(texts, "Σ", "σ"), encoding="utf-8")
    return tf_text.regex_split(texts, " |" + _PUNCTUATION, _PUNCTUATION)


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
        # Words are capped at MAX_CHARS_PER_WORD characters before this, so 4 bytes per character
        # never maps a word that BERT would split to [UNK].
        self.wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=self.vocabulary, suffix_indicator="##", max_bytes_per_word=4 * MAX_CHARS_PER_WORD,
            token_out_type=tf.int32, unknown_token=UNK, no_pretokenization=True)
        ids = {t: i for i, t in enumerate(self.vocabulary)}
        self.pad_id = ids[PAD]
        self.packer = keras_hub.layers.StartEndPacker(
            sequence_length=sequence_length, start_value=ids[CLS], end_value=ids[SEP],
            pad_value=self.pad_id, return_padding_mask=True)
        self.built = True  # no weights; lets ExportArchive track it before first call

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def tokenize(self, texts) -> tf.RaggedTensor:
        """``(batch,)`` strings → ``(batch, None)`` WordPiece ids, without [CLS]/[SEP]/padding."""
        words = bert_pretokenize(tf.convert_to_tensor(texts), self.lowercase)
        words = tf.ragged.map_flat_values(
            lambda w: tf.where(tf.strings.length(w, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD, UNK, w),
            words)
        return self.wordpiece.tokenize(words).merge_dims(-2, -1)

    def call(self, texts):
        token_ids, padding_mask = self.packer(self.tokenize(texts))
        return {"token_ids": tf.cast(token_ids, tf.int32),
                "padding_mask": tf.cast(padding_mask, tf.int32),
                "segment_ids": tf.zeros_like(token_ids, dtype=tf.int32)}

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary=self.vocabulary, sequence_length=self.sequence_length,
                      lowercase=self.lowercase)
        return config
