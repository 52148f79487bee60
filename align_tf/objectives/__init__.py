"""Objectives: how a batch becomes gradients, picked by ``config.objective.name``.

| name | what | module |
| --- | --- | --- |
| ``contrastive`` | ALIGN's normalized softmax loss over the global batch (the paper, §4.1) | ``contrastive.py`` |
| ``momentum_distillation`` | ALIGN's loss with ALBEF's momentum-distillation soft targets and queue | ``momentum.py`` |
| ``sigmoid`` | SigLIP's pairwise sigmoid loss, chunked over replicas (``model.similarity = "sigmoid"``) | ``sigmoid.py`` |
| ``albef`` | ALBEF: ITC (momentum keys, optional MoD) + ITM with hard negatives + MLM (``model.fusion_layers > 0``) | ``albef.py`` |

``base.py`` holds what they share: the cross-replica gather and label offset (once), the gradient
all-reduce, the non-finite skip and its counters, and the optimizer update.
"""

from __future__ import annotations

from align_tf.objectives.albef import AlbefObjective, special_token_ids
from align_tf.objectives.base import Objective
from align_tf.objectives.contrastive import ContrastiveObjective
from align_tf.objectives.momentum import MomentumDistillation
from align_tf.objectives.sigmoid import SigmoidObjective

NAMES = ("contrastive", "momentum_distillation", "sigmoid", "albef")


def build_objective(objective_config, model, optimizer, seed: int = 0,
                    vocab_path: str = "") -> Objective:
    """The objective named by ``objective_config.name`` (``config.objective``), for ``model``.

    ``seed`` (``config.seed``) keys the towers' dropout and stochastic-depth streams
    (``Objective.seed``). Call inside the strategy's scope: objectives create variables
    (counters, momentum towers). ``vocab_path`` (``config.data.vocab_path``; empty: a vocabulary
    learned with the reserved tokens first) gives ``albef`` its special token ids.
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
    elif c.name == "albef":
        objective = AlbefObjective(
            model, optimizer, itc_weight=c.itc_weight, itm_weight=c.itm_weight,
            mlm_weight=c.mlm_weight, itm_negatives=c.itm_negatives,
            mlm_probability=c.mlm_probability, momentum=c.momentum, alpha=c.alpha,
            alpha_ramp_steps=c.alpha_ramp_steps, queue_size=c.queue_size,
            special_tokens=special_token_ids(vocab_path), itc_keys=c.itc_keys)
    else:
        raise ValueError(f"unknown objective.name {c.name!r}; choose from {list(NAMES)}")
    objective.seed = int(seed)
    return objective


def supports_accumulation(name: str) -> bool:
    """Whether objective ``name`` can run a step as sub-batches (``train.accumulation_steps > 1``):
    its loss depends on the batch only through the embeddings (``Objective.supports_accumulation``)."""
    classes = {"contrastive": ContrastiveObjective, "momentum_distillation": MomentumDistillation,
               "sigmoid": SigmoidObjective}
    return name in classes and classes[name].supports_accumulation
