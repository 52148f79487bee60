"""A mid size for one GPU/TPU host: EfficientNet-B3 + BERT-small at 224 px, batch 1024."""

from align_tf.configs import paper


def get_config():
    c = paper.get_config()
    c.model.image_size_name = "b3"
    c.model.text_size_name = "small"
    c.data.vocab_size = 30522
    c.data.image_size = 224
    c.data.resize_size = 256
    c.train.batch_size = 1024
    c.train.steps = 200_000
    c.optim.warmup_steps = 5_000
    return c
