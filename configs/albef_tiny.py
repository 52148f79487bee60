"""ALBEF on CPU: the embedded default's towers with a 3-layer BERT-tiny split 2 + 1 (text + fusion).

``objective.name = "albef"``: ITC (momentum keys + queue, MoD) + ITM with hard negatives + MLM
(``align_tf/objectives/albef.py``). Same synthetic corpus, vocabulary and evaluation as ``default``.
"""

from align_tf.configs import base


def get_config():
    c = base.get_config()
    # BERT-tiny's width and heads with one layer more: 2 text layers (as the default's tower) and
    # 1 fusion layer with cross-attention to the image tokens.
    c.model.text_architecture = {"num_layers": 3, "hidden_dim": 128, "num_heads": 2}
    c.model.fusion_layers = 1
    c.objective.name = "albef"
    # ALBEF's temperature: learnable from 0.07, clamped to [0.001, 0.5] after every update.
    c.model.temperature_init = 0.07
    c.model.min_temperature = 0.001
    c.model.max_temperature = 0.5
    # From scratch, ALBEF's stop-gradient momentum keys stayed at chance in 300-800-step runs (the
    # random towers map every input to nearly one vector); online keys learn as ALIGN does.
    c.objective.albef.itc_keys = "online"
    c.objective.albef.momentum = 0.995
    # No MoD and no queue from scratch: the momentum model is an untrained copy for hundreds of
    # steps, and 40% of the targets from it (plus 256 stale queued negatives) kept ITC at chance
    # in 800-step runs (README, ALBEF section). Turn them on when starting from trained towers.
    c.objective.albef.alpha = 0.0
    c.objective.albef.queue_size = 0
    c.train.steps = 800
    for entry in c.eval.evaluators.values():  # eval.json also reports the ITC top-5 re-ranked by ITM
        entry.rerank_k = 5
    return c
