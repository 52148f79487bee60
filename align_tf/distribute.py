"""Choosing a ``tf.distribute`` strategy: TPU, multi-worker, mirrored or one device."""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "tpu", "multi_worker", "mirrored", "one_device")


def _tf_config_workers() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def get_strategy(name: str = "auto", tpu: str | None = None) -> tf.distribute.Strategy:
    """Returns a strategy by name.

    ``auto`` picks TPU if ``tpu`` is given, multi-worker if ``TF_CONFIG`` lists several workers,
    mirrored over all GPUs if there are several, else one device (the first GPU or the CPU).
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose from {list(STRATEGIES)}.")
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
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one worker that writes summaries, checkpoints, eval and export."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if "chief" in resolver.cluster_spec().as_dict():
        return task_type == "chief"
    return task_type in (None, "worker") and task_id in (None, 0)
