"""WordPiece text preprocessing: raw strings → BERT inputs, and vocabulary learning.

``TextPreprocessor`` is a Keras layer (BERT pre-tokenization in TF string ops, tensorflow-text's
``FastWordpieceTokenizer`` and keras-hub's ``StartEndPacker``) so it runs inside ``tf.data``, inside
the model graph and inside an exported SavedModel, where the vocabulary travels with the model. Its
ids equal HuggingFace's ``BertTokenizer`` (the tokenizer of the public ALIGN checkpoint) for the
same vocabulary; ``tests/test_hf_parity.py`` checks that (``tests/test_mling_tokenizer.py`` for the
multilingual mode). ``build_vocabulary`` learns a WordPiece vocabulary from a corpus with
tensorflow-text's learner, fed by the same pre-tokenizer (the paper learns its vocabulary from
its corpus).
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

# ``config.data.tokenizer`` → normalisation. "uncased" is BERT-uncased (the default, English);
# "multilingual" lowercases but keeps accents and other combining marks, because stripping them
# (NFD, drop Mn) destroys scripts: वृत्त → वतत, ئ → ي, です → てす; lowercasing only touches cased
# scripts (Latin, Cyrillic, Greek) and merges case variants a small vocabulary would split.
# "cased" keeps text as is (mBERT-cased).
MODES = {"uncased": dict(lowercase=True, strip_accents=True),
         "multilingual": dict(lowercase=True, strip_accents=False),
         "cased": dict(lowercase=False, strip_accents=False)}


def mode_settings(mode: str) -> dict:
    """``MODES[mode]`` (``lowercase``/``strip_accents`` keyword arguments); a one-line
    ``ValueError`` for an unknown mode."""
    if mode not in MODES:
        raise ValueError(f"unknown tokenizer {mode!r}; choose from {sorted(MODES)}")
    return dict(MODES[mode])


def bert_pretokenize(texts, lowercase: bool = True,
                     strip_accents: bool | None = None) -> tf.RaggedTensor:
    """Splits strings into BERT words exactly as HF's ``BertTokenizer`` does before WordPiece.

    Replaces invalid UTF-8 by U+FFFD (as decoding with ``errors="replace"`` does), deletes
    NUL/U+FFFD/control characters, maps whitespace to spaces, isolates CJK ideographs, strips
    accents (NFD, drop non-spacing marks) if asked, lowercases character by character if asked,
    and splits on spaces and punctuation, keeping punctuation as words.

    Args:
      texts: string tensor of shape ``(batch,)``.
      lowercase: lowercase; ``False`` keeps case.
      strip_accents: strip accents; ``None``: as ``lowercase`` (HF's default; BERT uncased).

    Returns:
      ``(batch, None)`` ragged string tensor of words.
    """
    strip_accents = lowercase if strip_accents is None else strip_accents
    # Valid UTF-8 is unchanged; invalid bytes would otherwise reach WordPiece as [UNK] words.
    texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace",
                                         replacement_char=0xFFFD)
    texts = tf.strings.regex_replace(texts, _DELETED, "")
    texts = tf.strings.regex_replace(texts, _SPACES, " ")
    texts = tf.strings.regex_replace(texts, _CJK, r" \0 ")
    if strip_accents:
        texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFD"), r"\p{Mn}", "")
    if lowercase:
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
                     lowercase: bool = True, batch_size: int = 1024,
                     strip_accents: bool | None = None) -> list:
    """Learns a WordPiece vocabulary (reserved tokens first) from an iterable or dataset of strings.

    Words come from ``bert_pretokenize`` with the same ``lowercase``/``strip_accents`` as the
    ``TextPreprocessor`` that will use the vocabulary, so the learner sees the words inference
    produces (tensorflow-text's own BERT splitter case-folds: "Größe" → "grosse", "ﬁ" → "fi").
    Raises ``StopIteration`` if there is no word at all.
    """
    if not isinstance(texts, tf.data.Dataset):
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner
    words = texts.batch(batch_size).map(
        lambda t: bert_pretokenize(t, lowercase, strip_accents).flat_values).prefetch(2)
    counts = learner.count_words(words.as_numpy_iterator())
    return learner.learn(counts, vocab_size, RESERVED_TOKENS, num_iterations=4,
                         max_token_length=50, max_unique_chars=1000)


@keras.saving.register_keras_serializable(package="align_tf")
class TextPreprocessor(keras.layers.Layer):
    """Tokenizes strings to ``{"token_ids", "padding_mask", "segment_ids"}`` of fixed length.

    ``[CLS] wordpieces… [SEP] [PAD]…``, truncated to ``sequence_length`` (the paper uses 64).

    Args:
      vocabulary: a vocabulary file path or a list of tokens.
      sequence_length: output length.
      lowercase: lowercase first (BERT uncased; ``MODES`` names the presets' choices).
      strip_accents: strip accents first; ``None``: as ``lowercase`` (BERT uncased / cased).
    """

    def __init__(self, vocabulary, sequence_length: int = 64, lowercase: bool = True,
                 strip_accents: bool | None = None, **kwargs):
        kwargs.setdefault("dtype", "int32")
        super().__init__(**kwargs)
        if isinstance(vocabulary, str):
            vocabulary = load_vocabulary(vocabulary)
        self.vocabulary = list(vocabulary)
        self.sequence_length = sequence_length
        self.lowercase = lowercase
        self.strip_accents = strip_accents
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

    @classmethod
    def for_data(cls, vocabulary, data) -> "TextPreprocessor":
        """The preprocessor of a config's ``data`` section: ``data.max_tokens`` and the
        ``data.tokenizer`` mode (absent in older configs: ``"uncased"``)."""
        mode = data.get("tokenizer", "uncased") if hasattr(data, "get") else "uncased"
        return cls(vocabulary, sequence_length=data.max_tokens, **mode_settings(mode))

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def tokenize(self, texts) -> tf.RaggedTensor:
        """``(batch,)`` strings → ``(batch, None)`` WordPiece ids, without [CLS]/[SEP]/padding."""
        words = bert_pretokenize(tf.convert_to_tensor(texts), self.lowercase,
                                 self.strip_accents)
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
                      lowercase=self.lowercase, strip_accents=self.strip_accents)
        return config
