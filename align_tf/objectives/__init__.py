"""Objectives: how a batch becomes gradients, picked by ``config.objective.name``.

| name | what | module |
| --- | --- | --- |
| ``contrastive`` | ALIGN's normalized softmax loss over the global batch (the paper, §4.1) | ``contrastive.py`` |
| ``momentum_distillation`` | ALIGN's loss with ALBEF's momentum-distillation soft targets and queue | ``momentum.py`` |
| ``sigmoid`` | SigLIP's pairwise sigmoid loss, chunked over replicas (``model.similarity = "sigmoid"``) | ``sigmoid.py`` |
| ``albef`` | ALBEF: ITC (momentum keys, optional MoD) + ITM with hard negatives + MLM (``model.fusion_layers > 0``) | ``albef.py`` |

``base.py`` holds what they share: the cross-replica gather and label offset (once), the gradient
all-reduce, the non-finite skip and its counters, and the optimizer update.

Each objective registers itself by name in its own module (``@register_objective``,
``registry.py``) with how it builds from its config section ``objective.<name>``, its own config
checks and what it needs from the model. A new objective is one module (imported below, or by the user's own code before
the config is validated) and its test.
"""

from __future__ import annotations

from align_tf.objectives.registry import ensure_section, get, model_similarity
from align_tf.objectives.registry import register_objective, registered
from align_tf.objectives.registry import supports_accumulation  # noqa: F401
from align_tf.objectives.base import Objective

# Imported in this order, they register in it: NAMES and the "choose from" messages list them so.
from align_tf.objectives.contrastive import ContrastiveObjective  # noqa: E402
from align_tf.objectives.momentum import MomentumDistillation  # noqa: E402
from align_tf.objectives.sigmoid import SigmoidObjective  # noqa: E402
from align_tf.objectives.albef import AlbefObjective, special_token_ids  # noqa: E402

__all__ = ["NAMES", "AlbefObjective", "ContrastiveObjective", "MomentumDistillation", "Objective",
           "SigmoidObjective", "build_objective", "ensure_section", "get", "model_similarity",
           "register_objective", "registered", "special_token_ids", "supports_accumulation"]


def __getattr__(attribute):
    if attribute == "NAMES":  # read at each use, so it includes objectives registered later
        from align_tf.objectives import registry
        return registry.names()
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


def build_objective(objective_config, model, optimizer, seed: int = 0,
                    vocab_path: str = "") -> Objective:
    """The objective named by ``objective_config.name`` (``config.objective``), for ``model``,
    built from its own section ``objective_config.<name>`` (``ensure_section``: a plug-in's
    defaults when the config lacks it).

    ``seed`` (``config.seed``) keys the towers' dropout and stochastic-depth streams
    (``Objective.seed``). Call inside the strategy's scope: objectives create variables
    (counters, momentum towers). ``vocab_path`` (``config.data.vocab_path``; empty: a vocabulary
    learned with the reserved tokens first) gives ``albef`` its special token ids. The class
    comes from the registry and builds itself (``Objective.from_config``).
    """
    section = ensure_section(objective_config)
    objective = get(objective_config.name).from_config(section, model, optimizer, seed=seed,
                                                       vocab_path=vocab_path)
    objective.seed = int(seed)
    return objective
