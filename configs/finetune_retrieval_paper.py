"""Fine-tuning preset: the paper's retrieval recipe (§5): the same loss, batch 2048, lr 1e-5
(Flickr30K: 3k steps; MSCOCO: 6k, set here), on MSCOCO's Karpathy train split (TFDS
coco_captions train + restval, prepared beforehand; one random caption per image per epoch, so
an image never meets itself as a negative), evaluated on the Karpathy 5k test images."""

from align_tf.configs import base


def get_config():
    c = base.get_config()
    c.finetune.task = "retrieval"
    c.data.name = "tfds:coco_captions/train+restval"
    c.train.batch_size = 2048
    c.train.steps = 6000
    c.train.steps_per_loop = 100
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.optim.learning_rate = 1e-5
    c.optim.warmup_steps = 0
    c.eval.evaluators = {"coco_captions_retrieval": {"type": "retrieval",
                                                     "dataset": "tfds:coco_captions"}}
    return c
