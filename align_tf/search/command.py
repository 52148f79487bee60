"""Queries an index built by ``python -m align_tf.index``: by text, by image, or image ± text.

Prints the ``--k`` best matches, one JSON object per line, best first:
``{"id": ..., "score": ..., "source": ..., "caption": ...}`` (``caption`` null when unknown;
``score`` the cosine similarity).

The query is q = normalise(ê + w·Σê₊ − w·Σê₋) (ALIGN §7, Figure 5): ê the unit embedding of
``--text`` or ``--image``, ê₊/ê₋ those of each ``--plus``/``--minus`` text, w ``--weight``.
Texts are embedded as given (no prompt template), with the SavedModel the index was built with.

Examples:
  python -m align_tf.search --index=my_index --text="a dog on a beach"
  python -m align_tf.search --index=my_index --image=cat.jpg --plus=snow --minus=grass --k=5
"""

from __future__ import annotations

import json
import sys

from absl import flags

from align_tf import cli

PROG = "align_tf.search"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The command's flags on ``flag_values``."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("index", None, "Index directory written by align_tf.index (required).",
                        **fv)
    flags.DEFINE_string("text", None, "Query text (give --text or --image).", **fv)
    flags.DEFINE_string("image", None, "Query image file (JPEG, PNG, GIF, BMP, WebP).", **fv)
    flags.DEFINE_multi_string("plus", [], "A text whose embedding is added (repeatable).", **fv)
    flags.DEFINE_multi_string("minus", [], "A text whose embedding is subtracted (repeatable).",
                              **fv)
    flags.DEFINE_float("weight", 1.0, "w: the weight of each --plus/--minus embedding.", **fv)
    flags.DEFINE_integer("k", 10, "How many results.", lower_bound=1, **fv)
    flags.DEFINE_string("model", None, "The index's SavedModel, if it moved since indexing "
                        "(must be the same model); default the path the index records.", **fv)


def _check(flag_values: flags.FlagValues) -> None:
    if (flag_values.text is None) == (flag_values.image is None):
        raise flags.Error("give exactly one of --text and --image")


def main(argv, flag_values: flags.FlagValues | None = None) -> None:
    """absl main; ``flag_values`` parsed by ``cli.parse_args`` (in-process), default absl's
    ``FLAGS``. Prints the results, one JSON object per line."""
    del argv
    f = flags.FLAGS if flag_values is None else flag_values
    prog = cli.program(PROG)
    if (f.text is None) == (f.image is None):
        cli.error(prog, "give exactly one of --text and --image")
    from align_tf.search.index import Index
    from align_tf.search.model import SearchError
    try:
        results = Index.load(f.index, model=f.model).query(
            text=f.text, image=f.image, plus=f.plus, minus=f.minus, weight=f.weight, k=f.k)
    except SearchError as e:
        cli.error(prog, e)
    for result in results:
        print(json.dumps(result, ensure_ascii=False))
    sys.stdout.flush()


def parse_args(argv: list | None = None) -> flags.FlagValues:
    """Command-line args (no program name) → a private ``FlagValues`` for ``main``."""
    values = cli.parse_args(PROG, argv, define_flags, required=("index",))
    try:
        _check(values)
    except flags.Error as e:
        cli.error(PROG, e)
    return values


def run() -> None:
    """``python -m align_tf.search`` (console script ``align-search``)."""
    define_flags()
    cli.run(__name__, main, required=("index",))


if __name__ == "__main__":
    run()
