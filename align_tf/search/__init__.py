"""Cross-modal search over a collection: ``align_tf.index`` embeds it, this package queries it.

    from align_tf.search import Index
    index = Index.load("my_index")
    index.query(text="a dog on a beach", k=10)              # text → image
    index.query(image="cat.jpg", plus=["snow"], minus=["grass"], weight=1.0)   # image ± text

Each result is ``{"id", "score", "source", "caption"}``, best first. The command line is
``python -m align_tf.search --index=DIR --text=T``. Importing this package loads neither
TensorFlow nor faiss: they load when an index is opened or a query is embedded.
"""

from __future__ import annotations

_LAZY = {"Index": "align_tf.search.index", "SearchError": "align_tf.search.model"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'align_tf.search' has no attribute {name!r}")
