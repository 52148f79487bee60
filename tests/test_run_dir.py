"""The run directory: one module writes and reads it, including directories written before the
objectives split (legacy config fields, the model-rooted checkpoint layout)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf import run_dir
from align_tf.configs import base
from align_tf.models.dual_encoder import build_dual_encoder
from align_tf.objectives.base import ObjectiveState

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "blue", "circle", "star"]


def _config():
    c = base.get_config()
    c.model.text_size_name = "nano"
    c.data.vocab_size = len(VOCAB)
    return c


def test_config_vocabulary_and_model_round_trip(tmp_path):
    config = _config()
    config.model.temperature_init = 0.5
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config.model, len(VOCAB))
    ckpt = run_dir.RunDir(str(tmp_path)).save_model(model, config, VOCAB)
    assert ckpt.endswith("ckpt-0")
    loaded, preprocessor, loaded_config = run_dir.load_model(str(tmp_path))
    assert loaded_config.to_dict() == config.to_dict()
    assert preprocessor.vocabulary == VOCAB
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_legacy_run_directory_loads(tmp_path):
    """A config.json and checkpoint as written before the objectives split: momentum fields in
    ``model``, ``eval.num_examples_per_class``, and the skip counters / momentum state stored as
    attributes of the model. Evaluation and export (``load_model``) read them."""
    config = _config()
    legacy = config.to_dict()
    del legacy["objective"]
    legacy["model"].update(momentum_distillation=True, distillation_alpha=0.3,
                           distillation_queue_size=128, label_smoothing=0.2)
    legacy["eval"] = {"enabled": True, "num_examples_per_class": 12}
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB))
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config.model, len(VOCAB))
    old = ObjectiveState()  # the old DualEncoder's attributes
    old.image_encoder, old.text_encoder, old.temperature = (
        model.image_encoder, model.text_encoder, model.temperature)
    old.skipped_steps = tf.Variable(2, dtype=tf.int64)
    old.image_queue = tf.Variable(tf.zeros([128, 80]))
    tf.train.Checkpoint(model=old).save(str(tmp_path / "checkpoints" / "ckpt"))

    migrated = run_dir.load_config(str(tmp_path))
    assert migrated.objective.name == "momentum_distillation"
    section = migrated.objective.momentum_distillation  # the objective sections nest since [house]
    assert (section.alpha, section.queue_size, section.label_smoothing) == (0.3, 128, 0.2)
    assert migrated.objective.albef.queue_size == 128  # every section that has the field
    assert migrated.objective.contrastive.label_smoothing == 0.2
    assert section.momentum == base.get_config().objective.momentum_distillation.momentum  # default
    assert "alpha" not in migrated.objective  # no flat field left
    assert "momentum_distillation" not in migrated.model
    assert migrated.eval.synthetic_examples_per_class == 12
    loaded, _, _ = run_dir.load_model(str(tmp_path))
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_missing_or_damaged_files_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json in"):
        run_dir.load_model(str(tmp_path))
    run = run_dir.RunDir(str(tmp_path))
    run.save_config(_config())
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        run_dir.load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        run_dir.load_config(str(tmp_path))


def test_checkpoint_layout_of_the_default_model_is_unchanged(tmp_path):
    """Checkpoints key the towers' variables by layer index (``_operations/11/...``), so adding,
    removing or reordering a layer would stop every earlier run directory and converted
    align-base checkpoint from restoring. The default model's keys and shapes equal the recorded
    ones (``golden/default_checkpoint_keys.json``, recorded before issue 21 made the stride-2
    pads part of the convolutions; the pad layers stay as identities for this)."""
    model = build_dual_encoder(base.get_config().model, 1000)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    keys = {name: shape for name, shape in tf.train.list_variables(path)
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    golden = os.path.join(os.path.dirname(__file__), "golden", "default_checkpoint_keys.json")
    with open(golden) as f:
        assert keys == json.load(f)
