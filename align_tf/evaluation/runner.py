"""Evaluators declared in the config (as big_vision's ``evaluators/common.py:from_config``).

``plans_from_config(config)`` reads ``config.eval`` (every field is documented in
``configs/base.py``) and builds, for each dataset of ``eval.datasets``, the named evaluators of
``eval.tasks``; ``run_plans`` runs them on an ``embed.Encoder``; ``flatten`` gives TensorBoard
scalars and ``make_report`` the JSON of ``RUN/eval.json`` and ``python -m align_tf.evaluate
--output``. The trainer and the command line both go through these, so one config gives one set of
numbers.

Tasks (each evaluator has ``name`` and ``run(encoder) -> {metric: float}``):
  * ``retrieval``: image↔text Recall@K, mean/median rank (``retrieval.RetrievalEvaluator``).
  * ``zeroshot``: zero-shot top-1/top-5 with prompt ensembling (``zero_shot.ZeroShotEvaluator``);
    on ``synthetic`` also ``heldout_top*`` / ``seen_top*`` over the held-out and seen pairs.
  * ``knn``: kNN top-1/top-5 on frozen image embeddings (``knn.KnnEvaluator``).
  * ``linear``: linear probe top-1/top-5 on frozen image embeddings
    (``linear_probe.LinearProbeEvaluator``).
With ``eval.rerank_k > 0`` (ALBEF models) retrieval and zero-shot also report ``rerank_*``: the
ITC top-K re-ranked by the ITM head (``rerank.py``).
``auto`` picks what a dataset supports without a fit split: retrieval for captioned sets,
zero-shot for labelled ones (both for ``synthetic``).
"""

from __future__ import annotations

import ml_collections

from align_tf import prompts
from align_tf.evaluation import datasets
from align_tf.evaluation.knn import KnnEvaluator
from align_tf.evaluation.linear_probe import LinearProbeEvaluator
from align_tf.evaluation.rerank import RerankRetrievalEvaluator, RerankZeroShotEvaluator
from align_tf.evaluation.retrieval import RetrievalEvaluator
from align_tf.evaluation.zero_shot import ZeroShotEvaluator

TASKS = ("retrieval", "zeroshot", "knn", "linear")
AUTO = "auto"
NEEDS = {"retrieval": datasets.RETRIEVAL, "zeroshot": datasets.CLASSIFICATION,
         "knn": datasets.CLASSIFICATION, "linear": datasets.CLASSIFICATION}
TOPK = (1, 5)  # classification k's
LINEAR_BACKENDS = ("sklearn", "keras")


def with_eval_overrides(config, **overrides) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``eval.NAME = value`` for each override (lists allowed where the
    field is a comma list).

    Raises:
      ValueError: an override names no ``eval`` field.
    """
    unknown = sorted(set(overrides) - set(config.eval.keys()))
    if unknown:
        raise ValueError(f"unknown eval field(s) {unknown}; the fields are in configs/base.py")
    config = ml_collections.ConfigDict(config.to_dict())
    with config.eval.ignore_type():
        for name, value in overrides.items():
            config.eval[name] = value
    return config


def _names(value, field: str) -> list:
    """A comma list (string or sequence) as a list of unique, stripped names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = list(dict.fromkeys(str(n).strip() for n in items if str(n).strip()))
    if not names:
        raise ValueError(f"eval.{field} is empty")
    return names


def _check_int(ev, field: str, minimum: int, optional: bool = False):
    value = ev[field]
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"eval.{field} must be an integer >= {minimum}"
                         f"{' or None' if optional else ''}, got {value!r}")


def _recall_ks(value) -> tuple:
    try:
        ks = tuple(int(k) for k in _names(value, "recall_ks"))
    except ValueError:
        raise ValueError(f"eval.recall_ks must be positive integers, got {value!r}") from None
    if min(ks) < 1:
        raise ValueError(f"eval.recall_ks must be positive integers, got {value!r}")
    return ks


def _check_fields(ev):
    """One-line ``ValueError`` naming the first bad field of ``ev`` (the ``eval`` section)."""
    _check_int(ev, "every_steps", 0)
    for field in ("batch_size", "block_size", "knn_k", "synthetic_examples_per_class",
                  "synthetic_retrieval_rounds"):
        _check_int(ev, field, 1)
    _check_int(ev, "captions_per_image", 0)
    _check_int(ev, "rerank_k", 0)
    if ev.rerank_k and ev.faiss:
        raise ValueError("eval.rerank_k re-ranks the exact ITC ranking; it cannot be combined "
                         "with eval.faiss")
    _check_int(ev, "synthetic_seed", 0)
    _check_int(ev, "max_examples", 1, optional=True)
    _check_int(ev, "max_train_examples", 1, optional=True)
    if not ev.knn_temperature >= 0:
        raise ValueError(f"eval.knn_temperature must be >= 0 (0: majority vote), "
                         f"got {ev.knn_temperature!r}")
    if ev.linear_c is not None and not ev.linear_c > 0:
        raise ValueError(f"eval.linear_c must be > 0 or None (swept), got {ev.linear_c!r}")
    if ev.linear_backend not in LINEAR_BACKENDS:
        raise ValueError(f"eval.linear_backend must be one of {list(LINEAR_BACKENDS)}, "
                         f"got {ev.linear_backend!r}")
    try:
        prompts.get_templates(ev.templates)
    except ValueError as e:
        raise ValueError(f"eval.templates: {e}") from None


def plans_from_config(config, download: bool = False, **overrides) -> list:
    """The evaluation ``config.eval`` declares: ``[(dataset, [(task, evaluator), ...]), ...]``.

    Everything is checked here, before any model is built or image rendered; the synthetic images
    are rendered at the first ``run_plans`` and reused by every later one.

    Args:
      config: a training config (``configs/base.py``; ``eval`` and nothing else is read).
      download: let TFDS download and prepare missing datasets (never inside training).
      **overrides: ``eval`` fields to replace (``with_eval_overrides``).

    Raises:
      ValueError: a bad field, with its name; ``datasets.UnknownDatasetError`` (a ``ValueError``)
        for a dataset that is not synthetic, a ``tfrecord:`` glob or a TFDS name.
    """
    if overrides:
        config = with_eval_overrides(config, **overrides)
    ev = config.eval
    _check_fields(ev)
    names = _names(ev.datasets, "datasets")
    tasks = _names(ev.tasks, "tasks")
    for task in tasks:
        if task not in TASKS + (AUTO,):
            raise ValueError(f"eval.tasks: unknown task {task!r}; choose from {list(TASKS) + [AUTO]}")
    ks = _recall_ks(ev.recall_ks)
    if datasets.SYNTHETIC in names and ev.captions_per_image == 0:
        raise ValueError("eval.captions_per_image must be >= 1 with the synthetic dataset "
                         "(captions are generated, not kept)")
    plans = []
    for name in names:
        try:
            plans.append((name, _evaluators(name, tasks, ev, ks, download)))
        except datasets.UnknownDatasetError as e:
            raise datasets.UnknownDatasetError(f"eval.datasets: {e}") from None
    return plans


def _resolve_tasks(dataset: str, tasks: list, data_dir: str | None) -> list:
    kinds = datasets.dataset_kinds(dataset, data_dir)
    if AUTO in tasks:
        tasks = [t for t in ("retrieval", "zeroshot") if NEEDS[t] in kinds]
    for task in tasks:
        if NEEDS[task] not in kinds:
            raise ValueError(f"eval.tasks: {task!r} needs a {NEEDS[task]} dataset; {dataset!r} "
                             f"is {' and '.join(sorted(kinds))}")
    return tasks


def _classification(dataset: str, ev, train: bool, download: bool):
    if dataset == datasets.SYNTHETIC:
        return datasets.synthetic_classification("train" if train else "test",
                                                 ev.synthetic_examples_per_class,
                                                 ev.synthetic_seed + int(train))
    return datasets.tfds_classification(
        dataset, ev.train_split if train else ev.split, train=train, data_dir=ev.data_dir,
        download=download, max_examples=ev.max_train_examples if train else ev.max_examples)


def _retrieval(dataset: str, ev, download: bool):
    if dataset == datasets.SYNTHETIC:
        return datasets.synthetic_retrieval(ev.synthetic_retrieval_rounds, ev.captions_per_image,
                                            ev.synthetic_seed + 2)
    captions = ev.captions_per_image or None  # 0: all
    if datasets.record_source(dataset) is not None:  # tfrecord:GLOB, img2dataset_tfrecord:GLOB
        return datasets.record_retrieval(dataset, ev.max_examples, captions)
    return datasets.tfds_retrieval(dataset, ev.split, ev.data_dir, download, ev.max_examples,
                                   captions)


def _evaluators(dataset: str, tasks: list, ev, ks: tuple, download: bool) -> list:
    """``[(task, evaluator), ...]`` for ``dataset``."""
    out, test, train = [], None, None
    for task in _resolve_tasks(dataset, tasks, ev.data_dir):
        if task == "retrieval" and ev.rerank_k:
            out.append((task, RerankRetrievalEvaluator(_retrieval(dataset, ev, download), ks,
                                                       ev.rerank_k, ev.block_size)))
            continue
        if task == "retrieval":
            out.append((task, RetrievalEvaluator(_retrieval(dataset, ev, download), ks,
                                                 ev.block_size, ev.faiss)))
            continue
        # One data object per split, shared by the tasks, so its embeddings are computed once.
        test = test or _classification(dataset, ev, False, download)
        if task == "zeroshot":
            groups = datasets.synthetic_groups() if dataset == datasets.SYNTHETIC else None
            templates = prompts.get_templates(ev.templates, dataset)
            if ev.rerank_k:
                out.append((task, RerankZeroShotEvaluator(test, templates, TOPK, ev.rerank_k,
                                                          groups)))
            else:
                out.append((task, ZeroShotEvaluator(test, templates, TOPK, groups)))
            continue
        train = train or _classification(dataset, ev, True, download)
        if task == "knn":
            out.append((task, KnnEvaluator(train, test, ev.knn_k, ev.knn_temperature or None,
                                           TOPK)))
        else:
            out.append((task, LinearProbeEvaluator(train, test, backend=ev.linear_backend,
                                                   c=ev.linear_c, topk=TOPK)))
    return out


def run_plans(encoder, plans) -> dict:
    """``{dataset: {task: {metric: value}}}``: every evaluator of ``plans`` on ``encoder``.

    The weights are read once per call (``encoder.fixed_weights``): images shared by tasks are
    embedded once, and a later call after training steps sees the new weights.
    """
    with encoder.fixed_weights():
        return {name: {task: _run(evaluator, encoder) for task, evaluator in evaluators}
                for name, evaluators in plans}


def _run(evaluator, encoder) -> dict:
    """``evaluator.run(encoder)`` plus what its data skipped as corrupt (``num_skipped_*``, for
    data read from shards: ``RetrievalData.skipped_counts``), counted during that run."""
    metrics = evaluator.run(encoder)
    skipped = getattr(getattr(evaluator, "data", None), "skipped_counts", None)
    return dict(metrics, **skipped()) if skipped is not None else metrics


def flatten(results: dict) -> dict:
    """``{"dataset/task/metric": float}`` for TensorBoard; counts (``num_*``, the skipped corrupt
    images included) are left out."""
    return {f"{name}/{task}/{metric}": float(value)
            for name, tasks in results.items() for task, metrics in tasks.items()
            for metric, value in metrics.items() if not metric.startswith("num_")}


def make_report(results: dict, model_info: dict, seconds: float) -> dict:
    """The evaluation report (``RUN/eval.json``, ``python -m align_tf.evaluate --output``).

    ``{"model": model_info, "results": {dataset: {task: {metric: float}}}, "seconds": ...}``;
    ``model_info`` is ``encoder.info()`` plus what the caller knows (``model_dir``, steps...).
    """
    return {"model": dict(model_info),
            "results": {name: {task: {m: float(v) for m, v in metrics.items()}
                               for task, metrics in tasks.items()}
                        for name, tasks in results.items()},
            "seconds": round(float(seconds), 1)}
