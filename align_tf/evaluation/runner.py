"""Builds the named evaluators for a dataset and runs them on an encoder.

Tasks (big_vision-style named units, each an object with ``name`` and ``run(encoder) -> dict``):
  * ``retrieval``: image↔text Recall@K, mean/median rank (``retrieval.RetrievalEvaluator``).
  * ``zeroshot``: zero-shot top-1/top-5 with prompt ensembling (``zero_shot.ZeroShotEvaluator``).
  * ``knn``: kNN top-1/top-5 on frozen image embeddings (``knn.KnnEvaluator``).
  * ``linear``: linear probe top-1/top-5 on frozen image embeddings
    (``linear_probe.LinearProbeEvaluator``).
``auto`` picks what a dataset supports without a training split: retrieval for captioned sets,
zero-shot for labelled ones (both for ``synthetic``).
"""

from __future__ import annotations

import dataclasses

from align_tf.evaluation import datasets, prompts
from align_tf.evaluation.knn import KnnEvaluator
from align_tf.evaluation.linear_probe import LinearProbeEvaluator
from align_tf.evaluation.retrieval import RetrievalEvaluator
from align_tf.evaluation.zero_shot import ZeroShotEvaluator

TASKS = ("retrieval", "zeroshot", "knn", "linear")
NEEDS = {"retrieval": datasets.RETRIEVAL, "zeroshot": datasets.CLASSIFICATION,
         "knn": datasets.CLASSIFICATION, "linear": datasets.CLASSIFICATION}


@dataclasses.dataclass
class EvalOptions:
    """Everything that shapes an evaluation besides the model (CLI flags map onto these).

    Attributes:
      split: evaluation split (None: the dataset's test/validation split).
      train_split: split kNN and the linear probe fit on (None: ``train``).
      max_examples: cap on evaluated images (None: all).
      max_train_examples: cap on kNN/linear-probe training images (None: all).
      templates: prompt set name (``prompts.get_templates``).
      topk: classification k's.
      recall_ks: retrieval K's.
      captions_per_image: retrieval captions kept per image (None: all).
      block_size: retrieval queries scored at once.
      use_faiss: retrieval R@K with faiss instead of exact blocked ranks.
      knn_k, knn_temperature: kNN neighbours and vote temperature (None: majority vote).
      linear_backend, linear_c: linear probe backend and sklearn C (None: swept).
      data_dir, download: TFDS data directory and whether TFDS may download.
      synthetic_examples_per_class: synthetic images per class per split.
      synthetic_retrieval_rounds: synthetic retrieval images per class.
      cache: reuse image embeddings between tasks (one fixed model only).
    """
    split: str | None = None
    train_split: str | None = None
    max_examples: int | None = None
    max_train_examples: int | None = None
    templates: str = "auto"
    topk: tuple = (1, 5)
    recall_ks: tuple = (1, 5, 10)
    captions_per_image: int | None = 5
    block_size: int = 512
    use_faiss: bool = False
    knn_k: int = 20
    knn_temperature: float | None = 0.07
    linear_backend: str = "sklearn"
    linear_c: float | None = None
    data_dir: str | None = None
    download: bool = True
    synthetic_examples_per_class: int = 20
    synthetic_retrieval_rounds: int = 2
    cache: bool = False


def resolve_tasks(dataset: str, tasks, data_dir: str | None = None) -> list:
    """The task names to run on ``dataset``; raises ``ValueError`` for one it cannot support.

    Raises:
      datasets.UnknownDatasetError: an unknown dataset name.
      ValueError: an unknown task, or one the dataset cannot support.
    """
    kinds = datasets.dataset_kinds(dataset, data_dir)
    tasks = list(tasks)
    if "auto" in tasks:
        tasks = [t for t in ("retrieval", "zeroshot") if NEEDS[t] in kinds]
    for task in tasks:
        if task not in NEEDS:
            raise ValueError(f"unknown task {task!r}; choose from {list(TASKS) + ['auto']}")
        if NEEDS[task] not in kinds:
            raise ValueError(f"task {task!r} needs a {NEEDS[task]} dataset; {dataset!r} is "
                             f"{' and '.join(sorted(kinds))}")
    return tasks


def _classification(dataset: str, opts: EvalOptions, train: bool):
    if dataset == datasets.SYNTHETIC:
        return datasets.synthetic_classification("train" if train else "test",
                                                 opts.synthetic_examples_per_class, opts.cache)
    return datasets.tfds_classification(
        dataset, opts.train_split if train else opts.split, train=train, data_dir=opts.data_dir,
        download=opts.download, max_examples=opts.max_train_examples if train else opts.max_examples,
        cache=opts.cache)


def _retrieval(dataset: str, opts: EvalOptions):
    if dataset == datasets.SYNTHETIC:
        return datasets.synthetic_retrieval(opts.synthetic_retrieval_rounds,
                                            opts.captions_per_image or 5)
    if dataset.startswith(datasets.TFRECORD_PREFIX):
        return datasets.tfrecord_retrieval(dataset[len(datasets.TFRECORD_PREFIX):],
                                           opts.max_examples, opts.captions_per_image)
    return datasets.tfds_retrieval(dataset, opts.split, opts.data_dir, opts.download,
                                   opts.max_examples, opts.captions_per_image)


def build_evaluators(dataset: str, tasks, opts: EvalOptions | None = None) -> list:
    """``[(task, evaluator), ...]`` for ``dataset``; tasks as in ``resolve_tasks``."""
    opts = opts or EvalOptions()
    tasks = resolve_tasks(dataset, tasks, opts.data_dir)
    out, test, train = [], None, None
    for task in tasks:
        if task == "retrieval":
            out.append((task, RetrievalEvaluator(_retrieval(dataset, opts), opts.recall_ks,
                                                 opts.block_size, opts.use_faiss)))
            continue
        # One data object per split, shared by the tasks, so cached embeddings are reused.
        test = test or _classification(dataset, opts, train=False)
        if task == "zeroshot":
            groups = datasets.synthetic_groups() if dataset == datasets.SYNTHETIC else None
            out.append((task, ZeroShotEvaluator(test, prompts.get_templates(opts.templates, dataset),
                                                opts.topk, groups)))
            continue
        train = train or _classification(dataset, opts, train=True)
        if task == "knn":
            out.append((task, KnnEvaluator(train, test, opts.knn_k, opts.knn_temperature, opts.topk)))
        else:
            out.append((task, LinearProbeEvaluator(train, test, backend=opts.linear_backend,
                                                   c=opts.linear_c, topk=opts.topk)))
    return out


def run_evaluators(encoder, evaluators) -> dict:
    """``{task: metrics}`` from ``[(task, evaluator), ...]``."""
    return {task: evaluator.run(encoder) for task, evaluator in evaluators}
