"""Choosing a ``tf.distribute`` strategy (TPU, multi-worker, mirrored, one device) and the
per-worker roles that follow from it: which worker is the chief, where each one writes, and how
the global batch splits into per-replica and per-input-pipeline batches.

Only TensorFlow's own engines are used: ``TPUStrategy`` (from ``TPUClusterResolver``),
``MultiWorkerMirroredStrategy`` (from ``TF_CONFIG``), ``MirroredStrategy`` and
``OneDeviceStrategy``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import tensorflow as tf

STRATEGIES = ("auto", "tpu", "multi_worker", "mirrored", "one_device")


class StrategyError(ValueError):
    """A strategy that cannot be built here; the message is one line meant for the user."""


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable (``{}`` when unset)."""
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError as e:
        raise StrategyError(f"TF_CONFIG is not valid JSON: {e}") from None


def _tf_config_workers() -> int:
    cluster = tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def tpu_resolver(tpu: str | None) -> tf.distribute.cluster_resolver.TPUClusterResolver:
    """Connects to and initialises a TPU system.

    ``tpu`` is a Cloud TPU name, a ``grpc://host:port`` address, ``"local"`` on a TPU VM (the chips
    are attached to this host; connecting is then a no-op), or ``None``/``""`` to let the resolver
    find the TPU from the environment (``TPU_NAME`` on Cloud TPU).
    """
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (tf.errors.OpError, ValueError, RuntimeError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StrategyError(f"cannot initialise TPU {tpu or '(from environment)'!r}: "
                            f"{first_line[:200]}") from None
    return resolver


def get_strategy(name: str = "auto", tpu: str | None = None) -> tf.distribute.Strategy:
    """Returns a strategy by name.

    ``auto`` picks TPU if ``tpu`` is given, multi-worker if ``TF_CONFIG`` lists several workers,
    mirrored over all GPUs if there are several, else one device (the first GPU or the CPU).

    ``MultiWorkerMirroredStrategy`` reads the cluster and this task's role from ``TF_CONFIG`` and
    must be created before any other TensorFlow op runs in the process (it starts the gRPC server
    that collectives use), so call this first thing in ``main``.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"Unknown strategy {name!r}; choose from {list(STRATEGIES)}.")
    if tpu and name not in ("auto", "tpu"):
        raise StrategyError(f"--tpu={tpu} conflicts with --strategy={name}")
    if name == "auto":
        if tpu:
            name = "tpu"
        elif _tf_config_workers() > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "tpu":
        return tf.distribute.TPUStrategy(tpu_resolver(tpu))
    if name == "multi_worker":
        # Without TF_CONFIG this is a valid one-worker cluster (useful for testing the code path).
        tf_config()  # fail early on malformed JSON
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief_task(task_type: str | None, task_id: int | None, cluster: dict) -> bool:
    """TF's chief rule: the ``chief`` task if the cluster has one, else worker 0.

    ``task_type is None`` means no cluster was configured (a single process).
    """
    if task_type is None:
        return True
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and (task_id or 0) == 0


def _multi_worker_task(strategy):
    """``(task_type, task_id, cluster dict)`` for a multi-worker strategy, else ``None``."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None  # TPUStrategy, Mirrored, OneDevice: one client process
    resolver = strategy.cluster_resolver
    return resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one worker that writes summaries, checkpoints, eval and export."""
    task = _multi_worker_task(strategy)
    return True if task is None else is_chief_task(*task)


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Number of client processes that run the training loop (1 unless multi-worker)."""
    task = _multi_worker_task(strategy)
    if task is None:
        return 1
    cluster = task[2]
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def worker_write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this worker writes: ``model_dir`` on the chief, a fresh local temp dir elsewhere.

    Every ``MultiWorkerMirroredStrategy`` worker must call ``CheckpointManager.save`` (saving may
    run collectives), but only the chief's files are kept; the others write to a throw-away
    directory that the caller deletes when training ends.
    """
    if is_chief(strategy):
        return model_dir
    task_type, task_id, _ = _multi_worker_task(strategy)
    return tempfile.mkdtemp(prefix=f"align_{task_type}{task_id}_")


@dataclasses.dataclass(frozen=True)
class BatchSizes:
    """How one global batch splits over replicas and input pipelines (the one place that knows).

    Attributes:
      global_batch: examples per optimizer step over all replicas (= contrastive negatives).
      per_replica: examples each replica embeds per step.
      per_pipeline: examples each input pipeline (one per host) supplies per step.
    """
    global_batch: int
    per_replica: int
    per_pipeline: int


def batch_sizes(global_batch: int, num_replicas: int, num_input_pipelines: int = 1) -> BatchSizes:
    """Splits ``global_batch``; raises ``ValueError`` if it does not divide evenly.

    Static, equal per-replica shapes are what XLA/TPU need, so uneven splits are refused rather
    than padded.
    """
    if global_batch <= 0 or global_batch % num_replicas:
        raise ValueError(f"train.batch_size={global_batch} is not divisible by the "
                         f"{num_replicas} replicas")
    if num_replicas % num_input_pipelines:
        raise ValueError(f"{num_replicas} replicas do not split over {num_input_pipelines} "
                         "input pipelines")
    per_replica = global_batch // num_replicas
    return BatchSizes(global_batch, per_replica,
                      per_replica * (num_replicas // num_input_pipelines))


def _sum_over_replicas(strategy: tf.distribute.Strategy, value, dtype) -> tf.Tensor:
    """Every replica contributes this worker's ``value``; the sum, on every worker. A collective:
    every worker must call it at the same point."""
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(value, dtype))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None)


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True if ``flag`` is set on any worker (every worker must call this at the same point).

    Used for SIGTERM: a preemption notice may reach one worker first, and a worker that left the
    training loop alone would leave the others blocked in a collective.
    """
    if num_workers(strategy) == 1:
        return flag
    return bool(_sum_over_replicas(strategy, 1.0 if flag else 0.0, tf.float32) > 0)


def chief_value(strategy: tf.distribute.Strategy, value: int) -> int:
    """The chief's integer ``value`` on every worker (every worker calls this at the same point):
    only the chief's replicas contribute, and every worker has as many replicas."""
    workers = num_workers(strategy)
    if workers == 1:
        return value
    total = _sum_over_replicas(strategy, value if is_chief(strategy) else 0, tf.int64)
    return int(total) // (strategy.num_replicas_in_sync // workers)
