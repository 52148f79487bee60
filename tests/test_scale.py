"""Scale-out and preemption: multi-worker training on localhost equals one process; a run killed
with SIGKILL or stopped by SIGTERM resumes with the exact same input stream and final step; runs of
non-finite steps stop with a clear error and leave the last good checkpoint; strategy selection.

The multi-worker and kill/resume tests start real processes (``python -m align_tf.train`` and
``tests/scale_worker.py``) with bounded time: every process is killed on timeout or failure.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from align_tf import distribute, trainer
from align_tf.configs import base
from align_tf.tokenizer import RESERVED_TOKENS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "scale_worker.py")
PROCESS_TIMEOUT = 300  # seconds for any one process; the machine may be shared and slow


# ----------------------------------------------------------------------------- helpers

def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **extra)
    return env


def _free_ports(n):
    """``n`` distinct loopback ports that were free a moment ago (bound together, then released)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class _Procs:
    """Started subprocesses that are always killed at the end (test failure or timeout)."""

    def __init__(self):
        self.procs = []

    def start(self, args, log_path, env):
        log = open(log_path, "w")
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log_path
        log.close()
        self.procs.append(proc)
        return proc

    def wait(self, proc, timeout=PROCESS_TIMEOUT):
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail(f"{proc.args} timed out after {timeout}s:\n{_tail(proc)}")

    def kill_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _tail(proc, chars=3000):
    with open(proc.log_path) as f:
        return f.read()[-chars:]


@pytest.fixture
def procs():
    p = _Procs()
    yield p
    p.kill_all()


def _checkpoint_values(path):
    """``{name: array}`` of every saved variable in a checkpoint (object-graph keys)."""
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH" and not name.startswith("save_counter")}


# ----------------------------------------------------------------------------- multi-worker

TINY_FLAGS = [
    # Exactly comparable runs: no dropout or drop-connect, BN statistics over the global batch,
    # no random flip, no shuffle (each worker's shard is then every other pair, so the two
    # workers' global batch holds the same pairs as one process's batch), SGD (see optim.py).
    "--config.model.text_size_name=nano", "--config.model.text_dropout=0.0",
    "--config.model.drop_connect_rate=0.0", "--config.model.bn_group_size=-1",
    "--config.model.max_sequence_length=16",
    "--config.data.image_size=32", "--config.data.num_train_examples=64",
    "--config.data.vocab_size=200", "--config.data.shuffle_buffer=1",
    "--config.data.random_flip=False",
    "--config.train.batch_size=8", "--config.train.steps=3", "--config.train.steps_per_loop=2",
    "--config.train.log_every=1", "--config.train.checkpoint_every=2",
    "--config.optim.name=sgd", "--config.optim.learning_rate=0.2", "--config.optim.warmup_steps=0",
    "--config.eval.enabled=False", "--config.export.enabled=False",
]


def test_two_workers_equal_one_process(tmp_path, procs):
    """2 MultiWorkerMirroredStrategy processes on loopback ports (``--strategy=multi_worker``,
    ``TF_CONFIG``) end with the weights of one process on the same global batch; only the chief
    writes to ``model_dir`` and the other worker's temp checkpoints are removed."""
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    multi_dir, single_dir = tmp_path / "multi", tmp_path / "single"
    cli = [sys.executable, "-m", "align_tf.train", *TINY_FLAGS]
    workers = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(procs.start(
            cli + ["--strategy=multi_worker", f"--model_dir={multi_dir}"],
            tmp_path / f"worker{index}.log", _env(TF_CONFIG=tf_config, TMPDIR=str(scratch))))
    single = procs.start(cli + ["--strategy=one_device", f"--model_dir={single_dir}"],
                         tmp_path / "single.log", _env())
    for proc in workers + [single]:
        assert procs.wait(proc) == 0, _tail(proc)

    multi = _checkpoint_values(tf.train.latest_checkpoint(multi_dir / "checkpoints"))
    one = _checkpoint_values(tf.train.latest_checkpoint(single_dir / "checkpoints"))
    assert sorted(multi) == sorted(one)
    iterations = [k for k in one if k.startswith("optimizer/_iterations")]
    assert iterations and all(int(multi[k]) == int(one[k]) == 3 for k in iterations)
    temperature = [k for k in one if k.startswith("model/temperature")]
    assert temperature and abs(float(one[temperature[0]]) - 1.0) > 1e-3  # it really trained
    for name in one:
        np.testing.assert_allclose(multi[name], one[name], rtol=1e-4, atol=5e-5, err_msg=name)

    # Only the chief wrote: one TensorBoard events file, its checkpoints; worker 1's temp dir
    # (all workers must save, MultiWorkerMirroredStrategy may run collectives) is gone.
    assert len(os.listdir(multi_dir / "train")) == 1
    assert sorted(os.listdir(multi_dir)) == ["checkpoints", "config.json", "train", "vocab.txt"]
    assert not [p for p in os.listdir(tmp_path / "tmp1") if p.startswith("align_")]
    assert "preempted" not in _tail(workers[1])


# ----------------------------------------------------------------------------- kill / resume

NUM_PAIRS, SHARDS, BATCH, STEPS = 48, 3, 8, 18  # 6 steps per epoch, 3 epochs


def _write_numbered_pairs(root):
    """TFRecord shards of pairs whose caption is the pair id, plus a vocabulary in which each id
    is one word: token id = pair id + len(RESERVED_TOKENS)."""
    rng = np.random.default_rng(0)
    for shard in range(SHARDS):
        with tf.io.TFRecordWriter(str(root / f"pairs-{shard}.tfrecord")) as writer:
            for pair in range(shard, NUM_PAIRS, SHARDS):
                image = tf.io.encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).numpy()
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                    "caption": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[str(pair).encode()]))}))
                writer.write(example.SerializeToString())
    (root / "vocab.txt").write_text("\n".join(RESERVED_TOKENS + [str(i) for i in range(NUM_PAIRS)]))


def _read_records(path):
    """``{global batch index: sorted pair ids}`` of the batches a run's pipeline produced (the last
    line may be torn by SIGKILL)."""
    batches = {}
    if os.path.exists(path):
        for line in open(path).read().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            batches[entry["batch"]] = sorted(entry["ids"])
    return batches


def _wait_for(predicate, proc, what, timeout=PROCESS_TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended (rc={proc.returncode}) before {what}:\n{_tail(proc)}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{_tail(proc)}")


def test_sigkill_and_sigterm_resume_exactly(tmp_path, procs):
    """Numbered pairs: run A is SIGKILLed after a checkpoint; the same command (run B) resumes and
    gets SIGTERM, which writes a checkpoint and exits; the same command again (run C) finishes.
    The pairs of every global batch (up to each restored checkpoint) equal an uninterrupted run's,
    no pair repeats or goes missing within an epoch, each run resumes at its checkpoint's batch,
    the final step count is exact, and the final weights equal the uninterrupted run's to 1e-6
    (optimizer slots, σ, schedule restored) with every random draw on: dropout 0.1, stochastic
    depth 0.2, random crops (32 of 40) and flips, which come from stateless streams keyed by the
    step and the stream position, so nothing random needs checkpointing. Batches are observed
    through the input pipeline (``scale_worker.py --record``)."""
    data = tmp_path / "data"
    data.mkdir()
    _write_numbered_pairs(data)
    config = {
        "data.name": "tfrecord", "data.train_pattern": str(data / "pairs-*.tfrecord"),
        "data.vocab_path": str(data / "vocab.txt"), "data.image_size": 32, "data.max_tokens": 4,
        "data.shuffle_buffer": 16, "data.random_flip": True, "data.resize_size": 40,
        "model.text_size_name": "nano", "model.max_sequence_length": 8,
        "model.drop_connect_rate": 0.2, "model.text_dropout": 0.1,
        "train.batch_size": BATCH, "train.steps": STEPS, "train.steps_per_loop": 2,
        "train.checkpoint_every": 4, "train.log_every": 2, "train.keep_checkpoints": 10,
        "optim.warmup_steps": 2, "eval.enabled": False,
    }

    def command(model_dir, record, delay):
        return [sys.executable, WORKER, f"--model_dir={model_dir}", f"--config_json={json.dumps(config)}",
                f"--record={record}", f"--input_delay={delay}", "--deterministic"]

    ref_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    ref_record, run_records = tmp_path / "reference.jsonl", [tmp_path / f"run{i}.jsonl" for i in "ABC"]
    # The uninterrupted reference runs alongside run A.
    reference = procs.start(command(ref_dir, ref_record, 0.0), tmp_path / "reference.log", _env())
    latest = lambda: tf.train.latest_checkpoint(run_dir / "checkpoints")  # noqa: E731
    step_of = lambda path: int(path.rsplit("-", 1)[1])  # noqa: E731

    # Run A: SIGKILL as soon as a checkpoint exists (the input delay keeps the run from ending).
    run_a = procs.start(command(run_dir, run_records[0], 0.35), tmp_path / "A.log", _env())
    _wait_for(lambda: latest() is not None, run_a, "run A's first checkpoint")
    run_a.send_signal(signal.SIGKILL)
    assert run_a.wait(timeout=60) == -signal.SIGKILL
    k_a = step_of(latest())
    assert 0 < k_a < STEPS

    # Run B (same command) resumes; SIGTERM once its pipeline is a few batches past k_a.
    run_b = procs.start(command(run_dir, run_records[1], 0.35), tmp_path / "B.log", _env())
    _wait_for(lambda: max(_read_records(run_records[1]), default=-1) >= k_a + 5, run_b,
              "run B's progress")
    run_b.send_signal(signal.SIGTERM)
    assert procs.wait(run_b) == 75, _tail(run_b)
    k_b = step_of(latest())
    assert f"preempted: SIGTERM at step {k_b}; saved {latest()}" in _tail(run_b)
    assert k_a < k_b < STEPS
    assert min(_read_records(run_records[1])) == k_a  # resumed from A's checkpoint, not from scratch

    # Run C (same command) finishes.
    run_c = procs.start(command(run_dir, run_records[2], 0.0), tmp_path / "C.log", _env())
    assert procs.wait(run_c) == 0, _tail(run_c)
    assert procs.wait(reference) == 0, _tail(reference)
    assert f"done: step {STEPS}" in _tail(run_c)
    assert step_of(latest()) == STEPS

    # The pipeline reads ahead: keep the batches the STEPS steps consumed.
    expected = {i: ids for i, ids in _read_records(ref_record).items() if i < STEPS}
    assert sorted(expected) == list(range(STEPS))
    for epoch in range(STEPS * BATCH // NUM_PAIRS):  # every pair exactly once per epoch
        per_epoch = NUM_PAIRS // BATCH
        ids = sum((expected[b] for b in range(epoch * per_epoch, (epoch + 1) * per_epoch)), [])
        assert sorted(ids) == list(range(NUM_PAIRS))
    a, b, c = (_read_records(r) for r in run_records)
    assert min(c) == k_b
    resumed = {**{i: a[i] for i in range(k_a)}, **{i: b[i] for i in range(k_a, k_b)},
               **{i: c[i] for i in range(k_b, STEPS)}}
    assert resumed == expected

    final, ref_final = (_checkpoint_values(tf.train.latest_checkpoint(d / "checkpoints"))
                        for d in (run_dir, ref_dir))
    assert sorted(final) == sorted(ref_final)
    for name in ref_final:
        np.testing.assert_allclose(final[name], ref_final[name], rtol=0, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- non-finite guard

def _tiny_config(**train):
    c = base.get_config()
    c.model.text_size_name = "nano"
    c.model.max_sequence_length = 16
    c.model.drop_connect_rate = 0.0
    c.data.image_size = 32
    c.data.num_train_examples = 64
    c.data.vocab_size = 200
    c.train.batch_size = 8
    c.optim.warmup_steps = 1
    for k, v in train.items():
        c.train[k] = v
    return c


def _inject_nan(bad_batches):
    """A ``train(wrap_inputs=...)`` wrapper that puts NaN pixels into the given batch indices."""
    bad = tf.constant(sorted(bad_batches), tf.int64)

    def map_batches(dataset, input_context, first_batch):
        def corrupt(index, batch):
            is_bad = tf.reduce_any(tf.equal(index, bad))
            image = tf.where(is_bad, tf.fill(tf.shape(batch["image"]), np.nan), batch["image"])
            return dict(batch, image=image)
        return dataset.enumerate(start=first_batch).map(corrupt)
    return map_batches


def _scalar_events(log_dir, tag):
    values = []
    for name in sorted(os.listdir(log_dir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values.append((event.step, float(tf.make_ndarray(value.tensor))))
    return values


def test_consecutive_non_finite_steps_stop_with_last_good_checkpoint(tmp_path):
    """Under jit_compile and steps_per_loop=2: one NaN batch is skipped and training goes on;
    then ``max_consecutive_skips`` NaN batches in a row stop the run with a clear error, without
    consuming further batches or saving, so the newest checkpoint is the last good one; the skips
    are in TensorBoard as ``skipped_steps``."""
    config = _tiny_config(steps=10, steps_per_loop=2, checkpoint_every=2, log_every=10,
                          max_consecutive_skips=3, jit_compile=True, keep_checkpoints=5)
    # Batch 0 ok, 1 NaN (skipped), 2-4 ok (steps 2..4, ckpt-4), then NaNs: the loop of batches
    # 5-6 leaves 2 in a row, the next loop stops after batch 7 (3 in a row) instead of 2 batches:
    # 4 skipped steps (1, 5, 6, 7) in TensorBoard below; a 5th would mean NaN batch 8 was used.
    with pytest.raises(FloatingPointError, match=r"3 consecutive steps had non-finite loss or "
                                                 r"gradients .* at step 4.*ckpt-4"):
        trainer.train(config, str(tmp_path), tf.distribute.OneDeviceStrategy("/cpu:0"), verbose=0,
                      wrap_inputs=_inject_nan([1, 5, 6, 7, 8, 9]))
    latest = tf.train.latest_checkpoint(tmp_path / "checkpoints")
    assert latest.endswith("ckpt-4")
    saved = _checkpoint_values(latest)
    (iterations,) = [v for k, v in saved.items() if k.startswith("optimizer/_iterations")]
    (skipped,) = [v for k, v in saved.items() if k.startswith("objective/skipped_steps")]
    assert int(iterations) == 4 and int(skipped) == 1
    skips = _scalar_events(tmp_path / "train", "skipped_steps")
    assert skips[0] == (1, 1.0) and skips[-1] == (4, 4.0), skips
    assert _scalar_events(tmp_path / "train", "consecutive_skips")[-1] == (4, 3.0)


# ----------------------------------------------------------------------------- strategy / config

def test_chief_rule():
    assert distribute.is_chief_task(None, None, {})
    assert distribute.is_chief_task("worker", 0, {"worker": ["a", "b"]})
    assert not distribute.is_chief_task("worker", 1, {"worker": ["a", "b"]})
    assert distribute.is_chief_task("chief", 0, {"chief": ["c"], "worker": ["a"]})
    assert not distribute.is_chief_task("worker", 0, {"chief": ["c"], "worker": ["a"]})
    assert distribute.is_chief(tf.distribute.OneDeviceStrategy("/cpu:0"))


def test_batch_sizes_in_one_place():
    sizes = distribute.batch_sizes(64, num_replicas=8, num_input_pipelines=2)
    assert (sizes.per_replica, sizes.per_pipeline) == (8, 32)
    with pytest.raises(ValueError, match="not divisible by the 3 replicas"):
        distribute.batch_sizes(64, num_replicas=3)


def test_strategy_errors_are_clear():
    with pytest.raises(distribute.StrategyError, match="Unknown strategy"):
        distribute.get_strategy("parameter_server")
    with pytest.raises(distribute.StrategyError, match="conflicts with --strategy=mirrored"):
        distribute.get_strategy("mirrored", tpu="local")
    # No TPU here: TPUClusterResolver("local") resolves, initialising the TPU system fails clearly.
    with pytest.raises(distribute.StrategyError, match="cannot initialise TPU 'local'"):
        distribute.get_strategy("auto", tpu="local")


def test_jit_compile_refused_on_cpu_replicas():
    config = _tiny_config(jit_compile=True)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], tf.distribute.ReductionToOneDevice())
    with pytest.raises(trainer.ConfigError, match="jit_compile with several replicas needs GPUs"):
        trainer.check_jit_compile(config, strategy)
    trainer.check_jit_compile(config, tf.distribute.OneDeviceStrategy("/cpu:0"))
