"""Where training, evaluation and fine-tuning data come from: one spelling per source, everywhere
(``config.data.name``, ``eval.datasets`` / ``--dataset``, ``finetune.dataset``)::

    from align_tf.data import sources
    source = sources.get("tfrecord:/data/coco/*.tfrecord")
    source.kinds(config.eval)                          # {PAIRS, RETRIEVAL}
    source.retrieval(config.eval)                      # RetrievalData
    source.training_stream(config, layout, first_batch)

Built in, one module each (a new source is one module registering itself, ``register_source``;
``--plugins=your.module`` imports yours):

  ``synthetic``                  the built-in corpus (``sources/synthetic.py``).
  ``tfrecord:GLOB``              our shards (``align_tf.data.build``) (``sources/tfrecord.py``).
  ``img2dataset_tfrecord:GLOB``  img2dataset's TFRecord shards, read as they are.
  ``tfds:NAME[/split]``          a TFDS set: captioned (``coco_captions``) or labelled
                                 (``cifar10``) (``sources/tfds.py``).
  ``coco_karpathy:DIR``          MS-COCO / Flickr30K as downloaded, Karpathy's splits
  ``flickr30k_karpathy:DIR``     (``sources/karpathy.py``).
  ``cxc:DIR``                    Crisscrossed Captions' rated pairs over COCO (``sources/cxc.py``).
  ``multi30k:DIR``               Multi30K's test set in en/de/fr/cs (``sources/multi30k.py``).

Old spellings (``data.name="tfrecord"`` + ``data.train_pattern``, ``data.tfds_split``, a bare
TFDS name in ``eval.datasets``) still work, with a one-line deprecation notice
(``align_tf.migrate``). Webdataset tars are converted first (``align_tf.data.build
--format=webdataset``).
"""

from __future__ import annotations

import tensorflow as tf

from align_tf import migrate
# Registration order is the order errors list the choices in.
from align_tf.data.sources import (synthetic, tfrecord, img2dataset_tfrecord,  # noqa: F401, I001
                                   tfds)
from align_tf.data.sources import karpathy, cxc  # noqa: F401, I001  the benchmarks' own layouts
from align_tf.data.sources import multi30k  # noqa: F401, I001  [mling]: Multi30K per language
from align_tf.data.sources import imagenet, synthetic_shift  # noqa: F401, I001  [shift]
from align_tf.data.sources.base import CLASSIFICATION, PAIRS, RETRIEVAL, Source
from align_tf.data.sources.collections import ClassificationData, RetrievalData
from align_tf.data.sources.registry import (UnknownSourceError, get, names, register_source,
                                            registered, spellings)

__all__ = ["CLASSIFICATION", "PAIRS", "RETRIEVAL", "ClassificationData", "RetrievalData",
           "Source", "UnknownSourceError", "check", "get", "names", "parse", "register_source",
           "registered", "spellings", "training_source", "training_stream"]

SYNTHETIC = synthetic.SYNTHETIC


def training_source(data) -> Source:
    """The source of ``data`` (the config's data section), old spellings included; one-line
    ``ValueError`` naming ``data.name`` and the choices."""
    return get(migrate.data_source_spec(data), field="data.name", bare_tfds=False)


def parse(name: str) -> tuple:
    """``(source name, argument)`` of a ``data.name``: ``("tfds", "coco_captions")`` for
    ``tfds:coco_captions``. The pre-[house] bare ``tfrecord`` (its glob in ``data.train_pattern``)
    parses as ``("tfrecord", "")``. Raises ``ValueError`` naming the choices."""
    name = str(name).strip()
    if name in registered() and registered()[name].takes_argument:
        return name, ""
    source = get(name, field="data.name", bare_tfds=False)
    return source.name, source.argument


def check(data) -> None:
    """One-line ``ValueError`` naming the ``data.*`` field that cannot work for training from
    ``data.name`` (``data``: the config's data section): the source's own ``validate``."""
    training_source(data).validate(data)


def training_stream(config, layout, first_batch: int,
                    input_context: tf.distribute.InputContext | None = None,
                    stats=None) -> tf.data.Dataset:
    """The input pipeline's endless stream of ``config.data.name`` (not ``synthetic``, whose
    pairs live in memory: ``sampling.sample_arrays``) from global batch ``first_batch`` on:
    unbatched ``{"image/encoded", "caption", "position", ...}`` for ``pipeline.batch_pairs``."""
    return training_source(config.data).training_stream(config, layout, first_batch,
                                                        input_context, stats)
