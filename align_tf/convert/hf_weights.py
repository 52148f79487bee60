"""HF ``AlignModel`` / ``BertModel`` tensors copied into align_tf's variables.

Every tensor of the checkpoint must land in exactly one of our variables (with the layout
transposed as needed) and every variable of ours must receive one; anything else is a
``ConversionError``. ``IGNORED`` names what is left out on purpose.
"""

from __future__ import annotations

import re

import numpy as np

from align_tf.convert import ConversionError

# Deliberately not copied: HF's BERT pooler (unused by AlignModel's embeddings and logits) and
# buffers that carry no learned state.
IGNORED = re.compile(r"^text_model\.pooler\.|(num_batches_tracked|position_ids|token_type_ids)$")


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
