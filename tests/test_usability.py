"""[usability] What a new user trips over: each common mistake is one line naming the problem
(``align_tf.X: error: ...``), never a traceback; the console is quiet and honest.

In process where possible (``load_config_file``, a command's ``main``); ``test_bad_inputs_are_
at_most_six_lines`` runs the real commands, since TensorFlow's C++ noise shows only there.
"""

import json
import os
import subprocess
import sys

import pytest

from align_tf.configs import load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def bad_configs(tmp_path):
    """``{name: (path, what its one-line error says)}``: the config files a user gets wrong."""
    run_config = load_config_file("default").to_dict()
    unknown = json.loads(json.dumps(run_config))
    unknown["train"]["bogus_field"] = 1
    files = {"empty.py": ("", "is empty"),
             "bad.py": ("def get_config(:\n", "syntax error at line 1"),
             "noget.py": ("X = 1\n", "defines no get_config()"),
             "raises.py": ("def get_config():\n    return 1 / 0\n", "ZeroDivisionError"),
             "empty.json": ("", "is empty"),
             "broken.json": ("{\"train\": ", "is not valid JSON"),
             "unknown.json": (json.dumps(unknown), "unknown config field 'train.bogus_field'")}
    out = {}
    for name, (text, message) in files.items():
        (tmp_path / name).write_text(text)
        out[name] = (str(tmp_path / name), message)
    return out


def test_bad_config_files_are_one_line(bad_configs):
    for name, (path, message) in bad_configs.items():
        with pytest.raises(ValueError) as e:
            load_config_file(path)
        assert message in str(e.value) and "\n" not in str(e.value), (name, e.value)


def test_a_runs_config_json_is_a_config(tmp_path):
    """``--config=RUN/config.json`` (or ``--config=RUN``) trains again with a run's config: the
    fields as written, old spellings through ``migrate.config_json``."""
    config = load_config_file("default")
    with config.unlocked():
        config.train.steps = 17
        config.model.image_size_name = "tiny"
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
    for spec in (str(tmp_path / "config.json"), str(tmp_path)):
        loaded = load_config_file(spec)
        assert loaded.to_dict() == config.to_dict()
    old = config.to_dict()
    old["model"]["sync_batch_norm"] = True  # a spelling from before bn_group_size
    del old["model"]["bn_group_size"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert load_config_file(str(tmp_path)).model.bn_group_size == -1


def test_a_file_where_a_directory_goes_is_named(tmp_path):
    from align_tf import cli
    (tmp_path / "afile").write_text("x")
    assert cli.directory_problem("model_dir", str(tmp_path / "afile")) == \
        f"--model_dir={tmp_path / 'afile'} is a file, not a directory"
    assert "is a file" in cli.directory_problem("output", str(tmp_path / "afile" / "sub"))
    for fine in (str(tmp_path), str(tmp_path / "new" / "run"), "gs://bucket/run", None):
        assert cli.directory_problem("model_dir", fine) is None


def test_tpu_off_google_cloud_says_what_to_use(monkeypatch):
    from align_tf import cli
    for fine in (None, "", "local", "grpc://10.0.0.2:8470"):
        assert cli.tpu_problem(fine) is None
    if os.path.exists("/sys/class/dmi/id/product_name") and "Google" in open(
            "/sys/class/dmi/id/product_name").read():
        pytest.skip("on a Google Cloud VM a TPU name is looked up")
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    monkeypatch.setattr(cli, "_METADATA_HOST", "no-such-host.invalid")  # off-cloud, anywhere
    problem = cli.tpu_problem("my-tpu")
    assert "--tpu=local" in problem and "metadata server" in problem and "\n" not in problem


def test_vocab_on_unusable_input_names_it(tmp_path, capsys):
    """``data.vocab`` on input with no usable text: one line naming the input, before
    TensorFlow where it can tell (empty files, a directory), else after reading (a CSV table
    read as TFRecords, text files of blank lines), never the learner's StopIteration."""
    from align_tf.corpus import vocab
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "table.csv").write_text("url,caption\nhttp://x/a.jpg,a red circle\n")
    (tmp_path / "folder").mkdir()
    cases = {"empty.txt": "0 usable texts (every file is empty)",
             "folder": "is a directory", "none*.txt": "no files match",
             "blank.txt": "gave 0 usable texts, read as text files",
             "table.csv": "gave 0 usable texts, read as TFRecord shards"}
    for name, message in cases.items():
        flag_values = vocab.parse_args([f"--input={tmp_path / name}",
                                        f"--output={tmp_path / 'vocab.txt'}"])
        with pytest.raises(SystemExit) as e:
            vocab.main([], flag_values)
        assert message in str(e.value.code) and "\n" not in str(e.value.code), (name, e.value)
    assert not (tmp_path / "vocab.txt").exists()


def test_resuming_with_another_architecture_names_the_fields(tmp_path, capfd):
    """A run directory of one model resumed with another: one ``ConfigError`` naming the model
    fields that differ, before anything is built or restored (so no per-variable warnings), and
    the run's config.json is left as it was."""
    import tensorflow as tf

    from align_tf import trainer
    from align_tf.run_dir import RunDir
    run = RunDir(str(tmp_path)).makedirs()
    config = load_config_file("default")
    run.save_config(config)
    # A checkpoint that reads back whole, so that the trainer resumes from it.
    tf.train.Checkpoint(v=tf.Variable(1.0)).write(f"{run.checkpoint_dir}/ckpt-3")
    other = load_config_file("default")
    with other.unlocked():
        other.model.image_size_name, other.model.max_sequence_length = "tiny", 16
    with pytest.raises(trainer.ConfigError) as e:
        trainer.train(other, str(tmp_path), verbose=0)
    message = str(e.value)
    assert "model.image_size_name='tiny' (the run has 'nano')" in message, message
    assert "model.max_sequence_length=16 (the run has 32)" in message and "\n" not in message
    assert run.load_config().model.image_size_name == "nano"
    out, err = capfd.readouterr()
    assert "could not be found" not in out + err
    with other.unlocked():  # fields that leave the variables as they are may change
        other.model.image_size_name, other.model.max_sequence_length = "nano", 32
        other.model.remat, other.model.bn_momentum = True, 0.5
    from align_tf.training.inputs import check_resumable
    check_resumable(other, run)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Stream:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_eta_from_steady_state_and_plain_lines_off_a_terminal():
    """The first host loop (tracing, compiling) is left out of the rate: at 2 s per 10-step loop
    after a 100 s first loop, step 20 of 100 says 80 steps at 0.2 s = 0:00:16 and 320 pairs/s
    (batch 64). Off a terminal: one plain line per log step, no carriage return or escape code;
    metrics in the objective's order, then lr, then integer counters."""
    from align_tf.training.progress import Progress
    clock, stream = _Clock(), _Stream()
    progress = Progress(100, 64, ("loss", "grad_norm", "skipped_steps", "consecutive_skips"),
                        stream=stream, interactive=False, clock=clock)
    metrics = {"skipped_steps": 0.0, "lr": 0.001, "grad_norm": 1.5, "loss": 8.25,
               "consecutive_skips": 0.0, "skipped_records": 2.0, "loss_t2i": 4.0}
    clock.now = 100.0
    progress.update(10, metrics, log=True)
    clock.now = 102.0
    progress.update(20, metrics, log=True)
    clock.now = 104.0
    progress.update(30, metrics, log=False)  # not a log step: nothing off a terminal
    lines = stream.text.splitlines()
    assert lines == [
        "step 10/100 | loss=8.25 grad_norm=1.5 lr=0.001 skipped_steps=0 skipped_records=2 "
        "loss_t2i=4",
        "step 20/100 | 320.0 pairs/s | ETA 0:00:16 | loss=8.25 grad_norm=1.5 lr=0.001 "
        "skipped_steps=0 skipped_records=2 loss_t2i=4"]
    assert "\r" not in stream.text and "\x1b" not in stream.text


def test_progress_on_a_terminal_redraws_one_line_without_escape_codes():
    from align_tf.training.progress import Progress
    clock, stream = _Clock(), _Stream()
    progress = Progress(20, 8, ("loss",), stream=stream, interactive=True, clock=clock)
    for step in (10, 20):
        clock.now += 1.0
        progress.update(step, {"loss": 1.0})
    progress.close()
    assert stream.text.count("\n") == 1 and stream.text.count("\r") == 2
    assert "\x1b" not in stream.text and "ETA 0:00:00" in stream.text


def test_evaluation_shows_which_evaluator_runs():
    """``evaluate`` (and train's final evaluation) announce each evaluator as it starts, through
    the runner as the commands call it; the results are the evaluators' own."""
    import contextlib
    import types

    from align_tf.evaluation import runner
    from align_tf.training.progress import announce_plans

    class Count:
        data = None

        def __init__(self, value):
            self.value = value

        def run(self, encoder):
            stream.write("<run>")
            return {"metric": self.value}

    stream = _Stream()
    plans = runner.Plans()
    plans += [("synthetic", [("retrieval", Count(1.0)), ("zeroshot", Count(2.0))]),
              ("cifar10", [("knn", Count(3.0))])]
    encoder = types.SimpleNamespace(fixed_weights=contextlib.nullcontext)
    results = runner.run_plans(encoder, announce_plans(plans, stream))
    assert results == {"synthetic": {"retrieval": {"metric": 1.0}, "zeroshot": {"metric": 2.0}},
                       "cifar10": {"knn": {"metric": 3.0}}}
    lines = stream.text.splitlines()
    assert [line.split(" ... ")[0] for line in lines] == [
        "evaluating [1/3] synthetic retrieval", "evaluating [2/3] synthetic zeroshot",
        "evaluating [3/3] cifar10 knn"]
    assert all(line.split(" ... ")[1].startswith("<run>") and line.endswith("s") for line in lines)


def _on_google_cloud() -> bool:
    try:
        with open("/sys/class/dmi/id/product_name", encoding="utf-8") as f:
            return "Google" in f.read()
    except OSError:
        return False


def test_bad_inputs_are_at_most_six_lines(tmp_path, bad_configs):
    """The check we hold: common mistakes through the real commands (TensorFlow's C++ lines show
    only there), every non-blank line of stdout and stderr together counted: at most 6, no
    traceback, the last one ``align_tf.X: error: ...``. All but one fail before TensorFlow is
    imported; the CSV given to data.vocab is read by TensorFlow and tensorflow-text first, so the
    start-up noise (oneDNN, cuInit) is counted there."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "table.csv").write_text("url,caption\nhttp://x/a.jpg,a red circle\n")
    out = f"--output={tmp_path / 'vocab.txt'}"
    cases = {
        "train_model_dir_file": ["align_tf.train", f"--model_dir={afile}"],
        "train_export_dir_file": ["align_tf.train", f"--export_dir={afile}/sub"],
        "finetune_model_dir_file": ["align_tf.finetune", "--task=lit", f"--init={tmp_path}",
                                    f"--model_dir={afile}"],
        "export_output_file": ["align_tf.export", f"--model_dir={tmp_path}", f"--output={afile}"],
        "config_empty": ["align_tf.train", f"--config={bad_configs['empty.py'][0]}"],
        "config_syntax": ["align_tf.train", f"--config={bad_configs['bad.py'][0]}"],
        "config_json_unknown_field": ["align_tf.train",
                                      f"--config={bad_configs['unknown.json'][0]}"],
        "finetune_config_broken_json": ["align_tf.finetune", "--task=lit", f"--init={tmp_path}",
                                        f"--model_dir={tmp_path / 'ft'}",
                                        f"--config={bad_configs['broken.json'][0]}"],
        "vocab_empty_file": ["align_tf.data.vocab", f"--input={tmp_path / 'empty.txt'}", out],
        "vocab_csv": ["align_tf.data.vocab", f"--input={tmp_path / 'table.csv'}", out],
        "train_stray_argument": ["align_tf.train", "stray"],
        "evaluate_stray_argument": ["align_tf.evaluate", f"--model_dir={tmp_path}", "stray"],
    }
    if not _on_google_cloud():
        cases["tpu_off_cloud"] = ["align_tf.train", "--tpu=my-tpu", f"--model_dir={tmp_path}/r"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    procs = {name: subprocess.Popen([sys.executable, "-m"] + args, cwd=tmp_path, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, args in cases.items()}
    for name, proc in procs.items():
        text, _ = proc.communicate(timeout=600)
        lines = [line for line in text.splitlines() if line.strip()]
        assert proc.returncode != 0 and "Traceback" not in text, (name, text[-3000:])
        assert len(lines) <= 6 and lines[-1].startswith(f"{cases[name][0]}: error: "), (name, text)


def test_help_answers_before_tensorflow_is_imported():
    """``--help`` of every command parses its flags without importing TensorFlow."""
    commands = ["align_tf.train", "align_tf.evaluate", "align_tf.export", "align_tf.finetune",
                "align_tf.data.vocab", "align_tf.corpus.vocab", "align_tf.data.tfds_captions"]
    script = ("import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
              "try:\n    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
              "except SystemExit:\n    pass\n"
              "print('TENSORFLOW', 'tensorflow' in sys.modules)")
    procs = {m: subprocess.Popen([sys.executable, "-c", script, m], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for m in commands}
    for module, proc in procs.items():
        text, _ = proc.communicate(timeout=300)
        assert "--" in text and text.strip().endswith("TENSORFLOW False"), (module, text[-2000:])


def test_start_banner_names_config_model_dir_strategy_and_step(tmp_path, monkeypatch):
    import tensorflow as tf

    from align_tf.run_dir import RunDir
    from align_tf.training import progress
    monkeypatch.setattr(progress, "config_name", "paper")
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    config = load_config_file("default")
    line = progress.banner(config, RunDir(str(tmp_path)), strategy, 40, resumed=True)
    assert line.startswith("align_tf: training config paper (objective contrastive, data "
                           f"synthetic) in {tmp_path} on OneDeviceStrategy (1 replica: CPU:0)")
    assert f"resumed at step 40 from {tmp_path}/checkpoints/ckpt-40" in line and "\n" not in line
    assert "fresh run" in progress.banner(config, RunDir(str(tmp_path)), strategy, 0, False)


def test_quiet_console_drops_only_the_sharding_lines(tmp_path):
    """TensorFlow logs 'Sharding callback duration' (absl logging, INFO) at every checkpoint
    save; the quiet console drops that line and keeps the others. ``--verbosity`` keeps all."""
    import logging

    from align_tf import cli

    def record(message):
        return logging.LogRecord("absl", logging.INFO, "functional_saver.py", 440, message,
                                 (255,), None)
    assert not cli._quiet_record(record("Sharding callback duration: %s microseconds"))
    assert cli._quiet_record(record("Checkpoint %s is damaged"))
    assert not cli.quiet_tensorflow(["align-train", "--verbosity=0"])
    assert not cli.quiet_tensorflow(["align-train", "-v", "1"])
