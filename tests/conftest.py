"""Test set-up: 4 logical CPU devices (for MirroredStrategy tests) before TensorFlow initialises;
shared fixtures."""

import os
import pathlib
import runpy

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import setuptools  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 4)


@pytest.fixture(scope="session")
def setup_kwargs():
    """The keyword arguments setup.py passes to ``setuptools.setup`` (requirements, entry points)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    captured = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    mp.chdir(root)  # setup.py reads README.md relative to the working directory
    try:
        runpy.run_path(str(root / "setup.py"))
    finally:
        mp.undo()
    return captured
