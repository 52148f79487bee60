"""Resuming from damaged checkpoints: the newest checkpoint is read back whole before it is
trusted; a damaged one is skipped with a warning naming it; with several workers the chief's
choice is everyone's, and a worker that cannot restore it stops them all; nothing readable, or a
restore that fails, is a one-line ``ConfigError``."""

import glob
import json
import logging
import os
import shutil
import sys
import types

import pytest
import tensorflow as tf

from align_tf import trainer
from align_tf.run_dir import RunDir
from test_scale import _env, _free_ports, _tail, _tiny_config, procs  # noqa: F401 (a fixture)

ONE_DEVICE = tf.distribute.OneDeviceStrategy("/cpu:0")


def _truncate_data(path):
    (data,) = glob.glob(f"{path}.data-*")
    os.truncate(data, os.path.getsize(data) // 2)


def _flip_a_byte(path):
    (data,) = glob.glob(f"{path}.data-*")
    with open(data, "r+b") as f:
        f.seek(os.path.getsize(data) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _stand_in_objective():
    """What ``trainer.checkpoint_for`` saves of an objective, at the size of one counter and a
    vector (no model to build): ``restore`` reads it like a training state."""
    optimizer = tf.train.Checkpoint(iterations=tf.Variable(0, dtype=tf.int64),
                                    slots=tf.Variable(tf.zeros(1000)))
    return types.SimpleNamespace(model=tf.train.Checkpoint(), optimizer=optimizer,
                                 state=tf.train.Checkpoint())


def _small_run(path, steps=(2, 4, 6)):
    """A run directory with stand-in training checkpoints ``ckpt-N`` (iterations = N)."""
    run = RunDir(str(path))
    objective = _stand_in_objective()
    manager = run.checkpoint_manager(trainer.checkpoint_for(objective), max_to_keep=5)
    for step in steps:
        objective.optimizer.iterations.assign(step)
        manager.save(checkpoint_number=step)
    return run


def test_choose_checkpoint_skips_damaged_ones(tmp_path, caplog):
    run = _small_run(tmp_path)
    assert trainer.choose_checkpoint(run, ONE_DEVICE).endswith("ckpt-6")
    _flip_a_byte(f"{run.checkpoint_dir}/ckpt-6")  # the checksum catches it
    os.remove(f"{run.checkpoint_dir}/ckpt-4.index")  # tf.train.latest_checkpoint misses it
    with caplog.at_level(logging.WARNING, logger="align_tf.trainer"):
        assert trainer.choose_checkpoint(run, ONE_DEVICE).endswith("ckpt-2")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "ckpt-6 is damaged" in warned[0] and "ckpt-4" in warned[1]

    # A lost state file does not make the run look fresh.
    os.remove(f"{run.checkpoint_dir}/checkpoint")
    assert trainer.choose_checkpoint(run, ONE_DEVICE).endswith("ckpt-2")
    assert trainer.choose_checkpoint(RunDir(str(tmp_path / "fresh")), ONE_DEVICE) is None


def test_no_readable_checkpoint_and_failed_restores_are_one_line_errors(tmp_path):
    run = _small_run(tmp_path, steps=(2, 4))
    _truncate_data(f"{run.checkpoint_dir}/ckpt-4")
    with pytest.raises(trainer.ConfigError, match=r"cannot restore .*ckpt-4: ") as error:
        trainer.restore(_stand_in_objective(), f"{run.checkpoint_dir}/ckpt-4", ONE_DEVICE)
    assert "\n" not in str(error.value)

    _truncate_data(f"{run.checkpoint_dir}/ckpt-2")
    with pytest.raises(trainer.ConfigError, match=r"no checkpoint in .* can be read \(newest: "
                                                  r".*ckpt-4; see the warnings\)") as error:
        trainer.choose_checkpoint(run, ONE_DEVICE)
    assert "\n" not in str(error.value)


def test_checkpoint_of_another_shape_is_a_one_line_error(tmp_path):
    """Resuming a model_dir with a config whose variables have other shapes (e.g. another
    vocabulary) names the checkpoint and the variable instead of a restore traceback."""
    run = _small_run(tmp_path, steps=(2,))
    other = _stand_in_objective()
    other.optimizer.slots = tf.Variable(tf.zeros(999))
    with pytest.raises(trainer.ConfigError, match=r"ckpt-2 does not match this config .*shape"
                       ) as error:
        trainer.restore(other, f"{run.checkpoint_dir}/ckpt-2", ONE_DEVICE)
    assert "\n" not in str(error.value)


def _adam_objective(names):
    """A stand-in objective whose model has one (3,) variable per name, trained one Adam step:
    Keras 3 keys the Adam moments by position, not by variable."""
    import keras
    model = tf.train.Checkpoint(**{n: tf.Variable(tf.fill([3], float(i))) for i, n in
                                   enumerate(names)})
    variables = [getattr(model, n) for n in names]
    optimizer = keras.optimizers.Adam()
    optimizer.apply_gradients([(tf.fill([3], i + 1.0), v) for i, v in enumerate(variables)])
    return types.SimpleNamespace(model=model, optimizer=optimizer, state=tf.train.Checkpoint())


def test_checkpoint_with_an_extra_variable_in_the_middle_is_refused(tmp_path):
    """A checkpoint of variables a, b, c restored into a config with a and c only: every variable
    of the config finds its value, and c's shape equals b's, so without checking that every
    checkpoint entry is used b's Adam moments would load onto c silently."""
    path = trainer.checkpoint_for(_adam_objective("abc")).save(str(tmp_path / "ckpt"))
    trainer.restore(_adam_objective("abc"), path)  # the same variables restore
    with pytest.raises(trainer.ConfigError, match=r"ckpt-1 does not match this config .*: "
                       r"checkpoint entry model/b/.ATTRIBUTES/VARIABLE_VALUE \(and 2 more\) is "
                       r"not used by any variable of this config$") as error:
        trainer.restore(_adam_objective("ac"), path)
    assert "\n" not in str(error.value)


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, capsys):
    """A run directory with the training states a run writes at steps 2 and 4 (built, not
    trained, to keep the test short); ckpt-4's data file truncated, as by a job killed mid-write on
    a file system without atomic renames. Training warns, resumes from ckpt-2, finishes and
    rewrites ckpt-4."""
    config = _tiny_config(steps=6, steps_per_loop=2, checkpoint_every=2, log_every=2,
                          keep_checkpoints=5)
    config.eval.enabled = False
    run = RunDir(str(tmp_path)).makedirs()
    _, preprocessor = trainer.prepare_inputs(config, run, chief=True, resuming=False)
    _, objective = trainer.build(config, preprocessor.vocabulary_size)
    manager = run.checkpoint_manager(trainer.checkpoint_for(objective), max_to_keep=5)
    for step in (2, 4):
        objective.optimizer.iterations.assign(step)
        manager.save(checkpoint_number=step)
    _truncate_data(f"{run.checkpoint_dir}/ckpt-4")

    with caplog.at_level(logging.WARNING, logger="align_tf.trainer"):
        result = trainer.train(config, str(tmp_path), ONE_DEVICE, verbose=1)
    assert any(f"{run.checkpoint_dir}/ckpt-4 is damaged" in r.getMessage() for r in caplog.records)
    assert f"resumed at step 2 from {run.checkpoint_dir}/ckpt-2" in capsys.readouterr().out
    assert int(result.objective.optimizer.iterations.numpy()) == 6
    for step in (2, 4, 6):
        assert trainer.verify_checkpoint(f"{run.checkpoint_dir}/ckpt-{step}") is None


# A MultiWorkerMirroredStrategy worker: for each (model_dir of this worker) argument, choose and
# restore a checkpoint the way trainer.train does, printing the outcome.
WORKER = """
import sys
from align_tf import distribute
strategy = distribute.get_strategy("multi_worker")
sys.path.insert(0, "tests")
from align_tf import trainer
from align_tf.run_dir import RunDir
from test_restore import _stand_in_objective
for model_dir in sys.argv[1:]:
    path = trainer.choose_checkpoint(RunDir(model_dir), strategy)
    objective = _stand_in_objective()
    try:
        trainer.restore(objective, path, strategy)
        print("restored", path.rsplit("/", 1)[1], int(objective.optimizer.iterations.numpy()))
    except trainer.ConfigError as e:
        print("error:", e)
"""


def test_workers_restore_the_chiefs_choice(tmp_path, procs):  # noqa: F811
    """Two workers whose checkpoint directories differ (damage only one host sees): each takes
    the chief's choice, not its own newest readable one; when worker 1 cannot read that one,
    both stop with a one-line error instead of diverging or hanging in a collective."""
    _small_run(tmp_path / "chief_a")
    _flip_a_byte(str(tmp_path / "chief_a/checkpoints/ckpt-6"))  # the chief falls back to ckpt-4
    _small_run(tmp_path / "worker_a")  # worker 1 alone would take ckpt-6
    shutil.copytree(tmp_path / "chief_a", tmp_path / "chief_b")
    _small_run(tmp_path / "worker_b")
    _truncate_data(str(tmp_path / "worker_b/checkpoints/ckpt-4"))  # worker 1 cannot read ckpt-4

    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    workers = []
    for index, role in enumerate(("chief", "worker")):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        model_dirs = [str(tmp_path / f"{role}_{case}") for case in "ab"]
        workers.append(procs.start([sys.executable, "-c", WORKER, *model_dirs],
                                   tmp_path / f"{role}.log", _env(TF_CONFIG=tf_config)))
    for proc in workers:
        assert procs.wait(proc, timeout=180) == 0, _tail(proc)
    chief, worker = (_tail(p).splitlines() for p in workers)
    assert "restored ckpt-4 4" in chief and "restored ckpt-4 4" in worker
    assert any(line.startswith("error: cannot restore") and "ckpt-4: " in line for line in worker)
    assert any(line.startswith("error: restoring") and "failed on another worker" in line
               for line in chief)
