"""The train CLI end to end, and its one-line config errors."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from align_tf import trainer
from align_tf.configs import base, preset_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "align_tf.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_default_run_learns_and_exports(default_run):
    """The embedded default, as `python -m align_tf.train` runs it: trains, writes eval.json and a
    SavedModel, and learns the task (zero-shot over all 30 colour x shape classes on fresh images,
    and retrieval, far above chance).

    Held-out (never co-occurring) pairs must be ≥ 5x chance too (the issues' bar). It is the full
    default, not a shortened run: half-length runs (1500 steps, lr decayed to 0 by then) measured
    held-out top-1 of 5.5%, 5.5%, 49%, 52% and 60.5% across seeds and stream versions, too noisy for
    a bar; the full default measured 79% (seen 99.3%) on this code, 35.5-74.5% before."""
    # Started in the background when collection finished (tests/conftest.py).
    returncode = default_run["proc"].wait(timeout=1100)
    with open(default_run["log"]) as f:
        assert returncode == 0, f.read()[-3000:]
    run = pathlib.Path(default_run["model_dir"])
    report = json.loads((run / "eval.json").read_text())
    zeroshot = report["results"]["synthetic"]["zeroshot"]
    retrieval = report["results"]["synthetic"]["retrieval"]
    chance = 1.0 / zeroshot["num_classes"]
    assert zeroshot["seen_top1"] >= 5 * chance, report
    assert retrieval["t2i_R@1"] >= 5 * chance and retrieval["i2t_R@1"] >= 5 * chance, report
    assert zeroshot["heldout_top1"] >= 5 * chance, report
    # [cxc]: intra-modal retrieval and the synthetic SITS/STS/SIS (a default run measured i2i
    # 99.3%, t2t 100%, Spearman 0.83 / 0.81 / 0.83; a random init 0.04-0.27)
    intramodal = report["results"]["synthetic"]["intramodal"]
    similarity = report["results"]["synthetic"]["correlation"]
    assert intramodal["i2i_R@1"] >= 5 * chance and intramodal["t2t_R@1"] >= 5 * chance, report
    for task in ("sits", "sts", "sis"):
        assert similarity[f"{task}_spearman"] >= 0.5, report
        assert 0 < similarity[f"{task}_bootstrap_std"] < 0.1, report
    assert report["model"]["temperature"] < 1.0  # σ is learned, starting from 1.0
    for name in ("vocab.txt", "config.json", "savedmodel/saved_model.pb"):
        assert (run / name).exists(), name
    assert os.listdir(run / "checkpoints") and os.listdir(run / "train")


@pytest.mark.slow
def test_sigmoid_default_run_learns_and_exports(tmp_path):
    """[siglip]: the default with only ``--config.objective.name=sigmoid`` (which implies the
    sigmoid model) trains, evaluates and exports; held-out zero-shot ≥ 5x chance. Slow: ~4.5 min
    on 2 quiet cores (the issue's bar is 10); measured held-out 46.5%, seen 74.2%."""
    proc = _cli(f"--model_dir={tmp_path}", "--config.objective.name=sigmoid")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    zeroshot = report["results"]["synthetic"]["zeroshot"]
    assert report["model"]["similarity"] == "sigmoid", report["model"]
    assert zeroshot["heldout_top1"] >= 5.0 / zeroshot["num_classes"], report
    assert (tmp_path / "savedmodel/saved_model.pb").exists()


def test_sigmoid_objective_flag_implies_the_sigmoid_model():
    from align_tf import train
    assert train._rewrite_config_arg(["--config.objective.name=sigmoid"])[-1] == \
        "--config.model.similarity=sigmoid"
    explicit = ["--config.objective.name=sigmoid", "--config.model.similarity=softmax"]
    assert train._rewrite_config_arg(explicit) == explicit  # validate_config then names it
    assert train._rewrite_config_arg(["--config.objective.name=contrastive"]) == \
        ["--config.objective.name=contrastive"]


def test_help_lists_flags():
    proc = _cli("--helpfull")
    for flag in ("--config", "--model_dir", "--tpu", "--strategy", "--train_steps"):
        assert flag in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--config=nonexistent"], "Unknown config 'nonexistent'"),
    (["--config.model.image_size_name=b9"], "unknown model.image_size_name 'b9'"),
    (["--config.optim.name=foo"], "unknown optim.name 'foo'"),
    (["--config.data.name=tfrecord", "--config.data.train_pattern=/nope/*"],
     "data.vocab_path is required"),
    (["--config.model.momentum_distillation=True"],
     "--config.model.momentum_distillation moved: use "
     "--config.objective.name=momentum_distillation"),
    (["--config.model.no_such_field=1"], "unknown config field 'model.no_such_field'"),
])
def test_bad_config_is_one_clear_line(args, message, tmp_path):
    proc = _cli(f"--model_dir={tmp_path}", *args, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("field,value,message", [
    ("train.batch_size", 0, "train.batch_size=0 must be positive"),
    ("train.steps", -1, "train.steps=-1 must be positive"),
    ("optim.name", "adam", "unknown optim.name 'adam'"),
    ("optim.learning_rate", 0.0, "optim.learning_rate=0.0 must be positive"),
    ("objective.name", "siglip", "unknown objective.name 'siglip'"),
    ("objective.contrastive.label_smoothing", 1.0,
     "objective.contrastive.label_smoothing=1.0 must be in [0, 1)"),
    ("model.min_temperature", 0.0, "model.min_temperature=0.0 must be positive"),
    ("model.bn_momentum", 1.0, "model.bn_momentum=1.0 must be in [0, 1)"),
    ("data.resize_size", 40, "data.resize_size=40 must be >= data.image_size=48"),
    ("data.caption_noise", 2.0, "data.caption_noise=2.0 must be in [0, 1]"),
    ("export.templates", "clip81", "export.templates: unknown templates 'clip81'"),
    ("eval.evaluators.synthetic_retrieval.type", "bogus",
     "eval.evaluators.synthetic_retrieval.type: unknown evaluator type 'bogus'"),
])
def test_validate_config_names_the_field(field, value, message):
    config = base.get_config()
    *sections, name = field.split(".")
    node = config
    for section in sections:
        node = node[section]
    with node.ignore_type():
        node[name] = value
    with pytest.raises(trainer.ConfigError) as e:
        trainer.validate_config(config)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("field,value,message", [
    ("label_smoothing", 1.0,
     "objective.momentum_distillation.label_smoothing=1.0 must be in [0, 1)"),
    ("alpha", 1.5, "objective.momentum_distillation.alpha=1.5 must be in [0, 1]"),
    ("queue_size", 100, "objective.momentum_distillation.queue_size=100 must be a multiple of "
                        "train.batch_size"),
])
def test_the_named_objective_checks_its_own_section(field, value, message):
    """Each objective validates its section ``objective.<name>``, and the error names it; the
    sections of objectives not named are not its business."""
    config = base.get_config()
    config.objective.momentum_distillation[field] = value
    trainer.validate_config(config)  # contrastive reads none of it
    config.objective.name = "momentum_distillation"
    with pytest.raises(trainer.ConfigError) as e:
        trainer.validate_config(config)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_old_flat_objective_flags_still_work(capsys):
    """A flat ``--config.objective.FIELD`` from before the sections nested goes to every section
    with the field, with one deprecation line naming the new spelling; the fields the objectives
    split moved out of ``model`` name the nested spelling in their one-line error."""
    from align_tf import train
    assert train._rewrite_config_arg(["--config.objective.itm_weight=2"]) == \
        ["--config.objective.albef.itm_weight=2"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["align_tf: deprecated: --config.objective.itm_weight is now "
                   "--config.objective.albef.itm_weight"]
    assert sorted(train._rewrite_config_arg(["--config.objective.queue_size=64"])) == [
        "--config.objective.albef.queue_size=64",
        "--config.objective.momentum_distillation.queue_size=64"]
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit, match="--config.model.distillation_alpha moved: use "
                                         "--config.objective.albef.alpha or "
                                         "--config.objective.momentum_distillation.alpha$"):
        train._rewrite_config_arg(["--config.model.distillation_alpha=0.2"])
    with pytest.raises(SystemExit, match="unknown config field 'objective.contrastive.alpha'"):
        train._rewrite_config_arg(["--config.objective.contrastive.alpha=0.2"])


def test_importing_the_train_command_changes_nothing(monkeypatch):
    """The command defines its flags and rewrites ``sys.argv`` in ``run()``, not at import."""
    import importlib

    from absl import flags
    from align_tf import train
    argv = ["align-train", "--config=default", "--config.objective.alpha=1"]
    monkeypatch.setattr(sys, "argv", list(argv))
    importlib.reload(train)
    assert sys.argv == argv
    assert "train_steps" not in flags.FLAGS


def test_old_flat_objective_flag_on_the_command_line():
    """Through the train command's own ``run()`` (its ``main`` replaced: no training): the old
    flat flag sets the nested field, with exactly one deprecation line on stderr; an old flat
    eval flag reaches ``main`` as an evaluator override, with one line too."""
    script = ("import sys; from absl import flags; from align_tf import train; "
              "train.main = lambda argv, eval_overrides: print("
              "flags.FLAGS.config.objective.albef.itm_weight, eval_overrides); "
              "train.run()")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script, "--config=albef_tiny",
                           "--config.objective.itm_weight=2", "--config.eval.knn_k=3"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2.0 {'knn_k': 3}"
    assert proc.stderr.strip().splitlines() == [
        "align_tf: deprecated: --config.eval.knn_k is now a field of the eval.evaluators entries "
        "(--config.eval.evaluators.NAME.knn_k); applied to every entry that has it",
        "align_tf: deprecated: --config.objective.itm_weight is now "
        "--config.objective.albef.itm_weight"]


def test_every_builtin_section_has_exactly_the_fields_its_objective_reads():
    """configs/base.py spells each built-in objective's section: exactly the fields its
    ``from_config`` reads (recorded on a probe section, with ``__init__`` replaced so that no
    model is built), which are its ``config_fields``."""
    from align_tf import objectives

    class Recording(dict):
        def __init__(self, section):
            super().__init__(section)
            self.read = set()

        def __getitem__(self, key):
            self.read.add(key)
            return super().__getitem__(key)

        __getattr__ = __getitem__

    sections = base.get_config().objective
    for name, cls in objectives.registered().items():
        probe = type("Probe", (cls,), {"__init__": lambda self, *args, **kwargs: None})
        section = Recording(sections[name].to_dict())
        probe.from_config(section, None, None, seed=0, vocab_path="")
        assert set(sections[name]) == section.read == set(cls.config_fields), name
    assert set(sections) - {"name"} == set(objectives.registered())


def test_every_field_read_is_declared():
    """No ``config.get("x", default)`` for fields: every section read by the library is in
    configs/base.py, so a typo in an override is an error, not a silently ignored field."""
    import re
    pattern = re.compile(r"\b(?:config|model_config|eval_config)(?:\.\w+)?\.get\(")
    offenders = []
    for root, _, files in os.walk(os.path.join(REPO, "align_tf")):
        if root.endswith("convert"):
            continue  # reads HuggingFace's config.json, whose fields are not ours
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                for i, line in enumerate(open(path, encoding="utf-8"), 1):
                    if pattern.search(line):
                        offenders.append(f"{os.path.relpath(path, REPO)}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_batch_not_divisible_by_replicas():
    config = base.get_config()
    config.train.batch_size = 130
    with pytest.raises(trainer.ConfigError, match="not divisible by the 4 replicas"):
        trainer.validate_config(config, num_replicas=4)


@pytest.mark.parametrize("name", ["default", "paper", "align_base", "b3_small"])
def test_presets_load(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location("cfg", preset_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if name == "paper":
        assert (config.model.image_size_name, config.model.text_size_name) == ("l2", "large")
        assert (config.data.image_size, config.data.resize_size, config.data.max_tokens) == (289, 346, 64)
        assert config.train.batch_size == 16384 and config.train.steps == 1_200_000
        assert (config.optim.name, config.optim.learning_rate, config.optim.warmup_steps,
                config.optim.weight_decay) == ("lamb", 1e-3, 10_000, 1e-5)


def test_periodic_evaluation_writes_tensorboard(tmp_path):
    """``eval.every_steps``: the config's evaluators run on the model being trained and their
    flattened metrics land in TensorBoard under ``eval/`` at those steps."""
    import tensorflow as tf

    from test_scale import _scalar_events, _tiny_config
    config = _tiny_config(steps=4, steps_per_loop=4, log_every=4, checkpoint_every=4)
    config.eval.every_steps = 2
    config.eval.synthetic_examples_per_class = 2
    config.eval.synthetic_retrieval_rounds = 1
    trainer.train(config, str(tmp_path), tf.distribute.OneDeviceStrategy("/cpu:0"), verbose=0)
    top1 = _scalar_events(tmp_path / "train", "eval/synthetic/zeroshot/top1")
    assert [step for step, _ in top1] == [2, 4]  # the loop also stops at evaluation steps
    assert all(0.0 <= value <= 1.0 for _, value in top1)
    assert _scalar_events(tmp_path / "train", "eval/synthetic/retrieval/i2t_R@1")


def test_console_eval_lines_show_nested_metrics():
    """Nested results (shift styles, languages) get a line each; beyond ``most`` only the mean."""
    from align_tf.train import eval_lines
    metrics = {"num_pairs": 3.0, "mean": {"r1": 0.5}, **{f"l{i}": {"r1": i / 10} for i in range(3)}}
    assert list(eval_lines("eval x y", metrics)) == [
        "eval x y: num_pairs=3", "eval x y mean: r1=0.5", "eval x y l0: r1=0",
        "eval x y l1: r1=0.1", "eval x y l2: r1=0.2"]
    assert list(eval_lines("e", metrics, most=2)) == [
        "e: num_pairs=3", "e: 3 more in eval.json", "e mean: r1=0.5"]
