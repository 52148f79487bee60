r"""The corpus builder's inputs, read into ``Row``\ s: tables (CSV, TSV, JSONL, Parquet) of image
references and alt-texts, or sample shards that carry their image bytes (webdataset tars,
img2dataset TFRecords). ``align_tf.corpus.build``'s docstring describes the formats.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import posixpath
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from align_tf.corpus import filters
from align_tf.corpus.config import BuildConfig
from align_tf.data import img2dataset, webdataset

TABLE_FORMATS = ("jsonl", "csv", "tsv", "parquet")
SAMPLE_FORMATS = ("webdataset", "img2dataset_tfrecord")  # image bytes inside the input
FORMATS = TABLE_FORMATS + SAMPLE_FORMATS
_SAMPLE_READERS = {"webdataset": webdataset.read_samples,
                   "img2dataset_tfrecord": img2dataset.read_samples}


class Row(NamedTuple):
    """One parsed input row; ``key`` is ``filters.text_key(text)``. ``image`` is the image's
    reference (what "distinct images" counts); ``data`` its bytes when the input carries them."""

    id: str
    image: str
    text: str
    key: str
    data: bytes | None = None


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


def first_file(pattern: str) -> str:
    files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not files:
        raise FileNotFoundError(f"no input files match {pattern!r}")
    return files[0]


def _header(pattern: str, delimiter: str) -> list:
    with FileSystems.open(first_file(pattern)) as f:  # decompresses .gz by extension
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
            with FileSystems.open(first_file(self.pattern)) as f:
                names = set(pq.read_schema(f).names)
            wanted = [c for c in (self.config.image_column, self.config.text_column,
                                  self.config.id_column) if c and c in names]
            return pbegin | beam.io.ReadFromParquet(self.pattern, columns=wanted)
        # Lines are read as bytes and decoded one by one: a line that is not UTF-8 (a caption in
        # a legacy encoding) is a counted bad_row, not a UnicodeDecodeError ending the build.
        if fmt == "jsonl":
            return (pbegin | beam.io.ReadFromText(self.pattern, coder=beam.coders.BytesCoder())
                    | "ParseJson" >> beam.Map(_parse_json))
        delimiter = "\t" if fmt == "tsv" else ","
        if self.config.columns:
            names, skip = [c.strip() for c in self.config.columns.split(",")], 0
        else:
            names, skip = _header(self.pattern, delimiter), 1
        return (pbegin | beam.io.ReadFromText(self.pattern, skip_header_lines=skip,
                                              coder=beam.coders.BytesCoder())
                | "ParseLine" >> beam.Map(_parse_line, names, delimiter))


def _decode(line: bytes | str) -> str | None:
    """A line's text, or None if it is not UTF-8."""
    try:
        return line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError:
        return None


def _parse_json(line: bytes | str):
    line = _decode(line)
    if line is None or not line.strip():
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _parse_line(line: bytes | str, names: list, delimiter: str):
    line = _decode(line)
    if line is None:
        return None
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
    """dict → ``Row``; malformed rows (a line not UTF-8, an empty image or caption field) go to
    the ``dropped`` output as ``"bad_row"``."""

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
