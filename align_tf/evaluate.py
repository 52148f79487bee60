"""Evaluates a trained ALIGN dual encoder: retrieval, zero-shot, kNN and linear probe.

The model is a training ``--model_dir`` (config.json, vocab.txt, checkpoints/; also the output of
``align_tf.convert.hf_align``) or an exported ``--savedmodel`` with ``image_embed``/``text_embed``
signatures (ours, or converted public weights). Both go through the same evaluation code, so they
give the same numbers for the same weights.

Datasets (``--dataset``, comma-separated):
  synthetic        the built-in coloured-shapes corpus (fresh images; no download)
  tfrecord:GLOB    our TFRecord shards (retrieval; records with identical images are grouped)
  TFDS names       cifar10, cifar100, imagenet2012 (manual download), coco_captions, or any TFDS
                   dataset with an image and a class label or captions
Tasks (``--tasks``, comma-separated): retrieval, zeroshot, knn, linear, or auto (retrieval for
captioned data, zero-shot for labelled data).

Examples:
  python -m align_tf.evaluate --model_dir=align_runs/default
  python -m align_tf.evaluate --savedmodel=align_runs/default/savedmodel --output=eval.json
  python -m align_tf.evaluate --model_dir=/data/align_base_tf --dataset=imagenet2012 \\
      --tasks=zeroshot --templates=clip80 --data_dir=/data/tfds
  python -m align_tf.evaluate --model_dir=RUN --dataset=cifar10,cifar100 --tasks=zeroshot,knn,linear
  python -m align_tf.evaluate --savedmodel=SM --image_size=289 --resize_size=346 \\
      --dataset=coco_captions --tasks=retrieval        # Karpathy 5k test, 5 captions per image

Metrics are fractions in [0, 1]; ranks are 1-based. ``--output`` writes them as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training model_dir: config.json, vocab.txt "
                                 "and checkpoints/ (the newest checkpoint is used).")
_SAVEDMODEL = flags.DEFINE_string("savedmodel", None, "Exported SavedModel directory with "
                                  "image_embed/text_embed signatures.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "With --model_dir: a specific checkpoint "
                                  "prefix instead of the newest.")
_DATASET = flags.DEFINE_list("dataset", ["synthetic"], "Datasets: synthetic, tfrecord:GLOB, or TFDS "
                             "names (cifar10, cifar100, imagenet2012, coco_captions, ...).")
_TASKS = flags.DEFINE_list("tasks", ["auto"], "Tasks: retrieval, zeroshot, knn, linear, auto.")
_SPLIT = flags.DEFINE_string("split", None, "Evaluation split (TFDS slicing allowed, e.g. "
                             "'validation[:10%]'); default test, else validation.")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", None, "Split kNN and the linear probe fit on; "
                                   "default train.")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", None, "Evaluate at most this many images.")
_MAX_TRAIN_EXAMPLES = flags.DEFINE_integer("max_train_examples", None,
                                           "kNN/linear probe: fit on at most this many images.")
_TEMPLATES = flags.DEFINE_enum("templates", "auto",
                               ["auto", "clip80", "clip7", "simple", "none", "synthetic"],
                               "Zero-shot prompts: clip80 = CLIP's 80 ImageNet templates "
                               "(ensembled), simple = 'a photo of a {}.', none = the class name; "
                               "auto = synthetic's own prompts for synthetic, else clip80.")
_RECALL_KS = flags.DEFINE_list("recall_ks", ["1", "5", "10"], "Retrieval Recall@K values.")
_CAPTIONS = flags.DEFINE_integer("captions_per_image", 5, "Retrieval: captions kept per image "
                                 "(the MSCOCO/Flickr30K protocol uses 5); 0 keeps all.")
_BLOCK = flags.DEFINE_integer("block_size", 512, "Retrieval: queries scored at once (memory "
                              "block_size x candidates floats).")
_FAISS = flags.DEFINE_bool("faiss", False, "Retrieval R@K with faiss (no ranks reported).")
_KNN_K = flags.DEFINE_integer("knn_k", 20, "kNN neighbours.")
_KNN_T = flags.DEFINE_float("knn_temperature", 0.07, "kNN vote weight exp(sim/T); 0 = majority.")
_LINEAR_BACKEND = flags.DEFINE_enum("linear_backend", "sklearn", ["sklearn", "keras"],
                                    "Linear probe: sklearn logistic regression or a Keras softmax.")
_LINEAR_C = flags.DEFINE_float("linear_c", None, "sklearn inverse L2 strength; default: swept on "
                               "a held-out 20% of the training split.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Model input size; default the config's "
                                   "data.image_size (required for a SavedModel without one).")
_RESIZE_SIZE = flags.DEFINE_integer("resize_size", None, "Resize to this then centre-crop "
                                    "image_size (ALIGN: 346 → 289); default the config's.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Embedding batch size.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
_DOWNLOAD = flags.DEFINE_bool("download", True, "Let TFDS download and prepare missing datasets.")
_SYN_PER_CLASS = flags.DEFINE_integer("synthetic_examples_per_class", 20,
                                      "synthetic: images per class (test and train splits).")
_OUTPUT = flags.DEFINE_string("output", None, "Write the results as JSON here.")


def _error(message: str):
    sys.exit(f"align_tf.evaluate: error: {message}")


def _options():
    from align_tf.evaluation.runner import EvalOptions
    try:
        ks = tuple(int(k) for k in _RECALL_KS.value)
    except ValueError:
        _error(f"--recall_ks must be integers, got {_RECALL_KS.value}")
    return EvalOptions(
        split=_SPLIT.value, train_split=_TRAIN_SPLIT.value, max_examples=_MAX_EXAMPLES.value,
        max_train_examples=_MAX_TRAIN_EXAMPLES.value, templates=_TEMPLATES.value, recall_ks=ks,
        captions_per_image=_CAPTIONS.value or None, block_size=_BLOCK.value,
        use_faiss=_FAISS.value, knn_k=_KNN_K.value, knn_temperature=_KNN_T.value or None,
        linear_backend=_LINEAR_BACKEND.value, linear_c=_LINEAR_C.value, data_dir=_DATA_DIR.value,
        download=_DOWNLOAD.value, synthetic_examples_per_class=_SYN_PER_CLASS.value, cache=True)


def _print(results: dict):
    for dataset, tasks in results.items():
        for task, metrics in tasks.items():
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"{dataset} {task}: {shown}")


def main(argv):
    if len(argv) > 1:
        _error(f"unexpected arguments {argv[1:]}")
    from align_tf.evaluation import datasets
    from align_tf.evaluation.embed import load_encoder

    if (_MODEL_DIR.value is None) == (_SAVEDMODEL.value is None):
        _error("give exactly one of --model_dir and --savedmodel")
    if _CHECKPOINT.value and not _MODEL_DIR.value:
        _error("--checkpoint needs --model_dir")
    opts = _options()
    start = time.time()
    from align_tf.evaluation.runner import build_evaluators, run_evaluators
    try:
        # Datasets and tasks are checked before the (possibly large) model is loaded.
        plans = [(name, build_evaluators(name, _TASKS.value, opts)) for name in _DATASET.value]
        encoder = load_encoder(_MODEL_DIR.value, _SAVEDMODEL.value, _CHECKPOINT.value,
                               _IMAGE_SIZE.value, _RESIZE_SIZE.value, _BATCH.value)
    except (datasets.UnknownDatasetError, FileNotFoundError, ValueError) as e:
        _error(str(e))
    try:
        results = {name: run_evaluators(encoder, evaluators) for name, evaluators in plans}
    except FileNotFoundError as e:  # e.g. a tfrecord: glob that matches nothing
        _error(str(e))
    _print(results)
    report = {
        "model": {"model_dir": _MODEL_DIR.value, "savedmodel": _SAVEDMODEL.value,
                  "checkpoint": getattr(encoder, "checkpoint", None),
                  "image_size": encoder.image_size, "resize_size": encoder.resize_size},
        "results": results,
        "seconds": round(time.time() - start, 1),
    }
    if _OUTPUT.value:
        import tensorflow as tf
        parent = os.path.dirname(_OUTPUT.value)
        if parent:
            tf.io.gfile.makedirs(parent)
        with tf.io.gfile.GFile(_OUTPUT.value, "w") as f:
            json.dump(report, f, indent=2)
        print(f"Wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
