"""Run directories written before [house] (flat ``objective.*`` fields in config.json) still
evaluate, export and resume, through the functions the evaluate, export and train commands call.

``fixtures/run_before_house/``: a 4-step default run written by a85540e (config.json, vocab.txt,
checkpoints/ckpt-4) and albef_tiny's config.json of the same release. The fixture is copied to a
temporary directory first and never written to. Its export (what ``python -m align_tf.export
--model_dir=OLD_RUN`` writes, loaded through ``hub.load``) is
``test_plugins.test_signature_registered_outside_the_package_is_served_through_hub_load``, which
exports this fixture once for both checks.
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from align_tf import run_dir, trainer

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "run_before_house")


def _copy(tmp_path) -> str:
    path = str(tmp_path / "run")
    shutil.copytree(FIXTURE, path, ignore=shutil.ignore_patterns("albef_tiny_config.json"))
    return path


def test_old_albef_config_json_migrates_to_the_nested_sections():
    """Each flat field goes to the section of every objective that has it, with its value."""
    from align_tf import migrate
    with open(os.path.join(FIXTURE, "albef_tiny_config.json")) as f:
        old = json.load(f)
    config = migrate.config_json(old)
    o = config.objective
    assert o.name == "albef"
    flat = {k: v for k, v in old["objective"].items() if k != "name"}
    for field, value in flat.items():
        sections = migrate.objective_sections(field)
        assert sections, field  # every old field has a home
        assert all(o[name][field] == value for name in sections), field
        assert field not in o  # nothing stays flat
    assert (o.albef.itc_keys, o.albef.alpha, o.albef.queue_size) == ("online", 0.0, 0)
    assert o.contrastive.label_smoothing == 0.0  # albef reads none; contrastive's took it
    assert config.model.fusion_layers == 1 and config.model.max_temperature == 0.5
    trainer.validate_config(config)  # it runs as it is


def test_old_run_evaluates(tmp_path):
    """What ``python -m align_tf.evaluate --model_dir=OLD_RUN`` computes, from the old config's
    (small) eval fields."""
    from align_tf import evaluate
    report = evaluate.evaluate(model_dir=_copy(tmp_path))
    results = report["results"]["synthetic"]
    assert {"zeroshot", "retrieval"} <= set(results)
    assert 0.0 <= results["zeroshot"]["top1"] <= 1.0


def test_old_run_resumes_from_its_checkpoint(tmp_path):
    """``python -m align_tf.train --model_dir=OLD_RUN --train_steps=6``: restores ckpt-4 (the
    weights are the checkpoint's when training resumes) and trains on to step 6. ~25 s on 2
    quiet cores, nearly all of it tracing the training loop (``TrainLoop``)."""
    model_dir = _copy(tmp_path)
    expected, _, _ = run_dir.load_model(model_dir)  # ckpt-4's model weights
    expected = [w.numpy() for w in expected.weights]
    config = run_dir.load_config(model_dir)
    config.train.steps = 6  # what --train_steps=6 sets
    # Fewer synthetic pairs to render (7 s of 16384 on a busy CPU): another stream, the same
    # restore. The model's fields, which the checkpoint must match, are the old config's.
    config.data.num_train_examples = 512
    built, seen = {}, {}

    def build(config, vocabulary_size):
        built["model"], built["objective"] = trainer.build(config, vocabulary_size)
        return built["model"], built["objective"]

    def wrap_inputs(dataset, input_context, first_batch):
        # Called once the checkpoint is restored, before the first step.
        seen["first_batch"] = first_batch
        seen["weights"] = [w.numpy() for w in built["model"].weights]
        return dataset

    result = trainer.train(config, model_dir, verbose=0, wrap_inputs=wrap_inputs,
                           hooks=trainer.TrainHooks(build=build))
    assert seen["first_batch"] == 4  # the stream goes on after the 4 batches ckpt-4 trained on
    assert len(seen["weights"]) == len(expected)
    for restored, saved in zip(seen["weights"], expected):
        np.testing.assert_array_equal(restored, saved)
    assert int(result.objective.optimizer.iterations.numpy()) == 6
    assert run_dir.RunDir(model_dir).latest_checkpoint().endswith("ckpt-6")
    saved = json.loads(open(os.path.join(model_dir, "config.json")).read())
    assert "label_smoothing" not in saved["objective"]  # config.json is rewritten nested
    assert saved["objective"]["contrastive"]["label_smoothing"] == 0.1


@pytest.mark.parametrize("name", ["config.json", "checkpoints/ckpt-4.index"])
def test_the_fixture_is_untouched(name):
    """The tests above work on copies (the fixture must keep the old layout)."""
    assert os.path.exists(os.path.join(FIXTURE, name))
    if name == "config.json":
        with open(os.path.join(FIXTURE, name)) as f:
            assert "label_smoothing" in json.load(f)["objective"]
