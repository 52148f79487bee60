"""Fine-tuning preset: retrieval (both towers, the --init run's loss) on the CPU scale of the
embedded default; pass --dataset=tfrecord:GLOB for your own caption shards."""

from align_tf.configs import base


def get_config():
    c = base.get_config()
    c.finetune.task = "retrieval"
    c.train.steps = 300
    c.train.checkpoint_every = 100
    c.optim.learning_rate = 1e-4
    c.optim.warmup_steps = 30
    return c
