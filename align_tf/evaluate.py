"""Evaluates a trained ALIGN dual encoder: retrieval, zero-shot, kNN and linear probe.

The model is a training ``--model_dir`` (config.json, vocab.txt, checkpoints/; also the output of
``align_tf.convert.hf_align``) or an exported ``--savedmodel`` with ``image_embed``/``text_embed``
signatures (ours, or converted public weights). Both go through the same evaluation code, so they
give the same numbers for the same weights.

What is evaluated is the config's ``eval`` section (``configs/base.py``; the same
``align_tf.evaluation.runner.plans_from_config`` the trainer runs): every flag below named like an
``eval`` field overrides it, and a flag not given takes the value in the run's ``config.json``
(``--model_dir``, or one beside the SavedModel; else ``configs/base.py``'s). So
``--model_dir=RUN --dataset=synthetic --output=X`` writes RUN/eval.json's numbers again.

Datasets (``--datasets``/``--dataset``, comma-separated):
  synthetic        the built-in coloured-shapes corpus (fresh seeded images; no download)
  tfrecord:GLOB    our TFRecord shards (retrieval; records with identical images are grouped)
  img2dataset_tfrecord:GLOB  img2dataset's TFRecord shards (jpg + txt), likewise
  tfds:NAME        a TFDS dataset (the training sources' spelling, align_tf.data.sources)
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
  python -m align_tf.evaluate --model_dir=ALBEF_RUN --tasks=retrieval --rerank_k=16  # + ITM

Metrics are fractions in [0, 1]; ranks are 1-based. ``--output`` writes the report
(``runner.make_report``, the structure of RUN/eval.json) as JSON. Shards (``tfrecord:``,
``img2dataset_tfrecord:``) are read as training reads them: an image that does not decode, or a
record that does not parse or has no caption, is skipped with a warning, and the retrieval
results count them (``num_skipped_images``, ``num_skipped_records``).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from align_tf import cli, prompts  # noqa: E402
from align_tf.configs import base  # noqa: E402

_EVAL = base.get_config().eval  # flag defaults shown in --help; a run's config.json wins

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training model_dir: config.json, vocab.txt "
                                 "and checkpoints/ (the newest checkpoint is used).")
_SAVEDMODEL = flags.DEFINE_string("savedmodel", None, "Exported SavedModel directory with "
                                  "image_embed/text_embed signatures.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "With --model_dir: a specific checkpoint "
                                  "prefix instead of the newest.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Model input size; default the config's "
                                   "data.image_size (required for a SavedModel without one).")
_RESIZE_SIZE = flags.DEFINE_integer("resize_size", None, "Resize to this then centre-crop "
                                    "image_size (ALIGN: 346 → 289); default the config's.")
_DOWNLOAD = flags.DEFINE_bool("download", True, "Let TFDS download and prepare missing datasets.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the report as JSON here.")

# Flags named like the config's eval fields (configs/base.py documents them).
flags.DEFINE_list("datasets", _EVAL.datasets.split(","), "Datasets: synthetic, tfrecord:GLOB, "
                  "img2dataset_tfrecord:GLOB, tfds:NAME, or bare "
                  "TFDS names (cifar10, cifar100, imagenet2012, coco_captions, ...).")
flags.DEFINE_alias("dataset", "datasets")
flags.DEFINE_list("tasks", _EVAL.tasks.split(","), "Tasks: retrieval, zeroshot, knn, linear, auto.")
flags.DEFINE_enum("templates", _EVAL.templates, list(prompts.TEMPLATE_CHOICES) + [prompts.AUTO],
                  "Zero-shot prompts: clip80 = CLIP's 80 ImageNet templates (ensembled), "
                  "simple = 'a photo of a {}.', none = the class name, synthetic = the corpus' "
                  "own; auto = synthetic for synthetic, else clip80.")
flags.DEFINE_integer("batch_size", _EVAL.batch_size, "Embedding batch size.")
flags.DEFINE_integer("max_examples", _EVAL.max_examples, "Evaluate at most this many images.")
flags.DEFINE_string("split", _EVAL.split, "Evaluation split (TFDS slicing allowed, e.g. "
                    "'validation[:10%]'); default test, else validation.")
flags.DEFINE_string("train_split", _EVAL.train_split, "Split kNN and the linear probe fit on; "
                    "default train.")
flags.DEFINE_integer("max_train_examples", _EVAL.max_train_examples,
                     "kNN/linear probe: fit on at most this many images.")
flags.DEFINE_string("data_dir", _EVAL.data_dir, "TFDS data directory.")
flags.DEFINE_list("recall_ks", _EVAL.recall_ks.split(","), "Retrieval Recall@K values.")
flags.DEFINE_integer("captions_per_image", _EVAL.captions_per_image, "Retrieval: captions per "
                     "image (the MSCOCO/Flickr30K protocol keeps 5); 0 keeps all.")
flags.DEFINE_integer("block_size", _EVAL.block_size, "Retrieval: queries scored at once (memory "
                     "block_size x candidates floats).")
flags.DEFINE_bool("faiss", _EVAL.faiss, "Retrieval R@K with faiss (no ranks reported).")
flags.DEFINE_integer("rerank_k", _EVAL.rerank_k, "ALBEF models (--model_dir only): re-rank each "
                     "query's ITC top K (retrieval candidates, zero-shot classes) with the ITM "
                     "head; reports rerank_* next to the ITC metrics. 0: off.")
flags.DEFINE_integer("knn_k", _EVAL.knn_k, "kNN neighbours.")
flags.DEFINE_float("knn_temperature", _EVAL.knn_temperature,
                   "kNN vote weight exp(sim/T); 0 = majority.")
flags.DEFINE_enum("linear_backend", _EVAL.linear_backend, ["sklearn", "keras"],
                  "Linear probe: sklearn logistic regression or a Keras softmax.")
flags.DEFINE_float("linear_c", _EVAL.linear_c, "sklearn inverse L2 strength; default: swept on "
                   "a held-out 20% of the training split.")
flags.DEFINE_integer("synthetic_examples_per_class", _EVAL.synthetic_examples_per_class,
                     "synthetic: zero-shot images per class (kNN/linear probe fit: as many).")
flags.DEFINE_integer("synthetic_retrieval_rounds", _EVAL.synthetic_retrieval_rounds,
                     "synthetic: retrieval galleries of one image per class.")
flags.DEFINE_integer("synthetic_seed", _EVAL.synthetic_seed, "synthetic: seed of the test "
                     "images (kNN/linear probe fit images: +1, retrieval: +2).")
EVAL_FLAGS = tuple(name for name in _EVAL.keys() if name in flags.FLAGS)


def _error(message: str):
    sys.exit(f"align_tf.evaluate: error: {message}")


def _print(results: dict):
    for dataset, tasks in results.items():
        for task, metrics in tasks.items():
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"{dataset} {task}: {shown}")


def main(argv):
    if len(argv) > 1:
        _error(f"unexpected arguments {argv[1:]}")
    from align_tf.evaluation import datasets, runner
    from align_tf.evaluation.embed import load_encoder, model_config

    if (_MODEL_DIR.value is None) == (_SAVEDMODEL.value is None):
        _error("give exactly one of --model_dir and --savedmodel")
    if _CHECKPOINT.value and not _MODEL_DIR.value:
        _error("--checkpoint needs --model_dir")
    if flags.FLAGS.rerank_k and _SAVEDMODEL.value:
        _error("--rerank_k needs --model_dir: through a SavedModel, ITM re-ranking would re-run "
               "both towers for every (image, text) pair")
    overrides = {name: flags.FLAGS[name].value for name in EVAL_FLAGS if flags.FLAGS[name].present}
    try:
        config = model_config(_MODEL_DIR.value, _SAVEDMODEL.value) or base.get_config()
        if _SAVEDMODEL.value and config.eval.rerank_k and "rerank_k" not in overrides:
            print("eval.rerank_k of the run's config is skipped: re-ranking needs --model_dir")
            overrides["rerank_k"] = 0
        config = runner.with_eval_overrides(config, **overrides)
        # Datasets and tasks are checked before the (possibly large) model is loaded.
        plans = runner.plans_from_config(config, download=_DOWNLOAD.value)
        encoder = load_encoder(_MODEL_DIR.value, _SAVEDMODEL.value, _CHECKPOINT.value,
                               _IMAGE_SIZE.value, _RESIZE_SIZE.value, config.eval.batch_size)
    except (datasets.UnknownDatasetError, FileNotFoundError, ValueError) as e:
        _error(str(e))
    start = time.time()
    try:
        results = runner.run_plans(encoder, plans)
    except FileNotFoundError as e:  # e.g. a tfrecord: glob that matches nothing
        _error(str(e))
    _print(results)
    info = dict(encoder.info(), model_dir=_MODEL_DIR.value)
    report = runner.make_report(results, info, time.time() - start)
    if _OUTPUT.value:
        import tensorflow as tf
        parent = os.path.dirname(_OUTPUT.value)
        if parent:
            tf.io.gfile.makedirs(parent)
        with tf.io.gfile.GFile(_OUTPUT.value, "w") as f:
            json.dump(report, f, indent=2)
        print(f"Wrote {_OUTPUT.value}")


def run():
    """Console entry point (``align-evaluate``): ``python -m align_tf.evaluate --model_dir=RUN``."""
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
