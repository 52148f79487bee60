"""Every config field, with the embedded tiny CPU default values. Presets start from here."""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.image_size_name = "nano"   # align_tf.models.efficientnet.SIZES
    c.model.text_size_name = "tiny"    # align_tf.models.text_encoder.SIZES
    # Towers spelled out field by field (EfficientNetSize / BertSize as dicts); when set they win
    # over the size names. Written by align_tf.convert.hf_align for converted checkpoints.
    c.model.image_architecture = None
    c.model.text_architecture = None
    c.model.max_sequence_length = 32   # size of BERT's position table
    c.model.text_dropout = 0.0        # BERT: 0.1; the tiny synthetic run learns faster without
    c.model.drop_connect_rate = ml_collections.config_dict.placeholder(float)  # None: size's default
    c.model.sync_batch_norm = False    # BN statistics over the global batch (exact multi-replica)
    c.model.bn_momentum = 0.9          # Keras/ALIGN: 0.99, whose moving stats need ~1k steps to settle
    c.model.temperature_init = 1.0     # paper: σ learnable, initialised to 1.0
    c.model.label_smoothing = 0.1      # paper: 0.1
    # ALBEF's momentum distillation (ITC-MoD): soft targets from EMA towers, optional feature queue.
    c.model.momentum_distillation = False
    c.model.distillation_momentum = 0.995      # EMA momentum m (ALBEF: 0.995)
    c.model.distillation_alpha = 0.4           # weight α of the momentum soft targets (ALBEF: 0.4)
    c.model.distillation_alpha_ramp_steps = 256  # α ramps 0 → α linearly; ALBEF: the first epoch
    c.model.distillation_queue_size = 0        # queued momentum negatives; 0: none (ALBEF: 65536)

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"          # "synthetic" | "tfrecord"
    c.data.train_pattern = ""          # TFRecord glob for data.name == "tfrecord"
    c.data.vocab_path = ""             # "" with synthetic data: learned from the captions
    c.data.vocab_size = 2000
    c.data.max_tokens = 16             # paper: 64
    c.data.image_size = 48             # paper: 289
    c.data.resize_size = ml_collections.config_dict.placeholder(int)  # paper: 346 (random crop)
    c.data.num_train_examples = 16384  # synthetic only
    c.data.caption_noise = 0.2         # synthetic only: share of alt-text-like junk captions
    c.data.caption_partial = 0.3       # synthetic only: share naming only the colour or the shape
    c.data.synthetic_unnamed_colour = 0.3  # synthetic only: share of shapes in unnamed colours, shape-only captions
    c.data.synthetic_colour_only = 0.1     # synthetic only: share of named-colour shapeless strokes, colour-only captions
    c.data.synthetic_two_shapes = 0.35     # synthetic only: share of two-seen-pair images ("a red circle and a blue star")
    c.data.shuffle_buffer = 1024       # synthetic pairs are generated in random order already
    c.data.random_flip = True          # paper: random horizontal flip; off for bit-comparable runs

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64            # global batch = negatives per step; paper: 16384
    c.train.steps = 3000
    c.train.steps_per_loop = 10        # steps run inside one tf.function call
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3
    c.train.mixed_precision = False    # bf16 compute, float32 variables/embeddings/loss
    c.train.jit_compile = False
    c.train.max_consecutive_skips = 10  # non-finite steps are skipped; this many in a row stop the run

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "lamb"             # "lamb" | "adamw" | "sgd"
    c.optim.learning_rate = 5e-3       # paper: 1e-3
    c.optim.warmup_steps = 100         # paper: 10k
    c.optim.weight_decay = 1e-5        # paper: 1e-5

    c.eval = ml_collections.ConfigDict()
    c.eval.enabled = True
    c.eval.num_examples_per_class = 40  # synthetic zero-shot eval images per (colour, shape)

    c.export = ml_collections.ConfigDict()
    c.export.enabled = True
    return c
