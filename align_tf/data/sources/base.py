"""``Source``: what every data source offers, and what a new one overrides.

A source is built from its spelling's argument (``get("tfrecord:/x/*.tfrecord")`` →
``TFRecordSource("/x/*.tfrecord")``) and yields, as the caller asks:

* ``PAIRS``: the trainer's endless stream of captioned images (``training_stream``);
* ``CLASSIFICATION``: labelled images (``classification`` → ``ClassificationData``), for
  zero-shot, kNN, the linear probe and fine-tuning a classifier;
* ``RETRIEVAL``: captioned images (``retrieval`` → ``RetrievalData``).

``options`` is the config's flat ``eval`` section (``split``, ``train_split``, ``data_dir``,
``max_examples``, ``max_train_examples``, ``captions_per_image``, ``synthetic_*``), read as
attributes; ``data`` is the config's ``data`` section.
"""

from __future__ import annotations

import tensorflow as tf

PAIRS, CLASSIFICATION, RETRIEVAL = "pairs", "classification", "retrieval"


class Source:
    """A data source named by one spelling (``name`` or ``name:ARGUMENT``).

    Class attributes a source sets: ``takes_argument`` (spelt ``name:ARG``), ``argument_name``
    (how the docs and errors write ARG), ``needs_vocabulary`` (training needs ``data.vocab_path``:
    only the synthetic corpus learns one from its captions).
    """

    name = ""  # set by register_source
    takes_argument = False
    argument_name = "ARG"
    needs_vocabulary = True

    def __init__(self, argument: str = ""):
        self.argument = argument

    @property
    def spec(self) -> str:
        """The full spelling, ``tfrecord:/x/*.tfrecord``: recorded beside a report's results."""
        return f"{self.name}:{self.argument}" if self.takes_argument else self.name

    @property
    def results_key(self) -> str:
        """A report's results key: the name without its argument (``tfrecord``)."""
        return self.name

    @property
    def prompt_name(self) -> str:
        """The name ``prompts.get_templates`` / ``get_classnames`` know (``synthetic``,
        ``cifar10``); other sources get the generic prompts."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    # -------------------------------------------------------------------------- what it yields

    def kinds(self, options=None) -> set:
        """What it yields: a subset of ``{PAIRS, CLASSIFICATION, RETRIEVAL}``. May open the data's
        metadata (a TFDS builder), never its examples."""
        return set()

    def classification(self, options, train: bool = False, download: bool = False):
        """Labelled images: the fit split if ``train`` else the test split."""
        raise ValueError(f"{self.spec} has no labelled images")

    def retrieval(self, options, download: bool = False):
        """Captioned images, grouped per image."""
        raise ValueError(f"{self.spec} has no captioned images")

    def labelled_examples(self, options) -> tf.data.Dataset | None:
        """The fit split as an unbatched stream of undecoded ``{"image/encoded", "label"}``, for
        training a classifier on a set too large for memory; None (the default): training reads
        ``classification(options, train=True).arrays``."""
        return None

    def groups(self) -> dict | None:
        """Zero-shot label groups reported apart (``{"heldout": [labels], ...}``), or None."""
        return None

    # -------------------------------------------------------------------------- training

    def validate(self, data) -> None:
        """One-line ``ValueError`` naming the ``data.*`` field that cannot work with this source
        for training. Touches no examples (globs and metadata only)."""
        if PAIRS not in self.kinds(None):
            raise ValueError(f"data.name={self.spec!r} yields no training pairs")
        if self.needs_vocabulary:
            check_vocabulary(data, self.spec)

    def training_stream(self, config, layout, first_batch: int,
                        input_context: tf.distribute.InputContext | None = None,
                        stats=None) -> tf.data.Dataset:
        """One input pipeline's endless stream from global batch ``first_batch`` on: unbatched
        ``{"image/encoded" or "image", "caption", "position"}`` for ``pipeline.batch_pairs``
        (``sampling``'s layout: global positions, per-pipeline slices)."""
        raise ValueError(f"data.name={self.spec!r} has no training stream")


def option(options, name: str, default=None):
    """``options.name``, or ``default`` where ``options`` (None, an ``eval`` section, an entry of
    it) has no such field."""
    return default if options is None else getattr(options, name, default)


def check_vocabulary(data, spec: str) -> None:
    """``data.vocab_path`` is set and exists (one-line ``ValueError``)."""
    if not data.vocab_path:
        raise ValueError(f"data.vocab_path is required for data.name={spec!r} (build one "
                         "with python -m align_tf.data.vocab)")
    if not tf.io.gfile.exists(data.vocab_path):
        raise ValueError(f"data.vocab_path {data.vocab_path} does not exist")
