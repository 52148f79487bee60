"""Evaluators declared in the config (as big_vision's ``evaluators/common.py:from_config``).

``config.eval.evaluators`` names each evaluation: ``{name: {"type": ..., "dataset": ..., field:
value}}``. ``type`` is a registered evaluator (``registry.py``; built in: ``retrieval``,
``zeroshot``, ``knn``, ``linear``, or ``auto``: what the dataset supports without a fit split,
retrieval for captioned sets and zero-shot for labelled ones); ``dataset`` is a data source spec
(``align_tf.data.sources``: ``synthetic``, ``tfrecord:GLOB``, ``tfds:NAME``, ...); the other
fields are the type's own (its ``defaults``) or the source options of ``SOURCE_OPTIONS``, which
default to the flat ``eval`` fields of the same name.

``plans_from_config(config)`` checks and builds them (one-line ``ValueError`` naming the field);
``run_plans`` runs them on an ``embed.Encoder``; ``flatten`` gives TensorBoard scalars and
``make_report`` the JSON of ``RUN/eval.json`` and ``python -m align_tf.evaluate --output``. The
trainer and the command line both go through these, so one config gives one set of numbers.

A report's results are ``{source key: {type: {metric: value}}}``: the key is the source's name
without its argument (``synthetic``, ``tfrecord``; a TFDS set's own name such as ``cifar10``),
with ``_2``, ``_3`` … when one report has two sources of a kind, and the full spec of each key is
recorded beside the results (``report["sources"]``). Metrics are fractions in [0, 1].
"""

from __future__ import annotations

import ml_collections

from align_tf.configs import evaluators_for
from align_tf.evaluation import registry
# The package's evaluators: imported, they register (in this order, which "choose from" lists).
from align_tf.evaluation import retrieval, zero_shot, knn, linear_probe  # noqa: F401
from align_tf.evaluation import cxc, intra_modal, correlation  # noqa: F401, I001
from align_tf.evaluation import multi30k  # noqa: F401, I001
from align_tf.evaluation import synthetic_shift  # noqa: F401, I001  [shift]
from align_tf.evaluation import multilingual  # noqa: F401, I001  [mling]: per language

AUTO = "auto"
# What `auto` runs, where the dataset supports it (`_takes`): the CxC benchmark's own evaluators
# run on cxc:DIR only, the intra-modal and similarity ones on the synthetic set and CxC.
AUTO_TYPES = ("retrieval", "zeroshot", "cxc_retrieval", "intramodal", "correlation",
              "multi30k_retrieval")
TOPK = zero_shot.TOPK
# Fields of the flat `eval` section an entry may override: they choose the data it reads.
SOURCE_OPTIONS = ("split", "train_split", "max_examples", "max_train_examples", "data_dir",
                  "synthetic_examples_per_class", "synthetic_retrieval_rounds", "synthetic_seed")
# The evaluate CLI's and `with_eval_overrides`' names that rebuild `eval.evaluators`.
CROSS_PRODUCT = ("datasets", "tasks")


def type_fields() -> dict:
    """``{field: default}`` of every registered evaluator type's own fields (first wins)."""
    fields = {}
    for cls in registry.registered().values():
        for name, value in cls.defaults.items():
            fields.setdefault(name, value)
    return fields


def with_eval_overrides(config, **overrides) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``eval`` overridden, as the evaluate CLI's flags do:

      * ``datasets`` / ``tasks`` (comma lists) replace ``eval.evaluators`` by their cross product
        (without ``tasks``: ``auto``; without ``datasets``: the current evaluators' datasets);
      * a flat ``eval`` field (``batch_size``, ``max_examples``, …) is set;
      * an evaluator type's field (``recall_ks``, ``rerank_k``, ``knn_k``, …) is set in every
        entry whose type has it (an ``auto`` entry: either of its types).

    Raises:
      ValueError: an override names nothing the evaluators read.
    """
    fields = type_fields()
    unknown = sorted(set(overrides) - set(config.eval.keys()) - set(fields) - set(CROSS_PRODUCT))
    if unknown:
        raise ValueError(f"unknown eval field(s) {unknown}; the fields are in configs/base.py and "
                         "the evaluators' defaults (align_tf/evaluation/)")
    config = ml_collections.ConfigDict(config.to_dict())
    ev = config.eval
    with ev.ignore_type():
        if any(k in overrides for k in CROSS_PRODUCT):
            datasets = overrides.get("datasets") or [
                e.dataset for e in ev.evaluators.values()] or ["synthetic"]
            tasks = overrides.get("tasks") or [AUTO]
            ev.evaluators = _keep_fields(evaluators_for(datasets, tasks), ev.evaluators)
        for name, value in overrides.items():
            if name in CROSS_PRODUCT:
                continue
            if name in ev and name != "evaluators":
                ev[name] = value
            for entry in ev.evaluators.values():
                if name in entry_fields(entry.type) or name in entry:
                    with entry.ignore_type():
                        entry[name] = value
    return config


def _keep_fields(new: dict, old) -> dict:
    """``new`` entries given the fields the ``old`` entries set for their type (the first old
    entry of a type, or an ``auto`` one, wins): rebuilding the cross product keeps a run's
    ``recall_ks``, ``captions_per_image``... as the old flat fields were kept."""
    for entry in new.values():
        fields = entry_fields(entry["type"])
        for previous in old.values():
            if previous.type in (entry["type"], AUTO) or entry["type"] == AUTO:
                for key, value in previous.items():
                    if key in fields:
                        entry.setdefault(key, value)
    return new


def entry_fields(type_name: str) -> dict:
    """The defaults of ``type_name`` (an ``auto`` entry: of each of its types; unknown: none)."""
    types = AUTO_TYPES if type_name == AUTO else (type_name,)
    out = {}
    for name in types:
        cls = registry.registered().get(name)
        out.update(cls.defaults if cls is not None else {})
    return out


def _check_shared(ev) -> None:
    """One-line ``ValueError`` naming the first bad flat ``eval`` field."""
    registry.check_int(ev.every_steps, "eval.every_steps", 0)
    for field in ("batch_size", "synthetic_examples_per_class", "synthetic_retrieval_rounds"):
        registry.check_int(ev[field], f"eval.{field}", 1)
    registry.check_int(ev.synthetic_seed, "eval.synthetic_seed", 0)
    registry.check_int(ev.max_examples, "eval.max_examples", 1, optional=True)
    registry.check_int(ev.max_train_examples, "eval.max_train_examples", 1, optional=True)
    if not isinstance(ev.get("evaluators"), ml_collections.ConfigDict) or not ev.evaluators:
        raise ValueError("eval.evaluators is empty: name at least one evaluator, e.g. "
                         "{'synthetic_zeroshot': {'type': 'zeroshot', 'dataset': 'synthetic'}}")


def _entry(ev, cls, section, where: str) -> ml_collections.ConfigDict:
    """The fields an evaluator of class ``cls`` reads: its defaults and the source options (from
    the flat ``eval`` fields), overridden by the config entry ``section``."""
    entry = ml_collections.ConfigDict({**{k: ev[k] for k in SOURCE_OPTIONS}, **cls.defaults})
    for key, value in section.items():
        if key in ("type", "dataset"):
            continue
        if key not in entry:
            if key in type_fields() or key in ev:  # another type's field (an `auto` entry's)
                continue
            raise ValueError(f"{where}.{key}: not a field of evaluator type {cls.type!r} "
                             f"(its fields: {sorted(cls.defaults)}; source options: "
                             f"{list(SOURCE_OPTIONS)})")
        with entry.ignore_type():
            entry[key] = value
    return entry


class SourceData:
    """One data source's evaluation data, shared by every evaluator that reads it: one data
    object per (kind, options), so images evaluators share are embedded once per run.

    Attributes:
      source: the ``align_tf.data.sources`` source (``name``, ``spec``, ``groups()``,
        ``prompt_name``).
    """

    def __init__(self, source, download: bool):
        self.source, self._download, self._objects = source, download, {}

    def _options_key(self, entry) -> tuple:
        return tuple((k, entry.get(k)) for k in SOURCE_OPTIONS + ("captions_per_image",))

    def classification(self, entry, train: bool):
        """The labelled images of ``entry``'s options: the test split, or the fit split."""
        key = ("classification", train, self._options_key(entry))
        if key not in self._objects:
            self._objects[key] = self.source.classification(entry, train, self._download)
        return self._objects[key]

    def retrieval(self, entry):
        """The captioned images of ``entry``'s options (``captions_per_image`` among them)."""
        key = ("retrieval", self._options_key(entry))
        if key not in self._objects:
            self._objects[key] = self.source.retrieval(entry, self._download)
        return self._objects[key]


class Plans(list):
    """``[(source key, [(type, evaluator), ...]), ...]``, plus ``sources``: ``{key: spec}``."""

    def __init__(self):
        super().__init__()
        self.sources = {}


def _source(spec, where: str):
    from align_tf.data import sources  # TensorFlow: only once evaluation is built
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{where}.dataset is required: a data source such as 'synthetic', "
                         "'tfrecord:GLOB' or 'tfds:NAME'")
    try:
        return sources.get(spec.strip())
    except ValueError as e:
        raise ValueError(f"{where}.dataset: {e}") from None


def _report_key(source, taken: dict) -> str:
    """The source's ``results_key``, suffixed when another spec took it."""
    base = source.results_key
    key, n = base, 1
    while key in taken and taken[key] != source.spec:
        n += 1
        key = f"{base}_{n}"
    return key


def plans_from_config(config, download: bool = False, **overrides) -> Plans:
    """The evaluation ``config.eval`` declares, checked and built (see the module docstring).

    Everything is checked here, before any model is built or image rendered; the synthetic images
    are rendered at the first ``run_plans`` and reused by every later one.

    Args:
      config: a training config (``configs/base.py``; ``eval`` and nothing else is read).
      download: let TFDS download and prepare missing datasets (never inside training).
      **overrides: ``with_eval_overrides``' overrides.

    Raises:
      ValueError: a bad field, with its name (``eval.evaluators.NAME.FIELD``).
    """
    if overrides:
        config = with_eval_overrides(config, **overrides)
    ev = config.eval
    _check_shared(ev)
    plans, data, by_key = Plans(), {}, {}
    for name, section in ev.evaluators.items():
        where = f"eval.evaluators.{name}"
        if not isinstance(section, ml_collections.ConfigDict) or "type" not in section:
            raise ValueError(f"{where} needs a type: one of {list(registry.names()) + [AUTO]}")
        source = _source(section.get("dataset"), where)
        if source.spec not in data:
            data[source.spec] = SourceData(source, download)
            key = _report_key(source, plans.sources)
            plans.sources[key] = source.spec
            by_key[source.spec] = (key, [])
            plans.append(by_key[source.spec])
        key, evaluators = by_key[source.spec]
        for type_name, evaluator in _build(section, ev, source, data[source.spec], where):
            task = type_name if all(t != type_name for t, _ in evaluators) else name
            evaluators.append((task, evaluator))
    return plans


def _build(section, ev, source, data, where: str) -> list:
    """``[(type, evaluator)]`` of one config entry (an ``auto`` entry: one per type it runs)."""
    try:
        kinds = source.kinds(ev)  # a TFDS set: opens its builder (an unknown name fails here)
    except ValueError as e:
        raise ValueError(f"{where}.dataset: {e}") from None
    if section.type == AUTO:
        types = [t for t in AUTO_TYPES if _takes(registry.get(t), source, kinds)]
    else:
        types = [section.type]
    out = []
    for type_name in types:
        cls = registry.get(type_name, f"{where}.type")
        if not _takes(cls, source, kinds):
            raise ValueError(f"{where}: {type_name!r} needs a {cls.needs} dataset; "
                             f"{source.spec!r} is {' and '.join(sorted(kinds))}")
        entry = _entry(ev, cls, section, where)
        cls.validate(entry, where)
        # A benchmark's evaluator may report under the generic key (cxc_retrieval: "retrieval").
        out.append((getattr(cls, "report_as", type_name), cls.from_config(entry, data)))
    return out


def _takes(cls, source, kinds) -> bool:
    """Whether evaluator class ``cls`` reads ``source``: the source yields the kind it ``needs``,
    or, for a type with an ``accepts(source, kinds)`` class method, that says so."""
    accepts = getattr(cls, "accepts", None)
    return accepts(source, kinds) if accepts is not None else cls.needs in kinds


def run_plans(encoder, plans) -> dict:
    """``{source key: {type: {metric: value}}}``: every evaluator of ``plans`` on ``encoder``.

    The weights are read once per call (``encoder.fixed_weights``): images shared by evaluators
    are embedded once, and a later call after training steps sees the new weights. The result
    carries ``plans.sources`` (``Results.sources``) for ``make_report``.
    """
    with encoder.fixed_weights():
        results = Results({name: {task: _run(evaluator, encoder) for task, evaluator in evaluators}
                           for name, evaluators in plans})
    results.sources = dict(getattr(plans, "sources", {}))
    return results


class Results(dict):
    """``run_plans``' results, with ``sources``: ``{key: spec}``."""

    sources: dict = {}


def _run(evaluator, encoder) -> dict:
    """``evaluator.run(encoder)`` plus what its data skipped as corrupt (``num_skipped_*``, for
    data read from shards: ``RetrievalData.skipped_counts``), counted during that run."""
    metrics = evaluator.run(encoder)
    skipped = getattr(getattr(evaluator, "data", None), "skipped_counts", None)
    return dict(metrics, **skipped()) if skipped is not None else metrics


def flatten(results: dict) -> dict:
    """``{"source/type/metric": float}`` for TensorBoard; counts (``num_*``, the skipped corrupt
    images included) are left out."""
    return {f"{name}/{task}/{metric}": float(value)
            for name, tasks in results.items() for task, metrics in tasks.items()
            for metric, value in metrics.items() if not metric.startswith("num_")}


def make_report(results: dict, model_info: dict, seconds: float) -> dict:
    """The evaluation report (``RUN/eval.json``, ``python -m align_tf.evaluate --output``).

    ``{"model": model_info, "results": {key: {type: {metric: float}}}, "sources": {key: spec},
    "seconds": ...}``; ``model_info`` is ``encoder.info()`` plus what the caller knows
    (``model_dir``, steps...).
    """
    return {"model": dict(model_info),
            "results": {name: {task: _nest(metrics) for task, metrics in tasks.items()}
                        for name, tasks in results.items()},
            "sources": dict(getattr(results, "sources", {})),
            "seconds": round(float(seconds), 1)}


def _nest(metrics: dict) -> dict:
    """``{metric: float}``, a metric named ``"de/top1"`` nested as ``{"de": {"top1": ...}}``
    (per-language results, ``evaluation/multilingual.py``)."""
    out = {}
    for metric, value in metrics.items():
        *path, leaf = metric.split("/")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = float(value)
    return out
