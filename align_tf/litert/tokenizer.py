"""The pure-Python reference of the SavedModel's in-graph tokenizer (``align_tf.tokenizer``).

``tokenize`` gives the ids and mask ``TextPreprocessor`` computes in TensorFlow, character for
character, with the standard library only, so ``text_embed.tflite`` (ids in, embeddings out) can be
fed on a phone or a TF-free server. The contract, step by step (each the in-graph op it mirrors):

1. bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD
   (``unicode_transcode(errors="replace")``);
2. NUL, U+FFFD and every control/format/private-use character (Cc, Cf, Co, Cs) but
   ``\\t \\n \\r`` are deleted; ``\\t \\n \\r`` and separators (Z*) become a space;
3. CJK ideographs (``CJK_RANGES``) get a space on each side;
4. ``strip_accents``: NFD, then non-spacing marks (Mn) are dropped;
5. ``lowercase``: "Σ" → "σ" (HF lowercases it so even word-finally), then full Unicode lowercasing;
6. words are split on spaces and punctuation (printable non-alphanumeric ASCII and P*), each
   punctuation character a word of its own;
7. a word over ``MAX_CHARS_PER_WORD`` characters becomes ``[UNK]``; the others are split by
   WordPiece (greedy longest match first, ``##`` continuation; a word with an unmatched
   remainder becomes ``[UNK]`` whole);
8. ``[CLS] pieces[:max_tokens - 2] [SEP]``, padded with ``[PAD]`` to ``max_tokens``; the mask is
   1 up to ``[SEP]``.

``tests/test_litert.py`` checks it against the in-graph tokenizer in every mode, on an edge-case
corpus and on every code point of the first three Unicode planes.
"""

from __future__ import annotations

import unicodedata

import numpy as np

MAX_CHARS_PER_WORD = 100  # BERT's cap, in characters (align_tf.tokenizer uses the same)
# CJK ideograph blocks BERT isolates (HF ``_is_chinese_char``), inclusive ranges.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_KEPT_CONTROLS = "\t\n\r"
# RE2's \p{C} (what the in-graph regex deletes) has no Cn: unassigned code points are kept.
_DELETED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})

# The in-graph ops use three Unicode versions, none Python 3.11's (14.0): RE2's categories are
# Unicode 15, ICU's NFD Unicode 16, TF's lowercasing Unicode 13. What they do differently from
# ``unicodedata`` on planes 0-2 (the test compares every code point) is spelled out here, from
# the Unicode Character Database, so the reference is exact whatever Python's version.
_U15_PUNCTUATION = ((0x11B00, 0x11B09), (0x11F43, 0x11F4F))  # Po: Devanagari Ext-A, Kawi
_U15_FORMAT = ((0x13439, 0x1343F),)  # Cf: Egyptian hieroglyph format controls (deleted)
_U15_NONSPACING = ((0x0ECE, 0x0ECE), (0x10EFD, 0x10EFF), (0x11241, 0x11241), (0x11F00, 0x11F01),
                   (0x11F36, 0x11F3A), (0x11F40, 0x11F40), (0x11F42, 0x11F42),
                   (0x13440, 0x13440), (0x13447, 0x13455), (0x1E08F, 0x1E08F),
                   (0x1E4EC, 0x1E4EF))  # Mn, stripped with the accents
_U14_UPPERCASE_KEPT = ((0x2C2F, 0x2C2F), (0xA7C0, 0xA7C0), (0xA7D0, 0xA7D0), (0xA7D6, 0xA7D6),
                       (0xA7D8, 0xA7D8), (0x10570, 0x1057A), (0x1057C, 0x1058A),
                       (0x1058C, 0x10592), (0x10594, 0x10595))  # Lu TF does not lowercase
# Unicode 16 canonical decompositions (Todhri, Tulu-Tigalari, Gurung Khema, Kirat Rai).
_U16_DECOMPOSITIONS = {
    0x105C9: (0x105D2, 0x0307), 0x105E4: (0x105DA, 0x0307), 0x11383: (0x11382, 0x113C9),
    0x11385: (0x11384, 0x113BB), 0x1138E: (0x1138B, 0x113C2), 0x11391: (0x11390, 0x113C9),
    0x113C5: (0x113C2, 0x113C2), 0x113C7: (0x113C2, 0x113B8), 0x113C8: (0x113C2, 0x113C9),
    0x16121: (0x1611E, 0x1611E), 0x16122: (0x1611E, 0x16129), 0x16123: (0x1611E, 0x1611F),
    0x16124: (0x16129, 0x1611F), 0x16125: (0x1611E, 0x16120),
    0x16126: (0x1611E, 0x1611E, 0x1611F), 0x16127: (0x1611E, 0x16129, 0x1611F),
    0x16128: (0x1611E, 0x1611E, 0x16120), 0x16D68: (0x16D67, 0x16D67),
    0x16D69: (0x16D63, 0x16D67), 0x16D6A: (0x16D63, 0x16D67, 0x16D67)}
_DECOMPOSE = {cp: "".join(map(chr, parts)) for cp, parts in _U16_DECOMPOSITIONS.items()}


def _points(ranges) -> frozenset:
    return frozenset(chr(cp) for lo, hi in ranges for cp in range(lo, hi + 1))


_PUNCTUATION_EXTRA, _FORMAT_EXTRA = _points(_U15_PUNCTUATION), _points(_U15_FORMAT)
_NONSPACING_EXTRA, _KEEP_CASE = _points(_U15_NONSPACING), _points(_U14_UPPERCASE_KEPT)


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # All printable non-alphanumeric ASCII ("$", "^", "`" included), and Unicode's P*.
    return (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
            or unicodedata.category(ch)[0] == "P" or ch in _PUNCTUATION_EXTRA)


def _clean(text: str) -> str:
    """Steps 2 and 3: deletions, spaces, CJK isolation."""
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in _KEPT_CONTROLS or category[0] == "Z":
            out.append(" ")
        elif ch in "\x00\ufffd" or category in _DELETED_CATEGORIES or ch in _FORMAT_EXTRA:
            continue
        elif _is_cjk(ord(ch)):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


def pretokenize(text, lowercase: bool = True, strip_accents: bool | None = None) -> list:
    """One text (``str`` or UTF-8 ``bytes``) → its BERT words (steps 1-6), as
    ``align_tf.tokenizer.bert_pretokenize`` gives them."""
    strip_accents = lowercase if strip_accents is None else strip_accents
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    text = _clean(text)
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text.translate(_DECOMPOSE))
                       if unicodedata.category(c) != "Mn" and c not in _NONSPACING_EXTRA)
    if lowercase:
        # Character by character: "Σ" is "σ" even word-finally (HF), and _KEEP_CASE stays.
        text = "".join(c if c in _KEEP_CASE else c.lower() for c in text.replace("Σ", "σ"))
    words, word = [], []
    for ch in text:
        if ch == " " or _is_punctuation(ch):
            if word:
                words.append("".join(word))
                word = []
            if ch != " ":
                words.append(ch)
        else:
            word.append(ch)
    if word:
        words.append("".join(word))
    return words


class Tokenizer:
    """WordPiece tokenizer with a vocabulary (a list of tokens, or a ``vocab.txt`` path) and the
    normalisation settings of the model (``metadata.json``'s ``tokenizer`` section)."""

    def __init__(self, vocabulary, max_tokens: int, lowercase: bool = True,
                 strip_accents: bool | None = None):
        if isinstance(vocabulary, str):
            with open(vocabulary, encoding="utf-8") as f:
                vocabulary = [line.rstrip("\n") for line in f]
        self.ids = {}
        for i, token in enumerate(vocabulary):
            self.ids.setdefault(token, i)
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in self.ids]
        if missing:
            raise ValueError(f"align_tf.litert: error: the vocabulary lacks {missing}")
        if max_tokens < 2:
            raise ValueError(f"align_tf.litert: error: max_tokens must be >= 2; got {max_tokens}")
        self.max_tokens, self.lowercase = int(max_tokens), bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self.pad, self.unk = self.ids["[PAD]"], self.ids["[UNK]"]
        self.cls, self.sep = self.ids["[CLS]"], self.ids["[SEP]"]
        self._cache = {}

    def wordpiece(self, word: str) -> list:
        """One word → its WordPiece ids (step 7)."""
        if len(word) > MAX_CHARS_PER_WORD:
            return [self.unk]
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    pieces.append(self.ids[piece])
                    start = end
                    break
            else:
                pieces = [self.unk]
                break
        if len(self._cache) < 100_000:
            self._cache[word] = pieces
        return pieces

    def token_ids(self, text) -> list:
        """One text → ``[CLS] pieces… [SEP]``, truncated to ``max_tokens`` (no padding)."""
        pieces = []
        for word in pretokenize(text, self.lowercase, self.strip_accents):
            pieces.extend(self.wordpiece(word))
            if len(pieces) >= self.max_tokens - 2:
                break
        return [self.cls] + pieces[:self.max_tokens - 2] + [self.sep]

    def __call__(self, texts) -> dict:
        """Texts → ``{"token_ids", "padding_mask"}``, int32 ``[B, max_tokens]`` (step 8)."""
        rows = [self.token_ids(t) for t in texts]
        ids = np.full((len(rows), self.max_tokens), self.pad, np.int32)
        mask = np.zeros((len(rows), self.max_tokens), np.int32)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return {"token_ids": ids, "padding_mask": mask}


def tokenize(texts, vocabulary, max_tokens: int, lowercase: bool = True,
             strip_accents: bool | None = None) -> dict:
    """Texts (``str`` or UTF-8 ``bytes`` each) → ``{"token_ids", "padding_mask"}``, int32
    ``[B, max_tokens]``: exactly what the SavedModel's ``TextPreprocessor`` gives (its
    ``segment_ids`` are all zero). ``vocabulary``: a token list or a ``vocab.txt`` path; the other
    arguments as ``TextPreprocessor``'s (``metadata.json`` stores the model's)."""
    return Tokenizer(vocabulary, max_tokens, lowercase, strip_accents)(texts)
