"""Test set-up: 4 logical CPU devices (for MirroredStrategy tests) before TensorFlow initialises;
shared fixtures; the default run started in the background."""

import os
import pathlib
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile

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


# The default run (`python -m align_tf.train` with no flags, ~5 min on 2 quiet cores) is the
# suite's longest test, and a subprocess. It starts as soon as collection finishes, at a lower CPU
# priority, so it fills the cores the in-process tests leave idle (most of their time is
# single-threaded tracing) instead of adding its whole length to the suite's wall time; its test
# (tests/test_train.py) waits for it and checks the same things. Deselect that test and it never
# starts. It stays in pytest's session: Linux's autogroup scheduler shares CPU fairly between
# sessions and applies nice only within one, so a new session would not be low priority.
DEFAULT_RUN_TEST = ("test_train.py", "test_default_run_learns_and_exports")
_default_run = {}


def start_default_run():
    """Starts the default run once per session; returns ``{"proc", "model_dir", "log"}``."""
    if not _default_run:
        root = tempfile.mkdtemp(prefix="align_default_run_")
        log = open(os.path.join(root, "train.log"), "w")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.Popen(
            [sys.executable, "-m", "align_tf.train", f"--model_dir={root}/run"],
            cwd=pathlib.Path(__file__).resolve().parent.parent, env=env, stdout=log,
            stderr=subprocess.STDOUT, process_group=0, preexec_fn=lambda: os.nice(10))
        _default_run.update(proc=proc, root=root, model_dir=os.path.join(root, "run"),
                            log=log.name)
    return _default_run


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    if any((item.path.name, item.originalname) == DEFAULT_RUN_TEST for item in session.items):
        start_default_run()


def pytest_sessionfinish(session):
    if _default_run:
        proc = _default_run["proc"]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(_default_run["root"], ignore_errors=True)


@pytest.fixture
def default_run():
    """The default run's ``{"proc", "model_dir", "log"}``, started if it was not yet."""
    return start_default_run()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny trained run directory (nano towers, 20 steps on the synthetic corpus) with its
    SavedModel in ``savedmodel/``; shared by tests/test_colab.py and tests/test_api.py ([api])."""
    from align_tf import trainer
    from align_tf.configs import base
    from align_tf.export import config_export_kwargs, export_saved_model

    run = str(tmp_path_factory.mktemp("tiny_run") / "run")
    config = base.get_config()
    config.update_from_flattened_dict({
        "model.text_size_name": "nano", "data.num_train_examples": 640, "data.vocab_size": 300,
        "train.batch_size": 32, "train.steps": 20, "eval.enabled": False})
    result = trainer.train(config, run, verbose=0)
    export_saved_model(result.model, result.preprocessor, os.path.join(run, "savedmodel"),
                       config=config, **config_export_kwargs(config))
    return run
