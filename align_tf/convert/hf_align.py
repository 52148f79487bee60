"""Converts a HuggingFace transformers ``AlignModel`` directory (e.g. kakaobrain/align-base).

Examples:
  python -m align_tf.convert.hf_align --hf_dir=/data/align-base --output=/data/align_base_tf
  python -m align_tf.convert.hf_align --hf_dir=/data/align-base --output=/data/out --verify

Only local files are read (no network): ``config.json``, the weights (``model.safetensors``, a
sharded ``model.safetensors.index.json``, or ``pytorch_model.bin``), the tokenizer's ``vocab.txt``
(or ``tokenizer.json``, which is all transformers 5 saves) and, when present,
``preprocessor_config.json``. The output is laid out like a training
``model_dir``, so ``python -m align_tf.export --model_dir=OUTPUT`` works on it:

  OUTPUT/config.json        the align_tf config (towers spelled out in model.image_architecture /
                            model.text_architecture, so any HF width/depth/size is reproduced)
  OUTPUT/vocab.txt          the WordPiece vocabulary (our in-graph tokenizer matches HF's)
  OUTPUT/checkpoints/       ``tf.train.Checkpoint(model=...)``, incl. the learned temperature
  OUTPUT/savedmodel/        SavedModel with the export signatures
  OUTPUT/conversion.json    where it came from and which tensors were deliberately left out

Every tensor of the checkpoint must land in exactly one of our variables (with the layout
transposed as needed) and every variable of ours must receive one; anything else is an error.
The only tensors left out on purpose are HF's text pooler (``text_model.pooler.*``: ALIGN embeds
the [CLS] of the last hidden state, the pooler's output is unused) and bookkeeping buffers
(``num_batches_tracked``, ``position_ids``, ``token_type_ids``).
"""

from __future__ import annotations

import json
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Deliberately not copied: HF's BERT pooler (unused by AlignModel's embeddings and logits) and
# buffers that carry no learned state.
IGNORED = re.compile(r"^text_model\.pooler\.|(num_batches_tracked|position_ids|token_type_ids)$")

ALIGN_MAX_TOKENS = 64  # AlignProcessor pads/truncates to 64 tokens
ALIGN_IMAGE_SIZE, ALIGN_RESIZE_SIZE = 289, 346  # EfficientNetImageProcessor of align-base


class ConversionError(ValueError):
    """The HF checkpoint cannot be reproduced exactly by align_tf's model."""


# --------------------------------------------------------------------------------------- reading


def load_hf_config(hf_dir: str) -> dict:
    """``config.json`` of an ``AlignModel`` as a dict (``text_config``/``vision_config`` inside)."""
    path = os.path.join(hf_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No config.json in {hf_dir}")
    with open(path) as f:
        config = json.load(f)
    if config.get("model_type") != "align":
        raise ConversionError(f"{path}: model_type is {config.get('model_type')!r}, not 'align'")
    return config


def load_hf_state_dict(hf_dir: str) -> dict:
    """All tensors of the checkpoint as float32/int64 numpy arrays, keyed by HF name."""
    single = os.path.join(hf_dir, "model.safetensors")
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(single) or os.path.exists(index):
        if os.path.exists(single):
            files = [single]
        else:
            with open(index) as f:
                files = sorted({os.path.join(hf_dir, v) for v in json.load(f)["weight_map"].values()})
        from safetensors import safe_open
        state = {}
        for path in files:
            try:
                with safe_open(path, framework="np") as f:
                    state.update({k: f.get_tensor(k) for k in f.keys()})
            except (TypeError, ValueError):  # bfloat16 has no numpy dtype: go through torch
                state.update(_torch_to_numpy(_safetensors_torch(path)))
        return _as_float32(state)
    binary = os.path.join(hf_dir, "pytorch_model.bin")
    if os.path.exists(binary):
        import torch
        return _as_float32(_torch_to_numpy(torch.load(binary, map_location="cpu", weights_only=True)))
    raise FileNotFoundError(f"No model.safetensors(.index.json) or pytorch_model.bin in {hf_dir}")


def _safetensors_torch(path):
    from safetensors.torch import load_file
    return load_file(path)


def _torch_to_numpy(state):
    import torch
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def _as_float32(state):
    return {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
            for k, v in state.items()}


def load_hf_vocabulary(hf_dir: str) -> list:
    """The WordPiece vocabulary (bert-base-uncased for align-base), from ``vocab.txt`` or, as
    transformers 5 saves it, ``tokenizer.json``. Raises if the tokenizer is not BERT uncased."""
    from align_tf.tokenizer import load_vocabulary, RESERVED_TOKENS

    lowercase = True
    tok_config = os.path.join(hf_dir, "tokenizer_config.json")
    if os.path.exists(tok_config):
        with open(tok_config) as f:
            lowercase = json.load(f).get("do_lower_case", True)
    tok_json = os.path.join(hf_dir, "tokenizer.json")
    fast = None
    if os.path.exists(tok_json):
        with open(tok_json) as f:
            fast = json.load(f)
        lowercase = (fast.get("normalizer") or {}).get("lowercase", lowercase)
    if not lowercase:
        raise ConversionError(f"{hf_dir}: the tokenizer is cased; align_tf's is BERT uncased")
    if os.path.exists(os.path.join(hf_dir, "vocab.txt")):
        return load_vocabulary(os.path.join(hf_dir, "vocab.txt"))
    if fast is None:
        raise FileNotFoundError(f"No vocab.txt or tokenizer.json in {hf_dir}")
    model = fast.get("model") or {}
    if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != "##":
        raise ConversionError(f"{tok_json}: not a BERT WordPiece tokenizer")
    by_id = {i: token for token, i in model["vocab"].items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ConversionError(f"{tok_json}: vocabulary ids are not contiguous")
    vocab = [by_id[i] for i in range(len(by_id))]
    missing = [t for t in RESERVED_TOKENS[:4] if t not in vocab]
    if missing:
        raise ConversionError(f"{tok_json}: vocabulary lacks {missing}")
    return vocab


def _image_sizes(hf_dir: str) -> tuple:
    """(crop, resize) of the HF image processor; align-base's 289/346 when there is none."""
    path = os.path.join(hf_dir, "preprocessor_config.json")
    if not os.path.exists(path):
        return ALIGN_IMAGE_SIZE, ALIGN_RESIZE_SIZE
    with open(path) as f:
        proc = json.load(f)
    proc = proc.get("image_processor", proc)
    # Our towers take [0, 1] pixels and rescale to [-1, 1] inside (x/127.5 - 1 on 0..255).
    if proc.get("do_normalize") or not proc.get("rescale_offset", True) or \
            abs(proc.get("rescale_factor", 1 / 127.5) - 1 / 127.5) > 1e-9:
        raise ConversionError(f"{path}: expected pixels scaled by x/127.5 - 1 without mean/std "
                              "normalisation (ALIGN's); this processor differs")

    def side(entry, default):
        if isinstance(entry, dict):
            return int(entry.get("height", entry.get("shortest_edge", default)))
        return int(entry) if entry else default

    return side(proc.get("crop_size"), ALIGN_IMAGE_SIZE), side(proc.get("size"), ALIGN_RESIZE_SIZE)


# ------------------------------------------------------------------------------ architecture


def hf_architectures(hf_config: dict) -> tuple:
    """``(EfficientNetSize, BertSize)`` reproducing an HF ``AlignConfig`` (as a dict).

    Raises ``ConversionError`` for HF options our towers do not implement (max pooling, other
    activations, non-RGB input, other BatchNorm eps, relative positions, ...).
    """
    from align_tf.models.efficientnet import EfficientNetSize, round_filters
    from align_tf.models.text_encoder import BertSize

    vision, text = hf_config.get("vision_config") or {}, hf_config.get("text_config") or {}

    def get(cfg, key, default):
        value = cfg.get(key)
        return default if value is None else value

    def require(ok, what):
        if not ok:
            raise ConversionError(f"HF AlignConfig has {what}; align_tf cannot reproduce it exactly")

    require(get(vision, "num_channels", 3) == 3, f"num_channels={vision.get('num_channels')}")
    require(get(vision, "hidden_act", "swish") in ("swish", "silu"),
            f"vision hidden_act={vision.get('hidden_act')!r}")
    require(get(vision, "pooling_type", "mean") == "mean",
            f"pooling_type={vision.get('pooling_type')!r}")
    require(abs(get(vision, "batch_norm_eps", 1e-3) - 1e-3) < 1e-12,
            f"batch_norm_eps={vision.get('batch_norm_eps')}")
    require(get(text, "hidden_act", "gelu") == "gelu",  # exact erf GELU, like our encoder
            f"text hidden_act={text.get('hidden_act')!r}")
    require(get(text, "position_embedding_type", "absolute") == "absolute",
            f"position_embedding_type={text.get('position_embedding_type')!r}")
    hidden, heads = get(text, "hidden_size", 768), get(text, "num_attention_heads", 12)
    require(hidden % heads == 0, f"hidden_size {hidden} not divisible by {heads} heads")

    image = EfficientNetSize(
        width=float(get(vision, "width_coefficient", 2.0)),
        depth=float(get(vision, "depth_coefficient", 3.1)),
        resolution=int(np.atleast_1d(get(vision, "image_size", 600))[0]),
        drop_connect_rate=float(get(vision, "drop_connect_rate", 0.2)),
        depth_divisor=int(get(vision, "depth_divisor", 8)),
        se_ratio=float(get(vision, "squeeze_expansion_ratio", 0.25)),
        kernel_sizes=tuple(get(vision, "kernel_sizes", (3, 3, 5, 3, 5, 5, 3))),
        in_channels=tuple(get(vision, "in_channels", (32, 16, 24, 40, 80, 112, 192))),
        out_channels=tuple(get(vision, "out_channels", (16, 24, 40, 80, 112, 192, 320))),
        strides=tuple(get(vision, "strides", (1, 2, 2, 2, 1, 2, 1))),
        repeats=tuple(get(vision, "num_block_repeats", (1, 2, 2, 3, 3, 4, 1))),
        expand_ratios=tuple(get(vision, "expand_ratios", (1, 6, 6, 6, 6, 6, 6))),
        residual_on_stage_entry=False,  # HF adds no shortcut around a stage's first block
        symmetric_pad_blocks=tuple(get(vision, "depthwise_padding", ())),
    )
    bert = BertSize(
        num_layers=int(get(text, "num_hidden_layers", 12)), hidden_dim=int(hidden),
        num_heads=int(heads), intermediate_size=int(get(text, "intermediate_size", 4 * hidden)),
        num_segments=int(get(text, "type_vocab_size", 2)),
        layer_norm_epsilon=float(get(text, "layer_norm_eps", 1e-12)))
    width = round_filters(image.out_channels[-1], image.width, image.depth_divisor)
    projection = get(hf_config, "projection_dim", 640)
    # ALIGN has no image projection: HF's logits only work when the pooled width equals it.
    require(width == projection, f"projection_dim={projection} but image features are {width}-d")
    return image, bert


def _named(arch, sizes, key):
    return next((name for name, size in sizes.items() if key(size) == key(arch)), "custom")


def make_config(hf_config: dict, vocabulary_size: int, image_size: int = ALIGN_IMAGE_SIZE,
                resize_size: int = ALIGN_RESIZE_SIZE, max_tokens: int = ALIGN_MAX_TOKENS):
    """The align_tf config (``configs/align_base.py`` recipe) of a converted ``AlignModel``.

    The towers are spelled out in ``model.image_architecture`` / ``model.text_architecture``
    (``build_dual_encoder`` prefers them); ``image_size_name``/``text_size_name`` name the
    equivalent named size (``b7``/``base`` for align-base) or ``"custom"``.
    """
    from align_tf.configs import align_base
    from align_tf.models import efficientnet, text_encoder

    image, bert = hf_architectures(hf_config)
    text = hf_config.get("text_config") or {}
    config = align_base.get_config()
    m = config.model

    def image_key(s):  # what the built network depends on
        stem = efficientnet.round_filters(32, s.width, s.depth_divisor)
        return efficientnet.block_specs(s), s.se_ratio, stem, tuple(s.symmetric_pad_blocks)

    m.image_size_name = _named(image, efficientnet.SIZES, image_key)
    m.text_size_name = _named(bert, text_encoder.SIZES, lambda s: (
        s.num_layers, s.hidden_dim, s.num_heads, s.intermediate_dim, s.num_segments,
        s.layer_norm_epsilon))
    m.image_architecture = image.to_dict()
    m.text_architecture = bert.to_dict()
    m.max_sequence_length = int(text.get("max_position_embeddings") or 512)
    m.text_dropout = float(text.get("hidden_dropout_prob") or 0.0)
    m.drop_connect_rate = image.drop_connect_rate
    m.temperature_init = float(hf_config.get("temperature_init_value") or 1.0)
    config.data.vocab_path = ""  # the vocabulary lives in the model_dir
    config.data.vocab_size = int(vocabulary_size)
    config.data.max_tokens = int(max_tokens)
    config.data.image_size = int(image_size)
    config.data.resize_size = int(resize_size)
    return config


# ---------------------------------------------------------------------------------- weights


# Layouts: ``conv`` (O,I,kh,kw)→(kh,kw,I,O); ``dwconv`` (C,1,k,k)→(k,k,C,1);
# ``linear`` (O,I)→(I,O); ``same`` as is. Each is then reshaped to the variable's shape (attention kernels are
# (hidden, heads, head_dim) or (heads, head_dim, hidden)).


def _planner(encoder, prefix, plan):
    variables = {v.path: v for v in encoder.variables}

    def add(hf, path, layout):
        if path not in variables:
            raise ConversionError(f"align_tf model has no variable {path} (for {prefix}{hf})")
        plan.append((prefix + hf, variables[path], layout))
    return add, variables


def _image_weight_plan(image_encoder, prefix: str = "vision_model.") -> list:
    """``[(hf_name, variable, layout)]`` for our EfficientNet vs HF ``AlignVisionModel``."""
    plan = []
    add, variables = _planner(image_encoder, prefix, plan)

    def conv(hf, name, layout="conv", bias=False):
        add(hf + ".weight", name + "/kernel", layout)
        if bias:
            add(hf + ".bias", name + "/bias", "same")

    def bn(hf, name):
        for hf_key, ours in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            add(f"{hf}.{hf_key}", f"{name}/{ours}", "same")

    conv("embeddings.convolution", "stem_conv")
    bn("embeddings.batchnorm", "stem_bn")
    # HF block i is our i-th block in graph order ("block1a_", "block2a_", "block2b_", ...).
    blocks = [layer.name[:-len("dwconv")] for layer in image_encoder.layers
              if layer.name.endswith("_dwconv")]
    for i, n in enumerate(blocks):
        b = f"encoder.blocks.{i}."
        if n + "expand_conv/kernel" in variables:  # blocks with expand_ratio 1 have none
            conv(b + "expansion.expand_conv", n + "expand_conv")
            bn(b + "expansion.expand_bn", n + "expand_bn")
        conv(b + "depthwise_conv.depthwise_conv", n + "dwconv", layout="dwconv")
        bn(b + "depthwise_conv.depthwise_norm", n + "bn")
        conv(b + "squeeze_excite.reduce", n + "se_reduce", bias=True)
        conv(b + "squeeze_excite.expand", n + "se_expand", bias=True)
        conv(b + "projection.project_conv", n + "project_conv")
        bn(b + "projection.project_bn", n + "project_bn")
    return plan


def _text_weight_plan(text_encoder, prefix: str = "text_model.") -> list:
    """``[(hf_name, variable, layout)]`` for our BERT vs HF ``BertModel``/``AlignTextModel``
    (``text_projection``, if ours has one, is named as in ``AlignModel``)."""
    plan = []
    add, variables = _planner(text_encoder, prefix, plan)

    def dense(hf, path):
        add(hf + ".weight", path + "/kernel", "linear")
        add(hf + ".bias", path + "/bias", "same")

    def norm(hf, path):
        add(hf + ".weight", path + "/gamma", "same")
        add(hf + ".bias", path + "/beta", "same")

    add("embeddings.word_embeddings.weight", "token_embedding/embeddings", "same")
    add("embeddings.position_embeddings.weight", "position_embedding/embeddings", "same")
    add("embeddings.token_type_embeddings.weight", "segment_embedding/embeddings", "same")
    norm("embeddings.LayerNorm", "embeddings_layer_norm")
    layers = sorted({int(p.split("/")[0].rsplit("_", 1)[1]) for p in variables
                     if p.startswith("transformer_layer_")})
    for i in layers:
        h, k = f"encoder.layer.{i}.", f"transformer_layer_{i}/"
        for name in ("query", "key", "value"):
            dense(h + "attention.self." + name, k + "self_attention_layer/" + name)
        dense(h + "attention.output.dense", k + "self_attention_layer/attention_output")
        norm(h + "attention.output.LayerNorm", k + "self_attention_layer_norm")
        dense(h + "intermediate.dense", k + "feedforward_intermediate_dense")
        dense(h + "output.dense", k + "feedforward_output_dense")
        norm(h + "output.LayerNorm", k + "feedforward_layer_norm")
    if "text_projection/kernel" in variables:
        plan.append(("text_projection.weight", variables["text_projection/kernel"], "linear"))
        plan.append(("text_projection.bias", variables["text_projection/bias"], "same"))
    return plan


def _to_keras(array, layout, shape):
    if layout == "conv":
        array = array.transpose(2, 3, 1, 0)
    elif layout == "dwconv":
        array = array.transpose(2, 3, 0, 1)
    elif layout == "linear":
        array = array.T
    if array.size != int(np.prod(shape)):
        raise ConversionError(f"size mismatch: HF {array.shape} vs ours {tuple(shape)}")
    # Row-major reshape: HF's Linear output index is head * head_dim + d, as in our (heads, head_dim).
    return array.reshape(shape)


def _apply_plan(plan, state_dict: dict, variables, ignored=IGNORED) -> list:
    """Assigns ``plan`` from ``state_dict``; returns the names ``ignored`` deliberately.

    Raises ``ConversionError`` unless tensors and ``variables`` match one-to-one (dropout seed
    states and the trainer's step-skip counters aside) with equal sizes.
    """
    used = {hf for hf, _, _ in plan}
    missing = sorted(used - set(state_dict))
    unused = sorted(k for k in state_dict if k not in used and not ignored.search(k))
    planned = {id(var) for _, var, _ in plan}
    unfilled = sorted(var.path for var in variables
                      if id(var) not in planned and "seed_generator" not in var.path
                      and var.path.split("/")[-1] not in ("skipped_steps", "consecutive_skips"))
    if missing or unused or unfilled:
        raise ConversionError(
            "HF checkpoint and align_tf model do not match one-to-one:\n"
            f"  HF tensors with no align_tf variable: {unused}\n"
            f"  HF tensors that align_tf needs but the checkpoint lacks: {missing}\n"
            f"  align_tf variables not covered: {unfilled}")
    for hf, var, layout in plan:
        try:
            var.assign(_to_keras(np.asarray(state_dict[hf]), layout, tuple(var.shape)))
        except ConversionError as e:
            raise ConversionError(f"{hf} → {var.path}: {e}") from None
    return sorted(k for k in state_dict if k not in used)


def copy_hf_weights(model, state_dict: dict) -> list:
    """Assigns an HF ``AlignModel`` state dict to a ``DualEncoder`` built from ``make_config``.

    Returns the HF names deliberately ignored (``IGNORED``). Raises ``ConversionError`` if an HF
    tensor is unused, one of our weights gets no tensor, or any shape differs.
    """
    plan = (_image_weight_plan(model.image_encoder) + _text_weight_plan(model.text_encoder)
            + [("temperature", model.temperature, "same")])
    ignored = _apply_plan(plan, state_dict, model.variables)
    if float(model.temperature.numpy()) < model.min_temperature:
        raise ConversionError(f"temperature {float(model.temperature.numpy())} is below the "
                              f"model's min_temperature {model.min_temperature}")
    return ignored


def copy_hf_bert_weights(text_encoder, state_dict: dict, prefix: str = "") -> list:
    """Assigns an HF ``BertModel`` state dict (e.g. a sentence-transformers MiniLM) to our
    ``bert_text_encoder`` of the same size; same checks as ``copy_hf_weights``.

    ``prefix`` is the state-dict prefix of the BERT (``""`` for a bare ``BertModel``,
    ``"text_model."`` inside an ``AlignModel``). Returns the ignored names (pooler, buffers).
    """
    ignored = re.compile(r"^" + re.escape(prefix) + r"pooler\.|(position_ids|token_type_ids)$")
    return _apply_plan(_text_weight_plan(text_encoder, prefix), state_dict, text_encoder.variables,
                       ignored)


# -------------------------------------------------------------------------------- conversion


def convert(hf_dir: str, output: str, export: bool = True, export_dir: str | None = None,
            max_tokens: int = ALIGN_MAX_TOKENS, verbose: bool = True):
    """Converts the ``AlignModel`` in ``hf_dir`` into a model_dir at ``output``.

    Args:
      hf_dir: directory of a transformers ``AlignModel`` (``save_pretrained`` layout).
      output: model_dir to write (created; existing files are overwritten).
      export: also write a SavedModel.
      export_dir: SavedModel path; default ``{output}/savedmodel``.
      max_tokens: tokens per text, [CLS]/[SEP] included (AlignProcessor: 64).
      verbose: print what was written.

    Returns:
      ``(model, preprocessor, config)``.
    """
    import tensorflow as tf

    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.run_dir import RunDir
    from align_tf.tokenizer import TextPreprocessor

    hf_config = load_hf_config(hf_dir)
    vocabulary = load_hf_vocabulary(hf_dir)
    text_vocab = (hf_config.get("text_config") or {}).get("vocab_size") or 30522
    if len(vocabulary) != text_vocab:
        raise ConversionError(f"the tokenizer has {len(vocabulary)} tokens, the text config "
                              f"{text_vocab}")
    image_size, resize_size = _image_sizes(hf_dir)
    config = make_config(hf_config, len(vocabulary), image_size, resize_size, max_tokens)
    state = load_hf_state_dict(hf_dir)

    model = build_dual_encoder(config.model, config.data.vocab_size)
    ignored = copy_hf_weights(model, state)
    del state

    run = RunDir(output)
    ckpt = run.save_model(model, config, vocabulary)
    preprocessor = TextPreprocessor(run.vocab_path, sequence_length=config.data.max_tokens)
    saved = None
    if export:
        saved = export_model(model, preprocessor, export_dir or run.savedmodel_path,
                             config)
    with tf.io.gfile.GFile(os.path.join(output, "conversion.json"), "w") as f:
        json.dump({"source": os.path.abspath(hf_dir), "hf_config": hf_config,
                   "ignored_tensors": ignored, "checkpoint": ckpt, "savedmodel": saved,
                   "temperature": float(model.temperature.numpy())}, f, indent=2)
    if verbose:
        print(f"converted {hf_dir} → {output} (checkpoint {ckpt}"
              + (f", SavedModel {saved})" if saved else ")"))
    return model, preprocessor, config


def export_model(model, preprocessor, path: str, config) -> str:
    """Writes the SavedModel with all of ``align_tf.export``'s signatures; images are resized and
    centre-cropped inside as the checkpoint's processor does (align-base: 346 → 289)."""
    from align_tf import export
    return export.export_saved_model(model, preprocessor, path, config=config,
                                     **export.config_export_kwargs(config))


def verify_against_hf(hf_dir: str, model, preprocessor, image_size: int = 65, seed: int = 0) -> dict:
    """Max abs differences of embeddings and logits between HF (PyTorch) and ``model`` on random
    images and a few texts. Needs torch and transformers; used by ``--verify``."""
    import tensorflow as tf
    import torch
    from transformers import AlignModel, BertTokenizer

    hf = AlignModel.from_pretrained(hf_dir).eval()
    tokenizer = BertTokenizer.from_pretrained(hf_dir)
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(size=(2, image_size, image_size, 3)).astype(np.float32)
    texts = ["a photo of a cat", "Two dogs playing in the snow.", "東京タワー at night 🌃"]
    enc = tokenizer(texts, padding="max_length", truncation=True,
                    max_length=preprocessor.sequence_length, return_tensors="pt")
    with torch.no_grad():
        out = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                 token_type_ids=enc.get("token_type_ids"),
                 pixel_values=torch.from_numpy(2.0 * pixels - 1.0).permute(0, 3, 1, 2))
    tokens = preprocessor(tf.constant(texts))
    ours = model({"image": tf.constant(pixels), "text": tokens}, training=False)

    def diff(a, b):
        return float(np.abs(a.numpy() - b.numpy()).max())

    return {"token_ids_equal": bool(np.array_equal(tokens["token_ids"].numpy(),
                                                   enc["input_ids"].numpy())),
            "image_embeds": diff(ours["image_embeddings"], out.image_embeds),
            "text_embeds": diff(ours["text_embeddings"], out.text_embeds),
            "logits_per_image": diff(ours["logits_per_image"], out.logits_per_image)}


# -------------------------------------------------------------------------------------- CLI


def _define_flags():
    from absl import flags
    flags.DEFINE_string("hf_dir", None, "Directory of a transformers AlignModel (config.json, "
                        "model.safetensors or pytorch_model.bin, vocab.txt).", required=True)
    flags.DEFINE_string("output", None, "model_dir to write (config.json, vocab.txt, checkpoints/, "
                        "savedmodel/).", required=True)
    flags.DEFINE_bool("export", True, "Also write a SavedModel.")
    flags.DEFINE_string("export_dir", None, "SavedModel path; default {output}/savedmodel.")
    flags.DEFINE_integer("max_tokens", ALIGN_MAX_TOKENS,
                         "Tokens per text incl. [CLS]/[SEP] (AlignProcessor: 64).")
    flags.DEFINE_bool("verify", False, "Compare against the HF model in PyTorch afterwards "
                      "(needs torch and transformers).")
    return flags.FLAGS


def main(argv):
    from absl import flags
    del argv
    f = flags.FLAGS
    try:
        model, preprocessor, _ = convert(f.hf_dir, f.output, export=f.export,
                                         export_dir=f.export_dir, max_tokens=f.max_tokens)
    except (ConversionError, FileNotFoundError) as e:
        sys.exit(f"align_tf.convert.hf_align: error: {e}")
    if f.verify:
        diffs = verify_against_hf(f.hf_dir, model, preprocessor)
        print("max abs difference vs HF:", json.dumps(diffs))
        if not diffs["token_ids_equal"] or max(v for k, v in diffs.items()
                                               if k != "token_ids_equal") > 1e-4:
            sys.exit("align_tf.convert.hf_align: verification FAILED")


def run():
    """Console entry point (``align-convert``)."""
    from align_tf import cli
    _define_flags()
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
