"""Plug-in points: a new kind of thing (objective, …) is one module that registers itself, and the
package picks it up by name from the config with no edit of its own."""

import numpy as np
import pytest
import tensorflow as tf

from align_tf import objectives, trainer
from align_tf.errors import check
from align_tf.objectives import registry
from align_tf.objectives.contrastive import ContrastiveObjective
from test_scale import _tiny_config

VOCAB = 200  # _tiny_config's data.vocab_size


class HalfContrastive(ContrastiveObjective):
    """A toy objective from outside the package: ALIGN's loss with the two directions averaged
    instead of summed (ALBEF's convention), and a check of its own."""

    scalars = ContrastiveObjective.scalars + ("half_loss",)
    built_from = None  # the objective_config of the last from_config (the test looks at it)

    @classmethod
    def from_config(cls, objective_config, model, optimizer, **context):
        cls.built_from = objective_config
        return cls(model, optimizer, label_smoothing=objective_config.label_smoothing)

    @classmethod
    def validate(cls, config):
        o = config.objective
        check(o.label_smoothing <= 0.5,
              f"objective.label_smoothing={o.label_smoothing} must be <= 0.5 for {o.name}")

    def loss_from_embeddings(self, batch, embeddings):
        out = super().loss_from_embeddings(batch, embeddings)
        half = 0.5 * out["loss"]
        return dict(out, loss=half, half_loss=tf.identity(half))


@pytest.fixture
def half_contrastive(monkeypatch):
    """``HalfContrastive`` registered as ``half_contrastive`` for one test (the registry is
    restored after it, so other tests see the package's objectives only)."""
    monkeypatch.setattr(registry, "_OBJECTIVES", dict(registry._OBJECTIVES))  # noqa: SLF001
    registry.register_objective("half_contrastive")(HalfContrastive)
    return "half_contrastive"


def test_objective_registered_outside_the_package_builds_validates_and_trains(half_contrastive):
    assert half_contrastive in objectives.NAMES  # NAMES is read from the registry
    assert objectives.supports_accumulation(half_contrastive)  # inherited from contrastive
    assert objectives.model_similarity(half_contrastive) == "softmax"
    config = _tiny_config(steps=10)
    config.objective.name = half_contrastive
    trainer.validate_config(config)

    # Its own check runs through validate_config; the shared flat field checks still run.
    config.objective.label_smoothing = 0.75
    with pytest.raises(trainer.ConfigError, match=r"^objective.label_smoothing=0.75 must be "
                                                  r"<= 0.5 for half_contrastive$"):
        trainer.validate_config(config)
    config.objective.label_smoothing = 0.0
    config.objective.alpha = 1.5
    with pytest.raises(trainer.ConfigError, match=r"objective.alpha=1.5 must be in \[0, 1\]"):
        trainer.validate_config(config)
    config.objective.alpha = 0.4

    # What trainer.train (the train CLI's function) does with it: validate_config above, then
    # trainer.build (build_objective from the registry), then train steps. Steps run eagerly on a
    # batch of random pairs: trainer.train's traced loop takes ~20-50 s on a shared CPU.
    model, objective = trainer.build(config, VOCAB)
    assert isinstance(objective, HalfContrastive) and objective.seed == config.seed
    assert HalfContrastive.built_from is config.objective
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(size=(8, 32, 32, 3)).astype(np.float32),
             "text": {"token_ids": rng.integers(5, VOCAB, (8, 16)).astype(np.int32),
                      "padding_mask": np.ones((8, 16), np.int32),
                      "segment_ids": np.zeros((8, 16), np.int32)}}
    objective.optimizer.iterations.assign(1)  # past step 0 of the warmup (learning rate 0)
    losses = []
    for _ in range(3):
        metrics = objective.train_step(batch)
        assert set(metrics) == set(objective.scalars)
        assert float(metrics["half_loss"]) == float(metrics["loss"])
        losses.append(float(metrics["loss"]))
    assert int(objective.optimizer.iterations.numpy()) == 4
    assert float(metrics["skipped_steps"]) == 0 and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]  # it trains


def test_registry_refuses_a_second_class_under_a_taken_name(monkeypatch):
    monkeypatch.setattr(registry, "_OBJECTIVES", dict(registry._OBJECTIVES))  # noqa: SLF001
    with pytest.raises(ValueError, match="'contrastive' is already registered by "
                                         "test_plugins.HalfContrastive|already registered"):
        registry.register_objective("contrastive")(HalfContrastive)
    with pytest.raises(ValueError, match=r"unknown objective.name 'nope'; choose from "
                                         r"\['contrastive', 'momentum_distillation', 'sigmoid', "
                                         r"'albef'\]"):
        objectives.get("nope")
