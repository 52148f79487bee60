"""LiteRT (TFLite) export: ``.tflite`` files for on-device and TF-free CPU embedding.

    python -m align_tf.export --format=litert --model_dir=RUN [--quantize=none|fp16|dynamic_int8]

writes ``RUN/litert/`` (or ``--output``):

* ``image_embed.tflite``: ``images`` float32 ``[B, H, W, 3]`` RGB in [0, 1], any ``H``/``W`` →
  ``embeddings`` ``[B, D]``, unit norm. The evaluation preprocessing is in the graph: the
  antialiased bilinear resize of ``tf.image.resize(antialias=True)`` (``ScaleAndTranslate``, not a
  LiteRT builtin) as two matmuls whose triangle-kernel weights are computed from the input size,
  then the centre crop, so it runs with builtin ops only;
* ``text_embed.tflite``: ``token_ids`` and ``padding_mask`` int32 ``[B, L]``, any ``L`` up to
  ``max_tokens`` → ``embeddings`` ``[B, D]``; a batch trimmed to its longest text costs less;
* ``vocab.txt`` and ``metadata.json`` (tensor names and shapes, sizes, temperature or scale and
  bias, prompt templates, tokenizer settings); ``align_tf.litert.tokenize`` is the tokenizer.

Each tower is converted from a concrete function that ``TFLiteConverter.from_concrete_functions``
freezes (``convert_variables_to_constants_v2``): no variable ops reach the files (converting the
SavedModel kept ``VAR_HANDLE`` / ``READ_VARIABLE`` and gave NaN for the nano tower).
``align_tf.litert.Embedder`` runs the files without TensorFlow; ``docs/on-device.md`` documents
them.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

QUANTIZE = ("none", "fp16", "dynamic_int8")
IMAGE_FILE, TEXT_FILE, VOCAB_FILE, METADATA_FILE = (
    "image_embed.tflite", "text_embed.tflite", "vocab.txt", "metadata.json")


def resize_weights(axis_pixels, out_size: int, first: int, count: int):
    """The ``[count, n]`` matrix of ``tf.image.resize(antialias=True)`` (bilinear) along one axis
    of ``n`` pixels resized to ``out_size``, rows ``first … first + count - 1`` only.

    ``axis_pixels`` is any float ``[n]`` slice along the axis: ``n`` comes from its *shape*
    (a cumulative sum of ones), never from a value-dependent ``range``, so LiteRT knows every
    shape once the input is sized and the towers after it keep static shapes. The weights are
    ``ScaleAndTranslate``'s: triangle kernel widened by the downscale factor, clamped to the
    image, each row normalised to sum 1.
    """
    ones = tf.ones_like(axis_pixels)
    source = tf.cumsum(ones) - 0.5  # pixel centres 0.5 … n - 0.5
    n = tf.reduce_sum(ones)
    inv_scale = 1.0 / (float(out_size) / n)
    kernel_scale = tf.maximum(inv_scale, 1.0)
    centres = tf.constant(np.arange(first, first + count, dtype=np.float32) + 0.5)
    sample = centres * inv_scale
    weights = tf.nn.relu(1.0 - tf.abs((source[None, :] - sample[:, None]) * (1.0 / kernel_scale)))
    return weights * (1.0 / tf.reduce_sum(weights, axis=1, keepdims=True))


def preprocess(images, image_size: int, resize_size: int | None):
    """``ImagePreprocessor(image_size, resize_size)``'s evaluation path in builtin-only ops: the
    resize (of the centre crop's rows and columns only) as ``Wh · image · Wwᵀ``; clipped to
    [0, 1] after a crop, as the layer does."""
    crops = bool(resize_size) and resize_size > image_size
    out = resize_size if crops else image_size
    first = (resize_size - image_size) // 2 if crops else 0
    wh = resize_weights(images[0, :, 0, 0], out, first, image_size)  # [S, H]
    ww = resize_weights(images[0, 0, :, 0], out, first, image_size)  # [S, W]
    x = tf.transpose(images, [0, 3, 2, 1])  # [B, C, W, H]
    x = tf.matmul(x, wh, transpose_b=True)  # [B, C, W, S]
    x = tf.matmul(ww, x)  # [B, C, S(w), S(h)]
    x = tf.transpose(x, [0, 3, 2, 1])  # [B, S(h), S(w), C]
    return tf.clip_by_value(x, 0.0, 1.0) if crops else x


def tower_functions(model, image_size: int, resize_size: int | None) -> dict:
    """``{"image": concrete function, "text": concrete function}`` of the two files."""
    image = tf.function(
        lambda images: {"embeddings": model.embed_image(
            preprocess(images, image_size, resize_size), training=False)},
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")],
        autograph=False)
    text = tf.function(
        lambda token_ids, padding_mask: {"embeddings": model.embed_text(
            {"token_ids": token_ids, "padding_mask": padding_mask,
             "segment_ids": tf.zeros_like(token_ids)}, training=False)},
        input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids"),
                         tf.TensorSpec([None, None], tf.int32, name="padding_mask")],
        autograph=False)
    return {"image": image.get_concrete_function(), "text": text.get_concrete_function()}


def convert(concrete, quantize: str = "none") -> bytes:
    """A concrete function → ``.tflite`` bytes: frozen, builtin ops only, optionally quantized
    (``fp16``: float16 weights; ``dynamic_int8``: int8 weights, activations quantized on the
    fly)."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}; got {quantize!r}")
    # No trackable_obj: the converter freezes the function (convert_variables_to_constants_v2)
    # instead of saving it as a SavedModel with its variables.
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # the trackable_obj deprecation, every call
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    finally:
        absl_logging.set_verbosity(level)


def _tensors(content: bytes) -> dict:
    """``{"inputs": [...], "outputs": [...]}`` of a converted file: tensor name, index, shape
    (-1: any) and dtype of each, as the plain interpreter reports them. (A frozen concrete
    function converts without a signature: inputs are found by name, the output is the one.)"""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=content)

    def describe(details):
        return [{"name": d["name"], "index": int(d["index"]),
                 "shape": [int(s) for s in d["shape_signature"]],
                 "dtype": np.dtype(d["dtype"]).name} for d in details]
    return {"inputs": describe(interpreter.get_input_details()),
            "outputs": describe(interpreter.get_output_details())}


def _logit_settings(model) -> dict:
    """The similarity and its learned scalars, as ``zero_shot_classify`` uses them."""
    if model.similarity == "sigmoid":
        t = float(np.exp(float(model.log_logit_scale.numpy())))
        return {"similarity": "sigmoid", "logit_scale": t,
                "logit_bias": float(model.logit_bias.numpy()),
                "logits": "logit_scale * cosine + logit_bias; sigmoid per class"}
    return {"similarity": "softmax", "temperature": float(model.clipped_temperature().numpy()),
            "logits": "cosine / temperature; softmax over classes"}


def export_litert(model, preprocessor, path: str, *, image_size: int,
                  resize_size: int | None = None, templates=("{}",), quantize: str = "none",
                  tokenizer_mode: str | None = None) -> str:
    """Writes ``image_embed.tflite``, ``text_embed.tflite``, ``vocab.txt`` and ``metadata.json``
    to ``path`` (see the module docstring); returns ``path``."""
    from align_tf.prompts import check_templates, get_templates
    from align_tf.tokenizer import MAX_CHARS_PER_WORD, save_vocabulary

    if isinstance(templates, str):
        templates = get_templates(templates)
    if not image_size:
        raise ValueError("the LiteRT export needs an image_size (the image tower's input side)")
    resize_size = int(resize_size) if resize_size else None
    os.makedirs(path, exist_ok=True)
    functions = tower_functions(model, int(image_size), resize_size)
    files = {}
    for name, filename in (("image", IMAGE_FILE), ("text", TEXT_FILE)):
        content = convert(functions[name], quantize)
        with open(os.path.join(path, filename), "wb") as f:
            f.write(content)
        files[name] = dict(file=filename, bytes=len(content), **_tensors(content))
    save_vocabulary(preprocessor.vocabulary, os.path.join(path, VOCAB_FILE))
    files["image"].update(image_size=int(image_size), resize_size=resize_size or 0,
                          pixels="float32 RGB in [0, 1] (uint8 / 255), any height and width")
    files["text"].update(max_tokens=preprocessor.sequence_length)
    metadata = {
        "format": "litert", "quantize": quantize,
        "embedding_dim": int(model.embedding_dim), **files, **_logit_settings(model),
        "prompt_templates": list(check_templates(templates)),
        "tokenizer": {"vocab": VOCAB_FILE, "mode": tokenizer_mode,
                      "lowercase": bool(preprocessor.lowercase),
                      "strip_accents": bool(preprocessor.lowercase
                                            if preprocessor.strip_accents is None
                                            else preprocessor.strip_accents),
                      "max_tokens": preprocessor.sequence_length,
                      "max_chars_per_word": MAX_CHARS_PER_WORD, "suffix_indicator": "##",
                      "reference": "align_tf.litert.tokenize"},
    }
    with open(os.path.join(path, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2, ensure_ascii=False)
    return path


def export_model_dir_litert(model_dir: str, output: str | None = None, quantize: str = "none",
                            templates=None, checkpoint: str | None = None,
                            image_size: int | None = None,
                            resize_size: int | None = None) -> str:
    """``python -m align_tf.export --format=litert``: the run's newest (or ``checkpoint``)
    weights → ``output`` (default ``{model_dir}/litert``); sizes and templates default to the
    config's, as the SavedModel export's."""
    from align_tf import run_dir
    from align_tf.export import config_export_kwargs

    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}; got {quantize!r}")
    model, preprocessor, config = run_dir.load_model(model_dir, checkpoint)
    given = {"templates": templates, "image_size": image_size or None}
    kwargs = {**config_export_kwargs(config), **{k: v for k, v in given.items() if v is not None}}
    if resize_size is not None:  # 0: resize only, no crop
        kwargs["resize_size"] = resize_size or None
    output = output or os.path.join(model_dir, "litert")
    return export_litert(model, preprocessor, output, quantize=quantize,
                         tokenizer_mode=config.data.tokenizer, **kwargs)


def main(flags) -> None:
    """The CLI's ``--format=litert`` branch (``align_tf.export.main`` checked the directory)."""
    import sys
    if flags.precision != "fp32":
        sys.exit("align_tf.export: error: --precision is for the SavedModel; use --quantize with "
                 "--format=litert")
    try:
        path = export_model_dir_litert(flags.model_dir, flags.output, flags.quantize,
                                       flags.templates, flags.checkpoint, flags.image_size,
                                       flags.resize_size)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"align_tf.export: error: {e}")
    print(f"exported LiteRT files to {path} ({IMAGE_FILE}, {TEXT_FILE}, {VOCAB_FILE}, "
          f"{METADATA_FILE}; quantize={flags.quantize})")
