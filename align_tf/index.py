"""Indexes a collection for cross-modal search: embeds it with Apache Beam, builds an ANN index.

    python -m align_tf.index --model=RUN_OR_SAVEDMODEL --input=images:DIR --output=INDEX_DIR

``--model`` is an exported SavedModel or a run directory with ``savedmodel/`` (export it first:
``python -m align_tf.export --model_dir=RUN``). ``--input`` is one of:

  images:DIR                  every file under DIR, recursively (JPEG, PNG, GIF, BMP, WebP); an
                              image's id is its POSIX path relative to DIR, its source the path
  webdataset:PATTERN          webdataset tars (img2dataset's default output; brace ranges and
                              globs: 'shards/{00000..00099}.tar'); id the sample key, caption its
                              txt, source its url (else FILE#KEY)
  img2dataset_tfrecord:GLOB   img2dataset's TFRecords, likewise
  tfrecord:GLOB               our TFRecord shards (align_tf.data.build); id FILE#RECORD
  captions:FILE               a caption index (text embeddings, for image → text search): one
                              caption per line (UTF-8), id its line number; not mixable with
                              images in one index

Every file (sample) is embedded, or counted in ``INDEX_DIR/stats.json`` as a duplicate (same
bytes as an earlier one) or skipped by reason: ``not_an_image``, ``corrupt`` (truncated,
damaged) or ``unreadable``.

Resumable: the ids are split into fixed parts of ``--shard_size`` up front (a sample format's
parts are its shards), and each part is
written atomically when embedded. Running the same command again (after a crash, or when files
were added) embeds only the parts not yet written; ``--append`` adds another input to the index.
The nearest-neighbour index is then rebuilt from every part, its parameters chosen from N
(exact below ~50k images, IVF above, sharded beyond a memory budget): nothing to tune. Query it
with ``python -m align_tf.search --index=INDEX_DIR --text=...``.

Flags this command does not define go to Beam (``--runner=DataflowRunner --project=P ...``,
``--direct_num_workers=4 --direct_running_mode=multi_processing``); the default is the
DirectRunner in this process. ``--model``, ``--input`` and ``--output`` may be local or any
``tf.io.gfile`` filesystem (``gs://B/index``: what Dataflow's workers can reach); the ANN index
is built where the command runs and written there.
"""

from __future__ import annotations

import difflib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from align_tf import cli  # noqa: E402

PROG = "align_tf.index"
_NAMES = ("model", "input", "output", "append", "shard_size", "dtype", "batch_size",
          "exact_below", "budget_gb", "progress")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The command's flags on ``flag_values``."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("model", None, "SavedModel, or run directory with savedmodel/ "
                        "(required).", **fv)
    flags.DEFINE_string("input", None, "What to index: images:DIR, webdataset:PATTERN, "
                        "img2dataset_tfrecord:GLOB, tfrecord:GLOB or captions:FILE "
                        "(required).", **fv)
    flags.DEFINE_string("output", None, "Index directory to write or resume, local or "
                        "gs://... (required).", **fv)
    flags.DEFINE_bool("append", False, "Add --input to an index of another input.", **fv)
    flags.DEFINE_integer("shard_size", 1000, "Images per part (the unit of resume).",
                         lower_bound=1, **fv)
    flags.DEFINE_enum("dtype", "float32", ["float32", "float16"], "Stored embeddings' type.",
                      **fv)
    flags.DEFINE_integer("batch_size", 64, "Images per call of the SavedModel.", lower_bound=1,
                         **fv)
    flags.DEFINE_integer("exact_below", 50_000, "Advanced: below this many images the index "
                         "is exact (flat), above it IVF.", lower_bound=0, **fv)
    flags.DEFINE_float("budget_gb", 8.0, "Advanced: float32 vectors per index shard, in GB.",
                       lower_bound=1e-9, **fv)
    flags.DEFINE_bool("progress", True, "Show a progress line (images/s, ETA) on stderr.", **fv)


def _check_beam_args(rest: list) -> None:
    """What absl left is for Beam: no positional argument, no misspelling of our flags."""
    for arg in rest[1:]:
        if not arg.startswith("-"):
            raise flags.Error(f"unexpected argument {arg!r}")
        name = arg.lstrip("-").split("=", 1)[0]
        guess = [n for n in _NAMES if n.startswith(name)] or difflib.get_close_matches(
            name, _NAMES, n=1, cutoff=0.8)
        if guess:
            raise flags.Error(f"unknown flag --{name}; did you mean --{guess[0]}? (flags this "
                              "command does not define go to Beam)")


_PARSE = dict(required=("model", "input", "output"), known_only=True, check=_check_beam_args)


def parse_args(argv: list | None = None) -> tuple:
    """Command-line args (no program name) → ``(flag values, beam args)``, in-process."""
    values = flags.FlagValues()
    define_flags(values)
    rest = cli.parse(PROG, [PROG] + list(sys.argv[1:] if argv is None else argv), values,
                     **_PARSE)
    return values, rest[1:]


def main(argv, flag_values: flags.FlagValues | None = None) -> None:
    """absl main: ``argv[1:]`` are Beam's options; ``flag_values`` parsed by ``parse_args``
    (in-process), default absl's ``FLAGS``. Prints ``stats.json``."""
    from align_tf.search.pipeline import index
    from align_tf.search.model import SearchError
    f = flags.FLAGS if flag_values is None else flag_values
    try:
        stats = index(f.model, f.input, f.output, append=f.append, shard_size=f.shard_size,
                      dtype=f.dtype, batch_size=f.batch_size, pipeline_args=argv[1:],
                      progress=f.progress, exact_below=f.exact_below,
                      budget_bytes=int(f.budget_gb * (1 << 30)))
    except (SearchError, OSError) as e:
        cli.error(cli.program(PROG), e)
    print(json.dumps(stats))


def run() -> None:
    """``python -m align_tf.index`` (console script ``align-index``)."""
    define_flags()
    cli.run(__name__, main, **_PARSE)


if __name__ == "__main__":
    run()
