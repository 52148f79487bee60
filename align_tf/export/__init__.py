"""SavedModel / TF Hub export of a trained dual encoder, with signatures on raw inputs.

Command line: rebuilds the model from a training ``model_dir`` (``config.json``, ``vocab.txt``),
restores the newest checkpoint (model weights only) and writes the SavedModel::

    python -m align_tf.export --model_dir=align_runs/default --output=/tmp/align_savedmodel \
        [--templates=clip80|clip7|simple|none]

``python -m align_tf.train`` ends with the same ``export_saved_model`` call. The SavedModel
carries the image preprocessing, the tokenizer and its vocabulary, so a consumer needs only ``tensorflow``, ``tensorflow_text`` (``import tensorflow_text`` registers the tokenizer
ops *before* loading) and optionally ``tensorflow_hub`` -- never align_tf or keras-hub::

    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the ops text_embed uses)
    import tensorflow_hub as hub

    m = hub.load("path/to/savedmodel")          # or tf.saved_model.load
    m.text_embed(tf.constant(["a photo of a cat"]))["embeddings"]          # (1, D), unit norm
    m.image_embed(tf.random.uniform([2, 480, 640, 3]))["embeddings"]       # (2, D), unit norm
    m.zero_shot_classify(images, tf.constant(["cat", "dog"]))["probabilities"]  # (2, 2)

Signatures (also callable as attributes of the loaded object): the registered ones the model
supports, each one function of ``align_tf.export.signatures`` (documented there and in
``export/SIGNATURES.md``; a test keeps that table and the registry equal). ``register_signature``
adds one from any module; ``python -m align_tf.export`` prints the names it wrote.

Other attributes: ``image_tower`` / ``text_tower`` (TF Hub "reusable SavedModel" objects for
fine-tuning: ``__call__(inputs, training=False)`` giving un-normalised features, ``variables``,
``trainable_variables``, ``regularization_losses``), ``class_embeddings(class_names)``,
``variables`` / ``trainable_variables`` (all weights), ``similarity`` (the loss the model was
trained with: ``"softmax"`` or ``"sigmoid"``), ``temperature`` (softmax) or ``log_logit_scale``
(t′, t = exp(t′)) and ``logit_bias`` (sigmoid), ``image_size``,
``resize_size`` (0: resize only), ``max_tokens``, ``embedding_dim``, ``prompt_templates`` and the
``vocab_file`` asset. ``export/`` at the repository root holds the TF Hub publishing material.

The package: ``parts`` (what the signatures share: tokenizer, preprocessing, embedding
functions), ``signatures`` (the registry and the built-in signatures), ``saved_model`` (the
exported objects and ``export_saved_model`` / ``export_classifier``), and here the command line.
"""

from __future__ import annotations

import importlib
import os
import sys

from align_tf.prompts import TEMPLATE_CHOICES, get_templates  # noqa: F401

# The package's interface, imported on first use (PEP 562), so that ``python -m align_tf.export
# --help`` and a flag mistake answer before TensorFlow is imported.
_LAZY = {
    "parts": ("MAX_PROMPTS_PER_CALL", "PIXEL_RANGE", "SignatureParts", "_trim_padding"),
    "saved_model": ("AlignExport", "ClassifierExport", "export_classifier", "export_saved_model",
                    "signature_names"),
    "signatures": ("CLASS_NAMES", "ENCODED", "IMAGES", "TEXTS", "Signature",
                   "register_signature", "registered_signatures", "supported_signatures",
                   "unregister_signature"),
}


def __getattr__(name):
    for module, names in _LAZY.items():
        if name in names:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {n for names in _LAZY.values() for n in names})


def config_export_kwargs(config) -> dict:
    """``export_saved_model`` keyword arguments from a training config (image sizes, templates)."""
    return {"image_size": config.data.image_size, "resize_size": config.data.resize_size,
            "templates": config.export.templates}


PRECISIONS = ("fp32", "bf16")


def export_model_dir(model_dir: str, output: str | None = None, templates=None,
                     checkpoint: str | None = None, image_size: int | None = None,
                     resize_size: int | None = None, precision: str = "fp32") -> str:
    """What ``python -m align_tf.export`` does: ``run_dir.load_model`` then ``export_saved_model``.

    ``templates``, ``image_size`` / ``resize_size`` default to the config's ``export.templates``,
    ``data.image_size`` / ``data.resize_size``; ``output`` to ``{model_dir}/savedmodel``.
    ``precision="bf16"`` (opt-in) computes the towers in bfloat16 (Keras ``mixed_bfloat16``:
    float32 weights, preprocessing and embeddings), for GPUs and TPUs: on the AVX512-BF16 CPU of
    ``benchmarks/`` TF ran it slower than float32 (0.43-0.94x). Embeddings differ from float32
    by ~2-4e-3 (``bench_inference.py --bf16`` reports the deviation).
    """
    return _export_model_dir(model_dir, output, templates, checkpoint, image_size, resize_size,
                             precision)[0]


def _export_model_dir(model_dir, output, templates, checkpoint, image_size, resize_size,
                      precision) -> tuple:
    """``export_model_dir``, also returning the names of the signatures written."""
    from align_tf import run_dir
    from align_tf.export.saved_model import export_saved_model, signature_names
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    model, preprocessor, config = run_dir.load_model(model_dir, checkpoint)
    if precision == "bf16":
        model = _bf16_copy(model, config, preprocessor.vocabulary_size)
    kwargs = config_export_kwargs(config)
    if templates is not None:
        kwargs["templates"] = templates
    if image_size:
        kwargs["image_size"] = image_size
    if resize_size is not None:
        kwargs["resize_size"] = resize_size or None
    output = output or run_dir.RunDir(model_dir).savedmodel_path
    path = export_saved_model(model, preprocessor, output, config=config, **kwargs)
    return path, signature_names(model, preprocessor, **kwargs)


def _bf16_copy(model, config, vocabulary_size: int):
    """The same dual encoder built under Keras' ``mixed_bfloat16`` policy, with ``model``'s
    weights (the global policy is restored)."""
    import keras

    from align_tf.models.dual_encoder import build_dual_encoder
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        copy = build_dual_encoder(config.model, vocabulary_size)
    finally:
        keras.config.set_dtype_policy(policy)
    copy.set_weights(model.get_weights())
    return copy


def _define_flags():
    from absl import flags
    flags.DEFINE_string("model_dir", None, "Training model_dir with config.json, vocab.txt and "
                        "checkpoints/ (a training run or align_tf.convert.hf_align output).",
                        required=True)
    flags.DEFINE_string("output", None, "SavedModel directory to write; default "
                        "{model_dir}/savedmodel.")
    flags.DEFINE_enum("templates", "clip80", list(TEMPLATE_CHOICES),
                      "Prompt templates baked into zero_shot_classify: clip80 (CLIP's 80 ImageNet "
                      "templates, ALIGN §5.2), clip7 (CLIP's 7-template subset), simple "
                      "('a photo of a {}.'), none (the bare class name) or synthetic (the "
                      "built-in corpus' prompts).")
    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix to export; default the newest in "
                        "{model_dir}/checkpoints.")
    flags.DEFINE_integer("image_size", None, "Image tower input side; default the config's "
                         "data.image_size.")
    flags.DEFINE_enum("precision", "fp32", list(PRECISIONS), "Compute precision of the towers: "
                      "fp32, or bf16 (opt-in, for GPU/TPU serving; embeddings ~3e-3 off).")
    flags.DEFINE_integer("resize_size", None, "Resize before the centre crop (0: none); default "
                         "the config's data.resize_size.")
    flags.DEFINE_enum("format", "savedmodel", ["savedmodel", "litert"], "savedmodel (TF Hub), or "
                      "litert: {model_dir}/litert/ .tflite files (align_tf.export.litert).")
    flags.DEFINE_enum("quantize", "none", ["none", "fp16", "dynamic_int8"], "--format=litert "
                      "weights: none (float32), fp16 or dynamic_int8.")


def main(argv):
    from absl import flags
    if len(argv) > 1:
        sys.exit(f"align_tf.export: error: unexpected arguments {argv[1:]}")
    from align_tf import cli
    f = flags.FLAGS
    problem = cli.directory_problem("output", f.output)
    if problem:
        sys.exit(f"align_tf.export: error: {problem}")
    if f.format == "litert":
        return importlib.import_module("align_tf.export.litert").main(f)
    if f.quantize != "none":
        sys.exit("align_tf.export: error: --quantize needs --format=litert")
    try:
        path, names = _export_model_dir(f.model_dir, f.output, f.templates, f.checkpoint,
                                        f.image_size, f.resize_size, f.precision)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"align_tf.export: error: {e}")
    print(f"exported SavedModel to {path} (signatures: {', '.join(names)})")


def run():
    """Console entry point (``align-export``): ``python -m align_tf.export --model_dir=DIR
    --output=DIR``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from align_tf import cli
    _define_flags()
    cli.run(__name__, main)
