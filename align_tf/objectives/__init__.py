"""Objectives: how a batch becomes gradients, picked by ``config.objective.name``.

| name | what | module |
| --- | --- | --- |
| ``contrastive`` | ALIGN's normalized softmax loss over the global batch (the paper, §4.1) | ``contrastive.py`` |
| ``momentum_distillation`` | ALIGN's loss with ALBEF's momentum-distillation soft targets and queue | ``momentum.py`` |
| ``sigmoid`` | SigLIP's pairwise sigmoid loss, chunked over replicas (``model.similarity = "sigmoid"``) | ``sigmoid.py`` |

``base.py`` holds what they share: the cross-replica gather and label offset (once), the gradient
all-reduce, the non-finite skip and its counters, and the optimizer update.
"""

from __future__ import annotations

from align_tf.objectives.base import Objective
from align_tf.objectives.contrastive import ContrastiveObjective
from align_tf.objectives.momentum import MomentumDistillation
from align_tf.objectives.sigmoid import SigmoidObjective

NAMES = ("contrastive", "momentum_distillation", "sigmoid")


def build_objective(objective_config, model, optimizer, seed: int = 0) -> Objective:
    """The objective named by ``objective_config.name`` (``config.objective``), for ``model``.

    ``seed`` (``config.seed``) keys the towers' dropout and stochastic-depth streams
    (``Objective.seed``). Call inside the strategy's scope: objectives create variables
    (counters, momentum towers).
    """
    c = objective_config
    if c.name == "contrastive":
        objective = ContrastiveObjective(model, optimizer, label_smoothing=c.label_smoothing)
    elif c.name == "momentum_distillation":
        objective = MomentumDistillation(model, optimizer, label_smoothing=c.label_smoothing,
                                         momentum=c.momentum, alpha=c.alpha,
                                         alpha_ramp_steps=c.alpha_ramp_steps,
                                         queue_size=c.queue_size)
    elif c.name == "sigmoid":
        objective = SigmoidObjective(model, optimizer)
    else:
        raise ValueError(f"unknown objective.name {c.name!r}; choose from {list(NAMES)}")
    objective.seed = int(seed)
    return objective
