r"""Builds training shards from raw image/alt-text pairs with the ALIGN filters, as a Beam job.

    python -m align_tf.data.build --input=pairs.jsonl --output_dir=corpus/
    python -m align_tf.data.build --input='raw/*.tsv' --columns=image,text --output_dir=corpus/ \
        --check_bigrams --direct_num_workers=0 --direct_running_mode=multi_processing
    python -m align_tf.data.build --input='gs://b/raw/*.parquet' --output_dir=gs://b/corpus \
        --num_shards=4096 --runner=DataflowRunner --project=P --region=R \
        --temp_location=gs://b/tmp --setup_file=./setup.py

    python -m align_tf.data.build --input='shards/{00000..00999}.tar' --format=webdataset \
        --output_dir=corpus/

Input: CSV, TSV, JSONL or Parquet tables (a glob; ``.gz`` text files too), one pair per row:

* ``image`` (``--image_column``): a local path, any ``tf.io.gfile`` URI (``gs://...``) or an
  ``http(s)://`` URL (fetched with ``--fetch_timeout``). Relative paths are relative to
  ``--image_root`` (default: the input table's directory).
* ``text`` (``--text_column``): the alt-text.
* ``id`` (``--id_column``, optional): a stable row id; default: a hash of the image reference
  as written in the table and the text (so moving the table and images keeps ids).

CSV/TSV need a header row unless ``--columns`` names the columns; they are read line by line, so a
field must not contain a newline. TSV fields are not quoted (Conceptual Captions style).

Or samples that carry their image bytes, as img2dataset downloads them (``--input`` takes brace
ranges ``{00000..00999}``, globs, and commas):

* ``--format=webdataset`` (the default for ``.tar``): webdataset tar shards,
  ``{key}.jpg|png|webp|...`` + ``{key}.txt`` (+ ``{key}.json`` with the ``url``); see
  ``align_tf.data.webdataset``.
* ``--format=img2dataset_tfrecord``: img2dataset's TFRecord shards (``key``, ``jpg``, ``txt``,
  ``url``); see ``align_tf.data.img2dataset``.

The sample key becomes the id. "The same image" for the shared-text filter is the json/record
``url`` when there is one, else the sample itself. A sample with an image but no (or an empty)
caption is dropped as ``no_caption``, a caption without an image as ``no_image``, a member or
record that cannot be read as ``corrupt_member``; a shard that ends early (truncated tar or
TFRecord, a corrupt tar header) is listed under ``damaged_files`` in ``stats.json`` and what it
held before the damage is used. Image bytes go through the same checks as a table's images:
JPEG and PNG are kept byte for byte, WebP and every other format re-encoded as JPEG.

Output in ``--output_dir``:

* ``pairs-00000-of-000NN.tfrecord``: ``tf.train.Example``\ s with ``image/encoded`` (the original
  JPEG/PNG bytes; other formats, CMYK JPEGs and — with ``--max_shorter_side`` — large images are
  re-encoded as JPEG), ``caption``, ``id``, ``image/width``, ``image/height``.
* ``stats.json``: rows read, kept, and dropped per reason (``filters.DROP_REASONS``; each dropped
  row counted once, under the first reason it fails), so ``rows == kept + sum(dropped)``; plus the
  n-gram count threshold, the most-shared texts, per-shard counts, the damaged input files
  (``damaged_files``, sample inputs only) and the config.

The filters are the paper's (``align_tf.data.filters``). Corpus-wide statistics are Beam
combines over the whole input, never per-worker guesses: distinct images per alt-text, and n-gram
counts whose top-``ngram_vocab_size`` boundary comes from a histogram of counts. Text filters run
before any image is fetched. Unreadable or undecodable images are counted, never fatal.

Shards are deterministic: an example's shard is a hash of its id, and a shard's records are sorted
by that hash, so re-running on the same input writes byte-identical shards with any runner or
parallelism. Each shard is assembled in one worker's memory: pick ``--num_shards`` so a shard
is a few hundred MB. Shards are written to a temporary name and renamed, so retried bundles are
harmless.

Runs on Beam's DirectRunner by default (one machine). The builder's own flags are absl flags
(``--help`` lists them; switches as ``--check_bigrams`` / ``--nocheck_bigrams``); every other flag
is a Beam pipeline option and goes to Beam unchanged (``--runner``, ``--direct_num_workers=0
--direct_running_mode=multi_processing`` for all local cores, Dataflow/Flink/Spark options).
Workers need this package and TensorFlow (``--setup_file``).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import io
import json
import logging
import os
import posixpath
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import NamedTuple, NoReturn, Tuple

import apache_beam as beam
from absl import flags
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from align_tf import cli as entry
from align_tf.data import cli, filters, img2dataset, webdataset

log = logging.getLogger(__name__)
METRICS_NAMESPACE = "align_build"
TABLE_FORMATS = ("jsonl", "csv", "tsv", "parquet")
SAMPLE_FORMATS = ("webdataset", "img2dataset_tfrecord")  # image bytes inside the input
FORMATS = TABLE_FORMATS + SAMPLE_FORMATS
_SAMPLE_READERS = {"webdataset": webdataset.read_samples,
                   "img2dataset_tfrecord": img2dataset.read_samples}
_TF_READY_FORMATS = {"JPEG": ("L", "RGB"), "PNG": ("1", "L", "LA", "P", "RGB", "RGBA")}
MAX_FETCH_BYTES = 64 << 20  # larger downloads are treated as unreadable
_PROGRESS_EVERY = 1000


@dataclasses.dataclass
class BuildConfig(filters.FilterConfig):
    """Builder settings: the paper's filter thresholds (``FilterConfig``) plus input/output."""

    image_column: str = "image"
    text_column: str = "text"
    id_column: str = "id"             # used when present and non-empty
    columns: str = ""                 # comma-separated names for header-less CSV/TSV
    format: str = ""                  # FORMATS; "": from the file extension
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


class Row(NamedTuple):
    """One parsed input row; ``key`` is ``filters.text_key(text)``. ``image`` is the image's
    reference (what "distinct images" counts); ``data`` its bytes when the input carries them."""

    id: str
    image: str
    text: str
    key: str
    data: bytes | None = None


Kept = Tuple[Row, bytes, int, int]  # a row that passed every filter: (row, encoded, width, height)


# ------------------------------------------------------------------------------------ input


def input_format(pattern: str, fmt: str = "") -> str:
    """The table format: ``fmt`` if given, else from the extension (``.gz`` ignored)."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"unknown --format {fmt!r}; choose from {FORMATS}")
        return fmt
    name = pattern[:-3] if pattern.endswith(".gz") else pattern
    ext = posixpath.splitext(name)[1].lstrip(".").lower()
    ext = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet", "tar": "webdataset"}.get(ext, ext)
    if ext not in FORMATS:
        raise ValueError(f"cannot tell the format of {pattern!r} from its extension; pass --format")
    return ext


def _gfile():
    import tensorflow as tf  # imported lazily: workers that never touch files skip the cost
    return tf.io.gfile


def _first_file(pattern: str) -> str:
    files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not files:
        raise FileNotFoundError(f"no input files match {pattern!r}")
    return files[0]


def _header(pattern: str, delimiter: str) -> list:
    with FileSystems.open(_first_file(pattern)) as f:  # decompresses .gz by extension
        line = f.readline().decode("utf-8-sig")
    return _split_line(line.rstrip("\r\n"), delimiter)


def _split_line(line: str, delimiter: str) -> list:
    if delimiter == "\t":  # TSV: no quoting, so quotes inside alt-texts stay literal
        return line.split("\t")
    return next(csv.reader([line], delimiter=delimiter), [])


class ReadTable(beam.PTransform):
    """Reads a table glob into dicts; an unparseable line becomes ``None`` (counted as bad)."""

    def __init__(self, pattern: str, config: BuildConfig):
        super().__init__()
        self.pattern, self.config = pattern, config

    def expand(self, pbegin):
        fmt = input_format(self.pattern, self.config.format)
        if fmt == "parquet":
            import pyarrow.parquet as pq
            with FileSystems.open(_first_file(self.pattern)) as f:
                names = set(pq.read_schema(f).names)
            wanted = [c for c in (self.config.image_column, self.config.text_column,
                                  self.config.id_column) if c and c in names]
            return pbegin | beam.io.ReadFromParquet(self.pattern, columns=wanted)
        if fmt == "jsonl":
            return (pbegin | beam.io.ReadFromText(self.pattern)
                    | "ParseJson" >> beam.Map(_parse_json))
        delimiter = "\t" if fmt == "tsv" else ","
        if self.config.columns:
            names, skip = [c.strip() for c in self.config.columns.split(",")], 0
        else:
            names, skip = _header(self.pattern, delimiter), 1
        return (pbegin | beam.io.ReadFromText(self.pattern, skip_header_lines=skip)
                | "ParseLine" >> beam.Map(_parse_line, names, delimiter))


def _parse_json(line: str):
    if not line.strip():
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _parse_line(line: str, names: list, delimiter: str):
    fields = _split_line(line.rstrip("\r\n"), delimiter)
    return dict(zip(names, fields)) if len(fields) == len(names) else None


def _is_remote(ref: str) -> bool:
    return "://" in ref


def resolve_image(ref: str, image_root: str) -> str:
    """An image reference as given, or joined to ``image_root`` if it is a relative path."""
    if _is_remote(ref) or os.path.isabs(ref) or not image_root:
        return ref
    return posixpath.join(image_root, ref) if _is_remote(image_root) else os.path.join(image_root, ref)


def row_id(image: str, text: str) -> str:
    """The default id: stable across runs and runners."""
    return hashlib.sha1(f"{image}\t{text}".encode("utf-8")).hexdigest()[:20]


class ParseRow(beam.DoFn):
    """dict → ``Row``; malformed rows go to the ``dropped`` output as ``"bad_row"``."""

    def __init__(self, config: BuildConfig, image_root: str):
        self.config, self.image_root = config, image_root

    def process(self, raw):
        c = self.config
        image = raw.get(c.image_column) if raw else None
        text = raw.get(c.text_column) if raw else None
        if not isinstance(image, str) or not isinstance(text, str) or not image.strip() \
                or not text.strip():
            yield beam.pvalue.TaggedOutput("dropped", "bad_row")
            return
        image, text = image.strip(), " ".join(text.split())
        rid = raw.get(c.id_column) if c.id_column else None
        rid = str(rid) if rid not in (None, "") else row_id(image, text)
        yield Row(rid, resolve_image(image, self.image_root), text, filters.text_key(text))


class ReadSamples(beam.PTransform):
    """Reads sample shards (``SAMPLE_FORMATS``) into ``Row``\ s carrying their image bytes.

    Outputs ``rows``, ``dropped`` (reasons) and ``damaged`` (paths of shards that ended early).
    Each shard is read whole by one worker, so parallelism is the number of shards.
    """

    def __init__(self, files: list, fmt: str):
        super().__init__()
        self.files, self.fmt = files, fmt

    def expand(self, pbegin):
        return (pbegin | beam.Create(self.files) | "SpreadShards" >> beam.Reshuffle()
                | "Samples" >> beam.FlatMap(sample_rows, self.fmt)
                .with_output_types(Row, dropped=str, damaged=str)
                .with_outputs("dropped", "damaged", main="rows"))


def sample_rows(path: str, fmt: str):
    """The rows of one sample shard, and tagged drops/damage (``ReadSamples``)."""
    for sample in _SAMPLE_READERS[fmt](path):
        if sample is None:
            yield beam.pvalue.TaggedOutput("damaged", path)
            continue
        text = " ".join(sample.caption.split()) if sample.caption else ""
        if sample.error:
            reason = sample.error
        elif sample.image is None:
            reason = "no_image" if text else "bad_row"
        elif not text:
            reason = "no_caption"
        else:
            reason = None
        if reason:
            yield beam.pvalue.TaggedOutput("dropped", reason)
            continue
        yield Row(sample.key, sample.url or f"{path}#{sample.key}", text, filters.text_key(text),
                  sample.image)


# ------------------------------------------------------------------------------------ images


def read_image_bytes(ref: str, timeout: float = 20.0, retries: int = 2) -> bytes:
    """Bytes of a local/``tf.io.gfile`` path or an http(s) URL; raises ``OSError`` if unreadable."""
    if ref.startswith(("http://", "https://")):
        for attempt in range(retries + 1):
            try:
                request = urllib.request.Request(ref, headers={"User-Agent": "align_tf-build/0.1"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    data = response.read(MAX_FETCH_BYTES + 1)
                if len(data) > MAX_FETCH_BYTES:
                    raise OSError(f"{ref}: larger than {MAX_FETCH_BYTES} bytes")
                return data
            except urllib.error.HTTPError as e:
                if e.code < 500 or attempt == retries:
                    raise OSError(f"{ref}: HTTP {e.code}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == retries:
                    raise OSError(f"{ref}: {e}") from None
            time.sleep(0.5 * 2 ** attempt)  # back off before retrying a flaky server
    try:
        with _gfile().GFile(ref, "rb") as f:
            return f.read()
    except Exception as e:  # gfile raises NotFoundError, PermissionDeniedError, ...
        raise OSError(f"{ref}: {e}") from None


def check_image(data: bytes, config: BuildConfig):
    """``(reason, None)`` for a dropped image, else ``(None, (encoded, width, height))``.

    The size filters read only the header; the full decode (which catches truncated files) runs
    only on images that pass them. Bytes TensorFlow decodes as they are (baseline/progressive
    JPEG in L/RGB, PNG) are kept byte for byte; anything else is re-encoded as JPEG.
    """
    import warnings

    from PIL import Image
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning means a huge image: treat it like an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            fmt, mode = image.format, image.mode
    except Exception:
        return "undecodable_image", None
    reason = filters.image_reason(width, height, config)
    if reason:
        return reason, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()  # full decode: raises on truncated/corrupt data
    except Exception:
        return "undecodable_image", None
    limit = config.max_shorter_side
    too_big = limit and min(width, height) > limit
    if not too_big and mode in _TF_READY_FORMATS.get(fmt, ()):
        return None, (data, width, height)
    image = image.convert("RGB")
    if too_big:
        scale = limit / min(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
        image = image.resize((width, height), Image.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=config.jpeg_quality)
    return None, (out.getvalue(), width, height)


class LoadImage(beam.DoFn):
    """``Row`` → ``(Row, encoded, width, height)``; drops go to ``dropped`` with their reason."""

    def __init__(self, config: BuildConfig):
        self.config = config
        self.checked = Metrics.counter(METRICS_NAMESPACE, "images_checked")

    def setup(self):
        self._seen, self._start = 0, time.time()

    def process(self, row: Row):
        self._seen += 1
        self.checked.inc()
        if self._seen % _PROGRESS_EVERY == 0:  # per worker: Beam has no global progress hook
            log.info("checked %d images (%.0f/s in this worker)", self._seen,
                     self._seen / max(time.time() - self._start, 1e-9))
        data = row.data
        if data is None:
            try:
                data = read_image_bytes(row.image, self.config.fetch_timeout,
                                        self.config.fetch_retries)
            except OSError:
                yield beam.pvalue.TaggedOutput("dropped", "missing_image")
                return
        reason, image = check_image(data, self.config)
        if reason:
            yield beam.pvalue.TaggedOutput("dropped", reason)
        else:
            yield (row,) + image


# ------------------------------------------------------------------------------------ output


def _digest(example_id: str) -> bytes:
    return hashlib.sha1(example_id.encode("utf-8")).digest()


def shard_of(example_id: str, num_shards: int) -> int:
    """Deterministic shard of an example: a hash of its id."""
    return int.from_bytes(_digest(example_id)[:8], "big") % num_shards


def _keyed_example(kept, num_shards: int):
    from align_tf.data.tfrecord import make_example
    row, encoded, width, height = kept
    record = make_example(encoded, row.text, row.id, width, height)  # deterministic bytes
    return shard_of(row.id, num_shards), (_digest(row.id), record)


class WriteShard(beam.DoFn):
    """Writes one shard's records (sorted: byte-identical re-runs) atomically; yields its count."""

    def __init__(self, output_prefix: str, num_shards: int):
        self.output_prefix, self.num_shards = output_prefix, num_shards

    def process(self, element):
        import tensorflow as tf

        from align_tf.data.tfrecord import shard_name
        index, grouped = element
        records = sorted(grouped["examples"])
        path = shard_name(self.output_prefix, index, self.num_shards)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with tf.io.TFRecordWriter(tmp) as writer:
            for _, record in records:
                writer.write(record)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        yield index, len(records)


def _write_stats(_, *, path, outcomes, shards, threshold, shared, damaged, config):
    import tensorflow as tf
    counts = dict(outcomes)
    dropped = {r: counts.get(r, 0) for r in filters.DROP_REASONS}
    shard_counts = [n for _, n in sorted(shards)]
    stats = {
        "rows": sum(counts.values()),
        "kept": counts.get("kept", 0),
        "dropped": dropped,
        "ngram_count_threshold": threshold,
        "most_shared_texts": [[k, n] for k, n in shared],
        "num_shards": len(shard_counts),
        "shard_examples": shard_counts,
        "damaged_files": sorted(damaged),
        "config": dataclasses.asdict(config),
    }
    assert stats["kept"] == sum(shard_counts), (stats["kept"], shard_counts)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(stats, f, indent=2, ensure_ascii=False)
    return stats


def _decide(element):
    """Joins a text's rows with its corpus-wide statistics; yields rows or tagged drops."""
    _, grouped = element
    shared = bool(grouped["shared"])
    rare = bool(grouped["rare"])
    for row in grouped["rows"]:
        if shared:
            yield beam.pvalue.TaggedOutput("dropped", "shared_text")
        elif rare:
            yield beam.pvalue.TaggedOutput("dropped", "rare_token")
        else:
            yield row


def _word_filter(row: Row, config: BuildConfig):
    reason = filters.word_count_reason(row.text, config)
    if reason:
        yield beam.pvalue.TaggedOutput("dropped", reason)
    else:
        yield row


def _with_drops(transform, main_type, main="rows"):
    """``transform`` with a main output of ``main_type`` and a ``dropped`` output of reasons.

    The tagged output's type is declared, not inferred: Beam >= 2.78 infers the main output of a
    DoFn that also yields ``TaggedOutput`` as ``Union[main, TaggedOutput]``, which then fails the
    type check of the next transform.
    """
    return transform.with_output_types(main_type, dropped=str).with_outputs("dropped", main=main)


def _count(reason: str) -> str:
    Metrics.counter(METRICS_NAMESPACE, reason).inc()
    return reason


def build_pipeline(pipeline: beam.Pipeline, input_pattern: str, output_dir: str,
                   config: BuildConfig) -> None:
    """Adds the builder's transforms to ``pipeline`` (run it to build the corpus)."""
    if config.num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    fmt = input_format(input_pattern, config.format)
    if fmt in SAMPLE_FORMATS:
        parsed = pipeline | "ReadSamples" >> ReadSamples(webdataset.expand(input_pattern), fmt)
        damaged = parsed.damaged
    else:
        image_root = config.image_root or posixpath.dirname(input_pattern) or "."
        parsed = (pipeline | "Read" >> ReadTable(input_pattern, config)
                  | "Parse" >> _with_drops(beam.ParDo(ParseRow(config, image_root)), Row))
        damaged = pipeline | "NoDamage" >> beam.Create([])
    rows = parsed.rows

    # Corpus-wide statistics over every parsed row (the paper's "raw dataset").
    if config.max_images_per_text:
        images_per_text = (rows | "TextImage" >> beam.Map(lambda r: (r.key, r.image))
                           | "DistinctTextImage" >> beam.Distinct()
                           | "TextOf" >> beam.Map(lambda kv: kv[0])
                           | "ImagesPerText" >> beam.combiners.Count.PerElement())
        shared = images_per_text | "Shared" >> beam.Filter(
            lambda kv, limit: kv[1] > limit, config.max_images_per_text)
    else:
        shared = pipeline | "NoShared" >> beam.Create([])
    top_shared = (shared | "TopShared" >> beam.combiners.Top.Of(10, key=lambda kv: (kv[1], kv[0]))
                  if config.max_images_per_text else pipeline | "NoTop" >> beam.Create([[]]))

    words_ok = rows | "WordCount" >> _with_drops(beam.FlatMap(_word_filter, config), Row)

    if config.rare_filter_enabled:
        ngram_counts = (rows | "Ngrams" >> beam.FlatMap(lambda r: filters.ngrams(r.text))
                        | "CountNgrams" >> beam.combiners.Count.PerElement())
        histogram = (ngram_counts | "CountOf" >> beam.Map(lambda kv: kv[1])
                     | "Histogram" >> beam.combiners.Count.PerElement()
                     | "HistogramList" >> beam.combiners.ToList())
        threshold = histogram | "Threshold" >> beam.Map(
            filters.count_threshold, config.ngram_vocab_size, config.min_ngram_count)
        rare_ngrams = (ngram_counts
                       | "RareNgrams" >> beam.Filter(lambda kv, t: kv[1] < t,
                                                     beam.pvalue.AsSingleton(threshold))
                       | "RareMark" >> beam.Map(lambda kv: (kv[0], True)))
        # Which texts contain a rare n-gram: a join on the n-gram, then back to the text key.
        text_ngrams = (words_ok.rows | "Keys" >> beam.Map(lambda r: r.key)
                       | "DistinctKeys" >> beam.Distinct()
                       | "TextNgrams" >> beam.FlatMap(
                           lambda k: [(g, k) for g in filters.checked_ngrams(k, config)]))
        rare_texts = ({"rare": rare_ngrams, "texts": text_ngrams} | "JoinNgrams" >> beam.CoGroupByKey()
                      | "RareTexts" >> beam.FlatMap(
                          lambda kv: [(k, True) for k in kv[1]["texts"]] if kv[1]["rare"] else [])
                      | "DistinctRare" >> beam.Distinct())
    else:
        threshold = pipeline | "NoThreshold" >> beam.Create([0])
        rare_texts = pipeline | "NoRare" >> beam.Create([])

    joined = ({"rows": words_ok.rows | "ByKey" >> beam.Map(lambda r: (r.key, r)),
               "shared": shared, "rare": rare_texts}
              | "JoinText" >> beam.CoGroupByKey()
              | "TextFilters" >> _with_drops(beam.FlatMap(_decide), Row))

    images = joined.rows | "LoadImage" >> _with_drops(beam.ParDo(LoadImage(config)), Kept,
                                                      main="kept")

    # Deterministic shards; every shard index is present, so empty shards are written too.
    n = config.num_shards
    output_prefix = posixpath.join(output_dir, config.shard_prefix)
    examples = images.kept | "Serialize" >> beam.Map(_keyed_example, n)
    indices = pipeline | "ShardIndices" >> beam.Create([(i, None) for i in range(n)])
    shards = ({"examples": examples, "index": indices} | "GroupShards" >> beam.CoGroupByKey()
              | "WriteShards" >> beam.ParDo(WriteShard(output_prefix, n)))

    outcomes = ((parsed.dropped, words_ok.dropped, joined.dropped, images.dropped,
                 images.kept | "Kept" >> beam.Map(lambda _: "kept"))
                | "AllOutcomes" >> beam.Flatten()
                | "Metrics" >> beam.Map(_count)
                | "CountOutcomes" >> beam.combiners.Count.PerElement()
                | "OutcomeList" >> beam.combiners.ToList())
    AsS, AsL = beam.pvalue.AsSingleton, beam.pvalue.AsList  # noqa: N806
    _ = (pipeline | "StatsTrigger" >> beam.Create([None])
         | "WriteStats" >> beam.Map(
             _write_stats, path=posixpath.join(output_dir, "stats.json"), outcomes=AsS(outcomes),
             shards=AsL(shards), threshold=AsS(threshold), shared=AsS(top_shared),
             damaged=AsL(damaged), config=config))


def check_inputs(input_pattern: str, config: BuildConfig) -> None:
    """Raises ``ValueError``/``OSError`` for settings that cannot work, before any Beam work."""
    if config.num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    if input_format(input_pattern, config.format) in SAMPLE_FORMATS:
        webdataset.expand(input_pattern)  # brace ranges and globs; raises if nothing matches
    else:
        _first_file(input_pattern)


def build(input_pattern: str, output_dir: str, config: BuildConfig | None = None,
          pipeline_args: list | None = None) -> dict:
    """Runs the builder and returns the contents of ``stats.json``.

    Args:
      input_pattern: table file or glob, or sample shards (see module docstring).
      output_dir: where shards and ``stats.json`` go (created; local or ``tf.io.gfile`` URI).
      config: filter thresholds and I/O settings; the paper's by default.
      pipeline_args: Beam pipeline options, e.g. ``["--runner=DataflowRunner", ...]``;
        default: the DirectRunner, in memory.
    """
    config = config or BuildConfig()
    check_inputs(input_pattern, config)  # before makedirs: a bad input leaves no empty output_dir
    _gfile().makedirs(output_dir)
    args = list(pipeline_args or [])
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    if not any(a.startswith("--direct_running_mode") for a in args):
        args.append("--direct_running_mode=in_memory")
    start = time.time()
    log.info("building %s → %s with %s", input_pattern, output_dir, config)
    with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
        build_pipeline(pipeline, input_pattern, output_dir, config)
    with _gfile().GFile(posixpath.join(output_dir, "stats.json")) as f:
        stats = json.load(f)
    log.info("done in %.1fs: %d rows, %d kept, dropped %s", time.time() - start, stats["rows"],
             stats["kept"], {k: v for k, v in stats["dropped"].items() if v})
    if stats["damaged_files"]:
        log.warning("%d input files ended early: %s", len(stats["damaged_files"]),
                    stats["damaged_files"][:10])
    return stats


# ------------------------------------------------------------------------------------ CLI

PROG = "align_tf.data.build"
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(BuildConfig))
_FLAG_NAMES = ("input", "output_dir") + _CONFIG_FIELDS
_BOOL_FLAGS = frozenset(n for n in _CONFIG_FIELDS if isinstance(getattr(BuildConfig(), n), bool))
_BOUNDS = {"num_shards": (1, None), "jpeg_quality": (1, 100)}  # other numbers: >= 0


def _error(message) -> NoReturn:
    cli.error(PROG, message)


def _define_flags(flag_values: flags.FlagValues) -> None:
    """``--input``, ``--output_dir`` and one flag per ``BuildConfig`` field."""
    flags.DEFINE_string("input", None, "Input table file or glob, or sample shards (brace "
                        "ranges and globs, e.g. 'shards/{00000..00999}.tar') (required).",
                        flag_values=flag_values)
    flags.DEFINE_string("output_dir", None, "Where shards and stats.json go (required).",
                        flag_values=flag_values)
    defaults = BuildConfig()
    for name in _CONFIG_FIELDS:
        default, help_ = getattr(defaults, name), HELP.get(name, "")
        if isinstance(default, bool):
            flags.DEFINE_bool(name, default, help_, flag_values=flag_values)
        elif isinstance(default, str):
            flags.DEFINE_string(name, default, help_, flag_values=flag_values)
        else:
            lower, upper = _BOUNDS.get(name, (0, None))
            define = flags.DEFINE_integer if isinstance(default, int) else flags.DEFINE_float
            define(name, default, help_, lower_bound=lower, upper_bound=upper,
                   flag_values=flag_values)


def _misspelt(name: str) -> str:
    """Our flags that ``name`` abbreviates or nearly spells ("" if none, or if Beam knows it).

    argparse accepted abbreviations (``--out``) and absl does not: without this check they, and
    typos such as ``--num_shard``, would silently go to Beam as unknown pipeline options.
    """
    guesses = ([n for n in _FLAG_NAMES if n.startswith(name)]
               or difflib.get_close_matches(name, _FLAG_NAMES, n=1, cutoff=0.8))
    if not guesses or name in PipelineOptions([]).get_all_options():
        return ""
    return ", ".join(f"--{g}" for g in guesses)


def _parse(argv: list, flag_values: flags.FlagValues) -> list:
    """Parses our flags from ``argv`` (program name first); returns ``[program, *beam_args]``.

    absl parses with ``known_only``: the flags we do not define (``--runner=...``, ``--project P``)
    come back in order, untouched, for Beam's ``PipelineOptions``.
    """
    rest = cli.parse(PROG, argv, flag_values, bool_flags=_BOOL_FLAGS, known_only=True)
    for i, arg in enumerate(rest[1:], 1):
        if arg == "--":
            break
        if not arg.startswith("-"):
            before = rest[i - 1]
            if i == 1 or not before.startswith("-") or "=" in before:  # not a Beam flag's value
                _error(f"unexpected argument {arg!r}")
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        guess = name and _misspelt(name)
        if guess:
            _error(f"unknown flag --{name}; did you mean {guess}? (flags the builder does not "
                   "define go to Beam)")
    for name in ("input", "output_dir"):
        if not flag_values[name].value:
            _error(f"--{name} is required")
    return rest


def _config(flag_values: flags.FlagValues) -> BuildConfig:
    return BuildConfig(**{name: flag_values[name].value for name in _CONFIG_FIELDS})


def parse_args(argv: list | None = None):
    """Command-line args (no program name; default ``sys.argv[1:]``) → ``(input, output_dir,
    config, beam_args)``, on a private ``FlagValues`` (absl's global ``FLAGS`` untouched).

    Mistakes exit with the CLI's one-line error (``SystemExit``).
    """
    flag_values = flags.FlagValues()
    _define_flags(flag_values)
    rest = _parse([PROG] + list(sys.argv[1:] if argv is None else argv), flag_values)
    return flag_values.input, flag_values.output_dir, _config(flag_values), rest[1:]


def main(argv: list) -> None:
    """absl main: ``run`` parsed our flags into ``FLAGS``; ``argv[1:]`` are Beam's options."""
    f = flags.FLAGS
    config = _config(f)
    try:
        check_inputs(f.input, config)
    except (OSError, ValueError) as e:  # no input files, unknown --format, ...
        _error(e)
    try:
        _gfile().makedirs(f.output_dir)
    except Exception as e:  # tf.errors.OpError (permission, unknown scheme) is not an OSError
        _error(f"cannot create --output_dir {f.output_dir}: {e}")
    stats = build(f.input, f.output_dir, config, argv[1:])
    print(json.dumps({k: stats[k] for k in ("rows", "kept", "dropped")}, indent=2))


def run() -> None:
    """``python -m align_tf.data.build``: our flags into absl's ``FLAGS``, the rest to Beam."""
    _define_flags(flags.FLAGS)
    entry.run(__name__, main, flags_parser=lambda argv: _parse(argv, flags.FLAGS))


if __name__ == "__main__":
    # Run the importable module, not this __main__ copy: Beam pickles Row and the DoFns by module
    # path, and worker processes (multi_processing, Dataflow) cannot import __main__.Row.
    from align_tf.data import build as _build
    _build.run()
