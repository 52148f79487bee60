"""The corpus builder's settings: the paper's filter thresholds plus input/output.

``BuildConfig`` is what ``align_tf.corpus.build.build`` takes and what ``stats.json`` records;
``HELP`` documents each field (the command line's flag help, one flag per field).
"""

from __future__ import annotations

import dataclasses

from align_tf.corpus import filters

METRICS_NAMESPACE = "align_build"  # Beam counters of the builder (one per drop reason, "kept")


@dataclasses.dataclass
class BuildConfig(filters.FilterConfig):
    """Builder settings: the paper's filter thresholds (``FilterConfig``) plus input/output."""

    image_column: str = "image"
    text_column: str = "text"
    id_column: str = "id"             # used when present and non-empty
    columns: str = ""                 # comma-separated names for header-less CSV/TSV
    format: str = ""                  # inputs.FORMATS; "": from the file extension
    image_root: str = ""              # base of relative image paths; "": the input's directory
    num_shards: int = 16
    shard_prefix: str = "pairs"
    max_shorter_side: int = 0         # >0: downscale larger images to this shorter side (JPEG)
    jpeg_quality: int = 95            # for re-encoded images
    fetch_timeout: float = 20.0       # seconds per http(s) attempt
    fetch_retries: int = 2            # extra attempts on timeouts/5xx; 4xx is final


HELP = {
    "shorter_side_above": "Keep images whose shorter side is > this many pixels (paper: 200); 0: off.",
    "aspect_ratio_below": "Keep images whose longer/shorter side is < this (paper: 3); 0: off.",
    "min_words": "Keep texts with >= this many unigrams (paper: 3); 0: off.",
    "max_words": "Keep texts with <= this many unigrams (paper: 20); 0: off.",
    "max_images_per_text": "Drop alt-texts shared by more distinct images than this (paper: 10); "
                           "0: off.",
    "ngram_vocab_size": "Texts with a unigram outside the this-many most frequent unigrams+bigrams "
                        "are dropped (paper: 100M); 0: no top-N limit.",
    "min_ngram_count": "N-grams seen fewer times than this are rare regardless of "
                       "--ngram_vocab_size.",
    "check_bigrams": "Also drop texts whose bigrams are rare (default: unigrams only).",
    "image_column": "Column with the image path/URI/URL.",
    "text_column": "Column with the alt-text.",
    "id_column": "Optional column with a stable row id (default id: hash of image and text).",
    "columns": "Comma-separated column names of header-less CSV/TSV files.",
    "format": "Input format: jsonl, csv, tsv, parquet, webdataset (tar shards) or "
              "img2dataset_tfrecord (default: from the extension; .tar is webdataset).",
    "image_root": "Directory that relative image paths are relative to (default: the input's).",
    "num_shards": "Number of output TFRecord shards.",
    "shard_prefix": "Output shard file name prefix.",
    "max_shorter_side": "Re-encode images whose shorter side exceeds this to that size (0: keep).",
    "jpeg_quality": "JPEG quality of re-encoded images.",
    "fetch_timeout": "Seconds per http(s) download attempt.",
    "fetch_retries": "Extra download attempts after a timeout or server error.",
}
