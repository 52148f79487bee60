"""Fine-tuning preset: classification on the CPU scale of the embedded default (synthetic classes).

The image tower of --init plus a linear head started from the zero-shot classifier, every weight
trained with BatchNorm statistics frozen (align_tf.models.classifier), on the linear probe's
1200 labelled images (40 per class), scored on the zero-shot test images.
"""

from align_tf.configs import base


def get_config():
    c = base.get_config()
    c.finetune.task = "classification"
    c.train.batch_size = 64
    c.train.steps = 300
    c.train.log_every = 50
    c.train.checkpoint_every = 100
    c.optim.name = "adamw"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 30
    c.optim.weight_decay = 1e-5
    return c
