"""Fine-tuning preset: the paper's VTAB classification recipe (§5): train/eval resolution 289/360,
batch 256, weight decay 1e-5, initial lr 1e-3 (the paper sweeps 1e-2 and 1e-3), cosine decay over
20k steps (after 500 warmup steps), BatchNorm statistics frozen."""

from align_tf.configs import base


def get_config():
    c = base.get_config()
    c.finetune.task = "classification"
    c.finetune.image_size = 289
    c.finetune.resize_size = 346
    c.finetune.eval_image_size = 360
    c.finetune.eval_resize_size = 431  # the training crop's ratio (346/289) at 360
    c.finetune.dataset = "tfds:cifar100"
    c.train.batch_size = 256
    c.train.steps = 20_000
    c.train.steps_per_loop = 100
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.optim.name = "adamw"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 500
    c.optim.schedule = "cosine"
    c.optim.weight_decay = 1e-5
    c.finetune.templates = "clip80"
    return c
