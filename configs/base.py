"""Every config field, with the embedded tiny CPU default values. Presets start from here."""

import ml_collections


def _momentum_section(**fields):
    """The momentum towers' and queue's fields (``momentum_distillation`` and ``albef``), then
    ``fields``."""
    section = ml_collections.ConfigDict()
    section.update(fields)
    section.momentum = 0.995         # EMA momentum m (ALBEF: 0.995)
    section.alpha = 0.4              # weight α of the momentum soft targets (ALBEF: 0.4)
    section.alpha_ramp_steps = 256   # α ramps 0 → α linearly; ALBEF: the first epoch
    section.queue_size = 0           # queued momentum negatives; 0: none (ALBEF: 65536)
    return section


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
    # Replicas whose batches share BatchNorm statistics: 0 each its own, -1 all (multi-replica then
    # equals one device on the global batch), k groups of k consecutive replicas (k divides the
    # replica count). Moving statistics always average every replica's.
    c.model.bn_group_size = 0
    c.model.bn_momentum = 0.9          # Keras/ALIGN: 0.99, whose moving stats need ~1k steps to settle
    # Rematerialise each EfficientNet block and BERT layer in the backward pass (gradient
    # checkpointing, align_tf/models/remat.py): same results, less activation memory, ~1 more forward.
    c.model.remat = False
    c.model.temperature_init = 1.0     # paper: σ learnable, initialised to 1.0
    # Bounds of the temperature, enforced on the parameter after every applied update (as CLIP and
    # ALBEF clamp theirs; the gradient keeps flowing at a bound): σ in [min, max] (ALBEF: [0.001,
    # 0.5]); for a sigmoid model t = 1/temperature, i.e. t <= 1/min_temperature (and, with
    # max_temperature, t >= 1/max_temperature).
    c.model.min_temperature = 1e-3     # > 0: σ never reaches 0 (the logits' factor <= 1000)
    c.model.max_temperature = ml_collections.config_dict.placeholder(float)  # None: no upper bound
    # How cosines become logits, i.e. the loss the model is trained with and what export's scores
    # mean. A model property, not just the objective's, because export and evaluation score with it
    # and need its parameters: "softmax" (ALIGN): logits = cos / σ, σ from temperature_init;
    # "sigmoid" (SigLIP, needs objective.name = "sigmoid"): logits = t·cos + b with learnable
    # t = exp(t′) and b (no σ then), each pair scored independently.
    c.model.similarity = "softmax"
    c.model.logit_scale_init = 10.0    # sigmoid only: initial t (SigLIP: t′ = log 10)
    c.model.logit_bias_init = -10.0    # sigmoid only: initial b (SigLIP: -10)
    # ALBEF (objective.name = "albef"): the last k BERT layers become the multimodal (fusion)
    # encoder, each with cross-attention to the image tokens (the EfficientNet's last feature map,
    # projected to the text width); the first L - k stay the text tower. 0: no fusion encoder
    # (a plain dual encoder). ALBEF: 6 of BERT-base's 12.
    c.model.fusion_layers = 0

    # How a batch becomes gradients (align_tf/objectives/). Parameters export needs (σ) stay in model.
    # objective.name picks the objective; each has its own section objective.<name> with exactly
    # the fields it reads (its class's config_fields; an objective registered outside the package
    # brings its section as the class's `defaults`).
    c.objective = ml_collections.ConfigDict()
    # "contrastive" (the paper) | "momentum_distillation" | "sigmoid" (SigLIP's pairwise sigmoid
    # loss, chunked over replicas; needs model.similarity = "sigmoid") | "albef" (needs
    # model.fusion_layers > 0)
    c.objective.name = "contrastive"
    c.objective.contrastive = ml_collections.ConfigDict()
    c.objective.contrastive.label_smoothing = 0.1  # paper: 0.1
    # ALIGN's loss with ALBEF's ITC-MoD: soft targets from EMA towers, optional queue.
    c.objective.momentum_distillation = _momentum_section(label_smoothing=0.1)
    c.objective.sigmoid = ml_collections.ConfigDict()  # t′ and b are model.* fields
    # ALBEF: ITC-MoD (alpha = 0: plain ITC against the momentum keys) + ITM + MLM; the total loss
    # is the weighted sum of the three.
    c.objective.albef = _momentum_section()
    albef = c.objective.albef
    albef.itc_weight = 1.0         # image-text contrastive loss on the unimodal embeddings
    albef.itm_weight = 1.0         # image-text matching on the fusion [CLS], hard negatives
    albef.mlm_weight = 1.0         # masked language modelling by the fusion encoder
    albef.itm_negatives = "local"  # hard negatives from "local" (ALBEF: the replica's batch) or
    #                                "global" (BLIP: the global batch) candidates
    albef.mlm_probability = 0.15   # share of text tokens masked (80% [MASK] / 10% random / 10% kept)
    # ITC logits' keys: "momentum" (ALBEF: the momentum towers' features, no gradient) or "online"
    # (the replica's online embeddings with gradient, as ALIGN; for training from scratch)
    albef.itc_keys = "momentum"

    c.data = ml_collections.ConfigDict()
    # Training source, spelt as eval.datasets and --dataset spell it (align_tf.data.sources):
    # "synthetic" (built-in corpus) | "tfrecord:GLOB" (our shards; a comma list of globs works) |
    # "img2dataset_tfrecord:GLOB" (img2dataset's TFRecords as they are) | "tfds:NAME[/split]"
    # (a prepared TFDS caption set: tfds:coco_captions/train+restval; split default train; one
    # random caption per image/epoch) | a source registered by a plug-in (--plugins)
    c.data.name = "synthetic"
    c.data.train_pattern = ""          # deprecated: name "tfrecord" + this glob → "tfrecord:GLOB"
    c.data.tfds_split = "train"        # deprecated: "tfds:NAME" + this split → "tfds:NAME/split"
    c.data.tfds_data_dir = ""          # tfds:NAME only: TFDS data directory ("": TFDS's default)
    c.data.vocab_path = ""             # "" with synthetic data: learned from the captions
    c.data.vocab_size = 2000
    c.data.max_tokens = 16             # paper: 64
    # Text normalisation (align_tf.tokenizer.MODES), the same in vocabulary learning, training,
    # evaluation and the exported text_embed: "uncased" (BERT uncased: lowercase, strip accents;
    # English), "multilingual" (lowercase, keep accents: stripping breaks Devanagari, Arabic, kana),
    # "cased". CJK ideographs are split one per token in every mode.
    c.data.tokenizer = "uncased"
    c.data.image_size = 48             # paper: 289
    c.data.resize_size = ml_collections.config_dict.placeholder(int)  # paper: 346 (random crop)
    c.data.num_train_examples = 16384  # synthetic only
    c.data.caption_noise = 0.2         # synthetic only: share of alt-text-like junk captions
    c.data.caption_partial = 0.3       # synthetic only: share naming only the colour or the shape
    c.data.synthetic_unnamed_colour = 0.3  # synthetic only: share of shapes in unnamed colours, shape-only captions
    c.data.synthetic_colour_only = 0.1     # synthetic only: share of named-colour shapeless strokes, colour-only captions
    c.data.synthetic_two_shapes = 0.35     # synthetic only: share of two-seen-pair images ("a red circle and a blue star")
    c.data.synthetic_variety = 0.0         # synthetic only: share of images drawn varied (synthetic.render(varied=True))
    # synthetic only: captions in several languages (align_tf/data/languages/, docs/multilingual.md):
    # "" the English corpus; "all" or a comma list of codes of en de fr cs es ru zh ja ar hi
    c.data.synthetic_languages = ""
    c.data.synthetic_language_mix = ""   # "en:2,de:1": relative weights of the languages ("": equal)
    c.data.synthetic_language_only = ""  # "red circle=en;blue star=de+fr": these classes in these only
    c.data.shuffle_buffer = 1024       # TFRecord records (synthetic: a full permutation per epoch)
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
    # K > 1: each replica's batch runs as K sub-batches with exact gradients of the whole global
    # batch (GradCache: embeddings first, loss once, towers again; align_tf/objectives/
    # accumulation.py). BatchNorm statistics then come from sub-batches of batch_size / (replicas·K).
    c.train.accumulation_steps = 1

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "lamb"             # "lamb" | "adamw" | "sgd"
    c.optim.learning_rate = 5e-3       # paper: 1e-3
    c.optim.warmup_steps = 100         # paper: 10k
    c.optim.schedule = "linear"        # after warmup: "linear" decay to 0 (paper) | "cosine" (VTAB fine-tuning)
    c.optim.weight_decay = 1e-5        # paper: 1e-5

    # Evaluation (align_tf.evaluation.runner): the evaluators, each named, with its type
    # (align_tf/evaluation/registry.py: retrieval, zeroshot, knn, linear, intramodal, correlation,
    # cxc_retrieval (docs/evaluation.md); auto = what the dataset
    # supports without a fit split), its dataset (a source spec, align_tf.data.sources) and its
    # own fields (the type's `defaults`; any source option below may be overridden per entry).
    # `python -m align_tf.evaluate` has a flag for every field (applied to each entry that has
    # it) and --datasets/--tasks for their cross product; a flag not given takes the run's
    # config.json value, so the command reproduces RUN/eval.json.
    placeholder = ml_collections.config_dict.placeholder
    c.eval = ml_collections.ConfigDict()
    c.eval.enabled = True              # evaluate at the end of training → RUN/eval.json
    c.eval.every_steps = 0             # also every this many steps → TensorBoard eval/; 0: end only
    c.eval.batch_size = 256            # images or texts embedded per call
    c.eval.evaluators = ml_collections.ConfigDict({
        "synthetic_retrieval": {"type": "retrieval", "dataset": "synthetic",
                                "recall_ks": "1,5,10",     # Recall@K
                                "captions_per_image": 5,   # MSCOCO/Flickr30K: 5; 0: all
                                "block_size": 512,         # queries scored at once (memory only)
                                "faiss": False,            # R@K with faiss (no ranks)
                                "rerank_k": 0},            # ALBEF: ITM re-ranks the ITC top-K
        "synthetic_zeroshot": {"type": "zeroshot", "dataset": "synthetic",
                               "templates": "auto",        # align_tf.prompts; auto: the
                               #                             dataset's own, else clip80
                               "rerank_k": 0},
        # image→image over the zero-shot images (positives: the others of the class) and
        # text→text over clean captions (align_tf/evaluation/intra_modal.py)
        "synthetic_retrieval_intramodal": {"type": "intramodal", "dataset": "synthetic",
                                           "recall_ks": "1,5,10",
                                           "captions_per_class": 8},  # text→text, per class
        # SITS/STS/SIS Spearman's R on rated pairs with a known ground truth
        # (align_tf/data/synthetic_similarity.py, align_tf/evaluation/correlation.py)
        "synthetic_similarity": {"type": "correlation", "dataset": "synthetic",
                                 "bootstrap_samples": 1000,  # resamples of the pairs
                                 "bootstrap_size": 0,        # pairs per resample; 0: all
                                 "bootstrap_seed": 0,
                                 "similarity_pairs": 400},   # rated pairs per task
    })
    # Source options: what data an evaluator reads (defaults of every entry).
    c.eval.max_examples = placeholder(int)        # images evaluated per dataset; None: all
    c.eval.split = placeholder(str)               # TFDS split; None: test, else validation
    c.eval.train_split = placeholder(str)         # kNN/linear probe fit split; None: train
    c.eval.max_train_examples = placeholder(int)  # kNN/linear probe fit images; None: all
    c.eval.data_dir = placeholder(str)            # TFDS data_dir; None: TFDS's default
    # The synthetic dataset: fresh seeded renders of all 30 (colour, shape) classes; zero-shot is
    # also reported over the held-out and the seen pairs.
    c.eval.synthetic_examples_per_class = 40  # zero-shot images per class (kNN/probe: as many)
    c.eval.synthetic_retrieval_rounds = 4     # retrieval galleries of one image per class
    c.eval.synthetic_seed = 20_000     # test images; kNN/probe fit images seed+1, retrieval seed+2

    c.export = ml_collections.ConfigDict()
    c.export.enabled = True            # write RUN/savedmodel after training
    c.export.templates = "clip80"      # prompts baked into zero_shot_classify (align_tf.prompts)

    # Fine-tuning from a run directory (python -m align_tf.finetune, presets configs/finetune_*.py;
    # align_tf.train ignores this section). The model section, the vocabulary and (retrieval) the
    # objective come from the --init run; classification trains on the evaluation's fit split
    # (eval.train_split, eval.max_train_examples; synthetic: the linear probe's images) and is
    # scored on its test split, as the linear probe is.
    c.finetune = ml_collections.ConfigDict()
    c.finetune.task = ""               # "classification" | "lit" | "retrieval" (--task)
    c.finetune.init = ""               # the run directory the weights start from (--init)
    c.finetune.dataset = "synthetic"   # classification: "synthetic" (the 30 colour/shape classes)
    #                                    or a TFDS set with an image and a class label (cifar10)
    c.finetune.head_init = "zeroshot"  # classification head: "zeroshot" (the init's prompt-ensembled
    #                                    class embeddings / σ: step 0 = zero-shot) | "zeros"
    c.finetune.label_smoothing = 0.0   # classification cross-entropy
    c.finetune.templates = "auto"      # classification head_init=zeroshot: its prompts (align_tf.prompts)
    c.finetune.text_tower = "fresh"    # lit: "fresh" (a new text tower) | "init" (the init run's)
    # retrieval: "" trains with the --init run's objective; a name (e.g. "sigmoid") trains the
    # --init towers with that one (and the model.similarity it needs; new similarity parameters
    # start from the model.* inits), e.g. SigLIP's loss on converted align-base weights.
    c.finetune.objective = ""
    c.finetune.shuffle_buffer = 10000  # classification: training examples shuffled at once
    # Image sizes; None: the init run's data.image_size / data.resize_size.
    c.finetune.image_size = placeholder(int)        # training crop (VTAB: 289)
    c.finetune.resize_size = placeholder(int)       # resize before the training crop
    c.finetune.eval_image_size = placeholder(int)   # classification evaluation/export crop (VTAB: 360)
    c.finetune.eval_resize_size = placeholder(int)  # resize before that crop (None: resize only)
    return c
