"""The paper's corpus filters (ALIGN §3) as plain Python, shared by the Beam builder and tests.

ALIGN keeps "noisy" alt-text but applies a few cheap frequency-based filters to 1.8B raw pairs:

* image: shorter side > 200 px and aspect ratio < 3;
* text: drop alt-texts shared by more than 10 images (boilerplate such as "1920x1080");
  drop texts containing rare tokens (outside the 100M most frequent unigrams and bigrams of the raw
  corpus); drop texts with fewer than 3 or more than 20 unigrams.

Every threshold lives in ``FilterConfig`` so tests can use tiny corpora; 0 disables a filter.
Definitions the paper leaves open, fixed here:

* A *unigram* is a maximal run of Unicode letters/digits/underscores, lower-cased, with inner
  apostrophes kept ("don't", "1920x1080", "img_01"); punctuation is not a word.
* Texts are compared for sharing after lower-casing and collapsing whitespace (``text_key``), and
  "shared by N images" counts distinct image references (path/URL), not rows.
* The rare-token vocabulary is the ``ngram_vocab_size`` most frequent unigrams and bigrams of all
  parsed rows (counted once per row, the raw corpus), ranked together. Its boundary is a count
  threshold: every n-gram at least as frequent as the ``ngram_vocab_size``-th one is in, so ties
  never depend on processing order. ``min_ngram_count`` can raise the threshold. A text is rare if
  any of its unigrams (and, with ``check_bigrams``, any bigram) is below the threshold.
* Each dropped row counts under the first reason it fails, in ``DROP_REASONS`` order: text checks
  come first, so images of rows already dropped are never fetched.
"""

from __future__ import annotations

import dataclasses
import re

# First failing reason wins, in this order.
DROP_REASONS = (
    "bad_row",            # unparseable line, missing/empty image or text field
    "corrupt_member",     # sample inputs: a tar member or record that cannot be read
    "no_image",           # sample inputs: a caption without an image
    "no_caption",         # sample inputs: an image without a (non-empty) caption
    "too_few_words",      # fewer than min_words unigrams
    "too_many_words",     # more than max_words unigrams
    "shared_text",        # alt-text shared by more than max_images_per_text images
    "rare_token",         # a unigram (or bigram) outside the corpus's frequent n-grams
    "missing_image",      # the image file/URL could not be read
    "undecodable_image",  # not an image, truncated or corrupt
    "too_small",          # shorter side <= shorter_side_above
    "aspect_ratio",       # longer/shorter side >= aspect_ratio_below
)

_WORD = re.compile(r"\w+(?:['’]\w+)*")
_SPACE = re.compile(r"\s+")


@dataclasses.dataclass
class FilterConfig:
    """Thresholds of the ALIGN filters; defaults are the paper's. 0 disables a filter."""

    shorter_side_above: int = 200        # keep images whose shorter side is > this (pixels)
    aspect_ratio_below: float = 3.0      # keep images whose longer/shorter side is < this
    min_words: int = 3                   # keep texts with >= this many unigrams
    max_words: int = 20                  # ... and <= this many
    max_images_per_text: int = 10        # drop texts shared by more distinct images than this
    ngram_vocab_size: int = 100_000_000  # frequent unigrams+bigrams kept (paper: 100M)
    min_ngram_count: int = 1             # n-grams rarer than this are rare regardless
    check_bigrams: bool = False          # a rare bigram (of common words) also drops the text

    @property
    def rare_filter_enabled(self) -> bool:
        return self.ngram_vocab_size > 0 or self.min_ngram_count > 1


def words(text: str) -> list:
    """The unigrams of ``text`` (lower-cased; see module docstring)."""
    return _WORD.findall(text.lower())


def bigrams(ws: list) -> list:
    """Adjacent word pairs, as ``"w1 w2"``."""
    return [f"{a} {b}" for a, b in zip(ws, ws[1:])]


def ngrams(text: str) -> list:
    """Unigrams then bigrams of ``text`` (with repeats: counted per occurrence)."""
    ws = words(text)
    return ws + bigrams(ws)


def text_key(text: str) -> str:
    """What "the same alt-text" means: lower-cased, whitespace collapsed and stripped."""
    return _SPACE.sub(" ", text.lower()).strip()


def word_count_reason(text: str, config: FilterConfig) -> str | None:
    """``"too_few_words"``, ``"too_many_words"`` or ``None`` (keep)."""
    n = len(words(text))
    if config.min_words and n < config.min_words:
        return "too_few_words"
    if config.max_words and n > config.max_words:
        return "too_many_words"
    return None


def checked_ngrams(text: str, config: FilterConfig) -> set:
    """The distinct n-grams of ``text`` the rare-token filter looks up."""
    ws = words(text)
    return set(ws + bigrams(ws)) if config.check_bigrams else set(ws)


def image_reason(width: int, height: int, config: FilterConfig) -> str | None:
    """``"too_small"``, ``"aspect_ratio"`` or ``None`` (keep) for an image of that size."""
    shorter, longer = min(width, height), max(width, height)
    if shorter <= 0 or (config.shorter_side_above and shorter <= config.shorter_side_above):
        return "too_small"
    if config.aspect_ratio_below and longer / shorter >= config.aspect_ratio_below:
        return "aspect_ratio"
    return None


def count_threshold(histogram, vocab_size: int, min_count: int = 1) -> int:
    """The count an n-gram needs to be among the ``vocab_size`` most frequent.

    Args:
      histogram: ``(count, number of distinct n-grams with that count)`` pairs; small (one entry
        per distinct count), which is what lets a Beam job find the boundary without sorting
        billions of n-grams.
      vocab_size: how many n-grams to keep; 0: no limit.
      min_count: a floor on the result.

    Returns:
      The count of the ``vocab_size``-th most frequent n-gram (all n-grams tied with it are kept),
      at least ``min_count``; ``min_count`` if there are no more than ``vocab_size`` n-grams.
    """
    threshold = 1
    if vocab_size:
        seen = 0
        for count, n in sorted(histogram, reverse=True):
            seen += n
            if seen >= vocab_size:
                threshold = count
                break
    return max(threshold, min_count, 1)
