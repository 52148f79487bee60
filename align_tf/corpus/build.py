r"""Builds training shards from raw image/alt-text pairs with the ALIGN filters, as a Beam job.

    python -m align_tf.corpus.build --input=pairs.jsonl --output_dir=corpus/
    python -m align_tf.corpus.build --input='raw/*.tsv' --columns=image,text --output_dir=corpus/ \
        --check_bigrams --direct_num_workers=0 --direct_running_mode=multi_processing
    python -m align_tf.corpus.build --input='gs://b/raw/*.parquet' --output_dir=gs://b/corpus \
        --num_shards=4096 --runner=DataflowRunner --project=P --region=R \
        --temp_location=gs://b/tmp --setup_file=./setup.py

    python -m align_tf.corpus.build --input='shards/{00000..00999}.tar' --format=webdataset \
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

The filters are the paper's (``align_tf.corpus.filters``). Corpus-wide statistics are Beam
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

import dataclasses
import difflib
import json
import logging
import posixpath
import sys
import time
from typing import NoReturn

import apache_beam as beam
from absl import flags
from apache_beam.options.pipeline_options import PipelineOptions

from align_tf import cli
from align_tf.corpus.config import HELP, BuildConfig
from align_tf.corpus.inputs import SAMPLE_FORMATS, first_file, input_format
from align_tf.corpus.transforms import build_pipeline
from align_tf.data import webdataset

log = logging.getLogger(__name__)


def check_inputs(input_pattern: str, config: BuildConfig) -> None:
    """Raises ``ValueError``/``OSError`` for settings that cannot work, before any Beam work."""
    if config.num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    if input_format(input_pattern, config.format) in SAMPLE_FORMATS:
        webdataset.expand(input_pattern)  # brace ranges and globs; raises if nothing matches
    else:
        first_file(input_pattern)


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
    import tensorflow as tf  # imported here, not at the top: --help and flag errors answer at once
    config = config or BuildConfig()
    check_inputs(input_pattern, config)  # before makedirs: a bad input leaves no empty output_dir
    tf.io.gfile.makedirs(output_dir)
    args = list(pipeline_args or [])
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    if not any(a.startswith("--direct_running_mode") for a in args):
        args.append("--direct_running_mode=in_memory")
    start = time.time()
    log.info("building %s → %s with %s", input_pattern, output_dir, config)
    with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
        build_pipeline(pipeline, input_pattern, output_dir, config)
    with tf.io.gfile.GFile(posixpath.join(output_dir, "stats.json")) as f:
        stats = json.load(f)
    log.info("done in %.1fs: %d rows, %d kept, dropped %s", time.time() - start, stats["rows"],
             stats["kept"], {k: v for k, v in stats["dropped"].items() if v})
    if stats["damaged_files"]:
        log.warning("%d input files ended early: %s", len(stats["damaged_files"]),
                    stats["damaged_files"][:10])
    return stats


# ------------------------------------------------------------------------------------ CLI

PROG = __name__  # the name in messages when main runs in-process (cli.program: under cli.run)
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(BuildConfig))
_FLAG_NAMES = ("input", "output_dir") + _CONFIG_FIELDS
_BOUNDS = {"num_shards": (1, None), "jpeg_quality": (1, 100)}  # other numbers: >= 0


def _error(message) -> NoReturn:
    cli.error(cli.program(PROG), message)


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


def _check_beam_args(rest: list) -> None:
    """What absl left (``known_only``: ``[program, *beam_args]``, in order, for Beam's
    ``PipelineOptions``) holds no positional argument and no misspelling of our flags."""
    for i, arg in enumerate(rest[1:], 1):
        if arg == "--":
            break
        if not arg.startswith("-"):
            before = rest[i - 1]
            if i == 1 or not before.startswith("-") or "=" in before:  # not a Beam flag's value
                raise flags.Error(f"unexpected argument {arg!r}")
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        guess = name and _misspelt(name)
        if guess:
            raise flags.Error(f"unknown flag --{name}; did you mean {guess}? (flags the builder "
                              "does not define go to Beam)")


# Flags we do not define (--runner=..., --project P) are left, in order, for Beam.
_PARSE = dict(required=("input", "output_dir"), known_only=True, check=_check_beam_args)


def _config(flag_values: flags.FlagValues) -> BuildConfig:
    return BuildConfig(**{name: flag_values[name].value for name in _CONFIG_FIELDS})


def parse_args(argv: list | None = None):
    """Command-line args (no program name; default ``sys.argv[1:]``) → ``(input, output_dir,
    config, beam_args)``, on a private ``FlagValues`` (absl's global ``FLAGS`` untouched).

    Mistakes exit with the CLI's one-line error (``SystemExit``).
    """
    flag_values = flags.FlagValues()
    _define_flags(flag_values)
    rest = cli.parse(PROG, [PROG] + list(sys.argv[1:] if argv is None else argv), flag_values,
                     **_PARSE)
    return flag_values.input, flag_values.output_dir, _config(flag_values), rest[1:]


def main(argv: list) -> None:
    """absl main: ``run`` parsed our flags into ``FLAGS``; ``argv[1:]`` are Beam's options."""
    import tensorflow as tf
    f = flags.FLAGS
    config = _config(f)
    try:
        check_inputs(f.input, config)
    except (OSError, ValueError) as e:  # no input files, unknown --format, ...
        _error(e)
    try:
        tf.io.gfile.makedirs(f.output_dir)
    except Exception as e:  # tf.errors.OpError (permission, unknown scheme) is not an OSError
        _error(f"cannot create --output_dir {f.output_dir}: {e}")
    stats = build(f.input, f.output_dir, config, argv[1:])
    print(json.dumps({k: stats[k] for k in ("rows", "kept", "dropped")}, indent=2))


def run() -> None:
    """``python -m align_tf.corpus.build`` (``align-build``): our flags into absl's ``FLAGS``,
    the rest to Beam."""
    _define_flags(flags.FLAGS)
    cli.run(__name__, main, **_PARSE)


if __name__ == "__main__":
    run()  # what Beam pickles (rows, DoFns, the config) lives in importable modules, not here
