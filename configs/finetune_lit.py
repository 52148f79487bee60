"""Fine-tuning preset: LiT (locked image tower, text tower trained) on the CPU scale of the
embedded default: a fresh text tower on the synthetic corpus, the contrastive loss."""

from align_tf.configs import base


def get_config():
    c = base.get_config()
    c.finetune.task = "lit"
    c.finetune.text_tower = "fresh"
    c.train.steps = 1500
    return c
