"""The evaluator registry: ``config.eval.evaluators.<name>.type`` → an evaluator class.

As big_vision's ``evaluators/common.py:from_config``, the config names its evaluators::

    c.eval.evaluators = {
        "synthetic_retrieval": {"type": "retrieval", "dataset": "synthetic", "recall_ks": "1,5,10"},
        "cifar10_knn": {"type": "knn", "dataset": "tfds:cifar10", "knn_k": 20},
    }

and each entry's ``type`` finds its class here. An evaluator registers itself in its own module,
with what the runner needs to know as class attributes and class methods::

    @register_evaluator("retrieval")
    class RetrievalEvaluator:
        needs = "retrieval"                # the data it reads: a source's "retrieval" (captioned
        #                                    galleries) or "classification" (labelled images)
        defaults = {"recall_ks": "1,5,10"}  # its own fields; a config entry overrides them

        @classmethod
        def validate(cls, entry, where): ...   # one-line ValueError naming f"{where}.{field}"
        @classmethod
        def from_config(cls, entry, data): ... # an instance whose run(encoder) -> {metric: float}

``data`` (``runner.SourceData``) hands out the entry's source and its data objects, shared by the
evaluators of one source so its images are embedded once. The package's evaluators register when
``align_tf.evaluation.runner`` imports their modules; another registers when its module is imported
(e.g. with ``--plugins=my_module``) before the config is read.
"""

from __future__ import annotations

from align_tf import registry

_EVALUATORS: dict = {}  # type -> class, in registration order


def register_evaluator(name: str):
    """Class decorator: registers the class as evaluator type ``name`` (sets ``cls.type``).

    Registering a second class under a taken name is a ``ValueError`` (re-registering the same
    class, e.g. on a module reload, replaces it)."""
    return lambda cls: registry.add(_EVALUATORS, "evaluator", name, cls, attribute="type")


def names() -> tuple:
    """The registered evaluator types, in registration order."""
    return tuple(_EVALUATORS)


def get(name: str, where: str = "type"):
    """The class registered as ``name``; ``ValueError`` naming ``where`` and the choices."""
    if name not in _EVALUATORS:
        raise ValueError(f"{where}: unknown evaluator type {name!r}; choose from {list(names())}")
    return _EVALUATORS[name]


def registered() -> dict:
    """``{type: class}`` of every registered evaluator (a copy)."""
    return dict(_EVALUATORS)


def check_int(value, where: str, minimum: int, optional: bool = False) -> None:
    """One-line ``ValueError`` naming ``where`` unless ``value`` is an int >= ``minimum`` (or None
    when ``optional``): the check most evaluator fields need."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}"
                         f"{' or None' if optional else ''}, got {value!r}")
