"""The paper's recipe (§5): EfficientNet-L2 + BERT-Large, 289 crops of 346, 64 tokens, LAMB,
lr 1e-3 with 10k warmup and linear decay over 1.2M steps, global batch 16384 (1024 TPUv3 cores)."""

from align_tf.configs import base


def get_config():
    c = base.get_config()
    c.model.image_size_name = "l2"
    c.model.text_size_name = "large"
    c.model.max_sequence_length = 512
    c.model.text_dropout = 0.1
    c.model.bn_momentum = 0.99
    # BN batch statistics over groups of 16 cores: 256 images at the paper's 16 per core, instead of
    # 16 (noisy, and far from the inference-time statistics). The EfficientNet TPU reference
    # (TpuBatchNormalization) likewise normalises over groups of at least 8 cores on slices above 8
    # (max(8, cores / 8)). Groups keep each BN layer's collective, on the critical path forward and
    # backward, small; 16 divides every slice from 16 cores up (paper: 1024, align_base: 256).
    c.model.bn_group_size = 16
    c.data.name = "tfrecord:gs://YOUR_BUCKET/align/train-*.tfrecord"
    c.data.vocab_path = "gs://YOUR_BUCKET/align/vocab.txt"  # 100k WordPiece from the corpus
    c.data.vocab_size = 100_000
    c.data.max_tokens = 64
    c.data.image_size = 289
    c.data.resize_size = 346
    c.data.shuffle_buffer = 100_000
    c.train.batch_size = 16384
    c.train.steps = 1_200_000
    c.train.steps_per_loop = 100
    c.train.log_every = 1000
    c.train.checkpoint_every = 5000
    c.train.mixed_precision = True
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 10_000
    c.optim.weight_decay = 1e-5
    c.eval.enabled = False
    return c
