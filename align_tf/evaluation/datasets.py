"""Deprecated: evaluation data now comes from the data sources (``align_tf.data.sources``:
``sources.get(spec).classification(...)`` / ``.retrieval(...)``). These names remain only until
``evaluation/runner.py`` and ``evaluate.py`` read the sources directly; then this module goes."""

from __future__ import annotations

from align_tf.data import sources
from align_tf.data.sources import CLASSIFICATION, RETRIEVAL, ClassificationData, RetrievalData  # noqa: F401
from align_tf.data.sources.synthetic import (SYNTHETIC, synthetic_classification,  # noqa: F401
                                             synthetic_groups, synthetic_retrieval)
from align_tf.data.sources.tfds import default_split  # noqa: F401
from align_tf.data.sources.tfrecord import tfrecord_retrieval  # noqa: F401

UnknownDatasetError = sources.UnknownSourceError


def dataset_kinds(name: str, data_dir: str | None = None) -> set:
    """``sources.get(name).kinds``, without ``PAIRS`` (evaluation's view)."""
    return sources.get(name, "dataset").kinds(_Options(data_dir=data_dir)) - {sources.PAIRS}


def record_source(name: str) -> tuple | None:
    """``(glob, keys)`` of a TFRecord source's spelling, else ``None``."""
    name_, _ = sources.registry.split_spec(name)
    source = sources.get(name) if name_ else None
    return (source.argument, source.keys) if hasattr(source, "keys") else None


def record_retrieval(name: str, max_images=None, captions_per_image=5):
    return sources.get(name).retrieval(
        _Options(max_examples=max_images, captions_per_image=captions_per_image or 0))


def tfds_classification(name, split=None, train=False, data_dir=None, download=True,
                        max_examples=None, **kwargs):
    from align_tf.data.sources import tfds
    return tfds.tfds_classification(sources.get(name, "dataset"), split, train, data_dir,
                                    download, max_examples, **kwargs)


def tfds_retrieval(name, split=None, data_dir=None, download=True, max_images=None,
                   captions_per_image=5, **kwargs):
    from align_tf.data.sources import tfds
    return tfds.tfds_retrieval(sources.get(name, "dataset"), split, data_dir, download,
                               max_images, captions_per_image, **kwargs)


class _Options:
    """An ``eval`` section with only the fields given (the rest None)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __getattr__(self, name):
        return None
