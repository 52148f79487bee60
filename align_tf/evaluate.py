"""Evaluates a trained ALIGN dual encoder: retrieval, zero-shot, kNN and linear probe.

The model is a training ``--model_dir`` (config.json, vocab.txt, checkpoints/; also the output of
``align_tf.convert.hf_align``) or an exported ``--savedmodel`` with ``image_embed``/``text_embed``
signatures (ours, or converted public weights). Both go through the same evaluation code, so they
give the same numbers for the same weights.

What is evaluated is the config's ``eval`` section (``configs/base.py``; the same
``align_tf.evaluation.runner.plans_from_config`` the trainer runs): its named evaluators
(``eval.evaluators``), each a type on a dataset. ``--datasets`` and ``--tasks`` replace them by
every task on every dataset; every other flag named like an ``eval`` field or an evaluator's field
overrides it (in every evaluator that has it), and a flag not given takes the value in the run's
``config.json`` (``--model_dir``, or one beside the SavedModel; else ``configs/base.py``'s). So
``--model_dir=RUN --output=X`` writes RUN/eval.json's numbers again.

Datasets (``--datasets``/``--dataset``, comma-separated; the data sources' spelling,
``align_tf.data.sources``):
  synthetic        the built-in coloured-shapes corpus (fresh seeded images; no download)
  tfrecord:GLOB    our TFRecord shards (retrieval; records with identical images are grouped)
  img2dataset_tfrecord:GLOB  img2dataset's TFRecord shards (jpg + txt), likewise
  tfds:NAME        a TFDS dataset with an image and a class label or captions: cifar10, cifar100,
                   imagenet2012 (manual download), coco_captions (a bare NAME is deprecated)
  coco_karpathy:DIR, flickr30k_karpathy:DIR   MSCOCO / Flickr30K as downloaded, Karpathy's
                   splits (test: the 5K / 1K sets; --split=val)
  cxc:DIR          Crisscrossed Captions over COCO: cxc_retrieval (i2t/t2i/t2t/i2i, reported as
                   retrieval) and correlation (SITS/STS/SIS); docs/evaluation.md
Tasks (``--tasks``, comma-separated): the registered evaluator types (retrieval, zeroshot, knn,
linear, and any a ``--plugins`` module registers), or auto (retrieval for captioned data,
zero-shot for labelled data).

Examples:
  python -m align_tf.evaluate --model_dir=align_runs/default
  python -m align_tf.evaluate --savedmodel=align_runs/default/savedmodel --output=eval.json
  python -m align_tf.evaluate --model_dir=/data/align_base_tf --dataset=tfds:imagenet2012 \\
      --tasks=zeroshot --templates=clip80 --data_dir=/data/tfds
  python -m align_tf.evaluate --model_dir=RUN --dataset=tfds:cifar10,tfds:cifar100 --tasks=zeroshot,knn,linear
  python -m align_tf.evaluate --savedmodel=SM --image_size=289 --resize_size=346 \\
      --dataset=tfds:coco_captions --tasks=retrieval        # Karpathy 5k test, 5 captions per image
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

from align_tf import cli  # noqa: E402

# The flags of the eval section's flat fields (the source options and the embedding batch).
SHARED_FLAGS = ("batch_size", "max_examples", "split", "train_split", "max_train_examples",
                "data_dir", "synthetic_examples_per_class", "synthetic_retrieval_rounds",
                "synthetic_seed")
_HELP = {
    "batch_size": "Embedding batch size.",
    "max_examples": "Evaluate at most this many images per dataset.",
    "split": "Evaluation split (TFDS slicing allowed, e.g. 'validation[:10%]'); default test, "
             "else validation.",
    "train_split": "Split kNN and the linear probe fit on; default train.",
    "max_train_examples": "kNN/linear probe: fit on at most this many images.",
    "data_dir": "TFDS data directory.",
    "synthetic_examples_per_class": "synthetic: zero-shot images per class (kNN/linear probe "
                                    "fit: as many).",
    "synthetic_retrieval_rounds": "synthetic: retrieval galleries of one image per class.",
    "synthetic_seed": "synthetic: seed of the test images (kNN/linear probe fit images: +1, "
                      "retrieval: +2).",
    "recall_ks": "Retrieval Recall@K values.",
    "captions_per_image": "Retrieval: captions per image (the MSCOCO/Flickr30K protocol keeps 5); "
                          "0 keeps all.",
    "block_size": "Retrieval: queries scored at once (memory block_size x candidates floats).",
    "faiss": "Retrieval R@K with faiss (no ranks reported).",
    "rerank_k": "ALBEF models (--model_dir only): re-rank each query's ITC top K (retrieval "
                "candidates, zero-shot classes) with the ITM head; reports rerank_* next to the "
                "ITC metrics. 0: off.",
    "templates": "Zero-shot prompts: clip80 = CLIP's 80 ImageNet templates (ensembled), simple = "
                 "'a photo of a {}.', none = the class name, synthetic = the corpus' own; auto = "
                 "synthetic for synthetic, else clip80.",
    "captions_per_class": "intramodal (synthetic): clean captions per class for text→text.",
    "bootstrap_samples": "correlation: bootstrap resamples of the rated pairs (0: none).",
    "bootstrap_size": "correlation: pairs per bootstrap resample; 0: the set's size.",
    "bootstrap_seed": "correlation: seed of the bootstrap resamples.",
    "similarity_pairs": "correlation (synthetic): rated pairs per task (SITS, STS, SIS).",
    "knn_k": "kNN neighbours.",
    "knn_temperature": "kNN vote weight exp(sim/T); 0 = majority.",
    "linear_backend": "Linear probe: sklearn logistic regression or a Keras softmax.",
    "linear_c": "sklearn inverse L2 strength; default: swept on a held-out 20% of the training "
                "split.",
}


def _define_flag(name: str, default, help_text: str) -> None:
    """An absl flag typed like ``default`` (a comma list for ``recall_ks``)."""
    if name == "recall_ks":
        flags.DEFINE_list(name, default.split(","), help_text)
    elif isinstance(default, bool):
        flags.DEFINE_bool(name, default, help_text)
    elif isinstance(default, int):
        flags.DEFINE_integer(name, default, help_text)
    elif isinstance(default, float) or name == "linear_c":
        flags.DEFINE_float(name, default, help_text)
    else:
        flags.DEFINE_string(name, default, help_text)


def define_flags() -> tuple:
    """Defines the command's flags; returns the names that override the config's ``eval``."""
    from align_tf.configs import base
    from align_tf.evaluation import runner  # the evaluator types and their fields; no TensorFlow

    flags.DEFINE_string("model_dir", None, "Training model_dir: config.json, vocab.txt and "
                        "checkpoints/ (the newest checkpoint is used).")
    flags.DEFINE_string("savedmodel", None, "Exported SavedModel directory with "
                        "image_embed/text_embed signatures.")
    flags.DEFINE_string("checkpoint", None, "With --model_dir: a specific checkpoint prefix "
                        "instead of the newest.")
    flags.DEFINE_integer("image_size", None, "Model input size; default the config's "
                         "data.image_size (required for a SavedModel without one).")
    flags.DEFINE_integer("resize_size", None, "Resize to this then centre-crop image_size "
                         "(ALIGN: 346 → 289); default the config's.")
    flags.DEFINE_bool("download", True, "Let TFDS download and prepare missing datasets.")
    flags.DEFINE_string("output", None, "Write the report as JSON here.")
    # Flags named like the config's eval fields (configs/base.py and the evaluators' defaults).
    ev = base.get_config().eval
    entries = list(ev.evaluators.values())
    flags.DEFINE_list("datasets", list(dict.fromkeys(e.dataset for e in entries)),
                      "Datasets (data source specs): synthetic, tfrecord:GLOB, "
                      "img2dataset_tfrecord:GLOB, tfds:NAME (cifar10, imagenet2012, "
                      "coco_captions, ...). Given, it replaces the config's evaluators by --tasks (default "
                      "auto) on each dataset.")
    flags.DEFINE_alias("dataset", "datasets")
    flags.DEFINE_list("tasks", ["auto"], "Evaluator types: "
                      f"{', '.join(runner.registry.names())}, or auto (what each dataset "
                      "supports without a fit split). Given, it replaces the config's evaluators by each "
                      "task on --datasets (default: the config's datasets).")
    for name in SHARED_FLAGS:
        _define_flag(name, ev[name], _HELP[name])
    for name, default in runner.type_fields().items():
        _define_flag(name, default, _HELP.get(name, f"Evaluators' {name} field."))
    return runner.CROSS_PRODUCT + SHARED_FLAGS + tuple(runner.type_fields())


def _error(message: str):
    sys.exit(f"align_tf.evaluate: error: {message}")


def _print(results: dict):
    for dataset, tasks in results.items():
        for task, metrics in tasks.items():
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"{dataset} {task}: {shown}")


def evaluate(model_dir: str | None = None, savedmodel: str | None = None,
             checkpoint: str | None = None, image_size: int | None = None,
             resize_size: int | None = None, download: bool = False, **overrides) -> dict:
    """The report (``runner.make_report``) of a run directory or a SavedModel, as the command
    computes it: the run's ``config.json`` (or ``configs/base.py``'s) ``eval`` section with
    ``overrides`` (``runner.with_eval_overrides``). Raises ``ValueError`` / ``FileNotFoundError``
    with one line for a bad input."""
    from align_tf.evaluation import runner
    from align_tf.evaluation.embed import load_encoder, model_config
    from align_tf.configs import base

    if (model_dir is None) == (savedmodel is None):
        raise ValueError("give exactly one of --model_dir and --savedmodel")
    if checkpoint and not model_dir:
        raise ValueError("--checkpoint needs --model_dir")
    if overrides.get("rerank_k") and savedmodel:
        raise ValueError("--rerank_k needs --model_dir: through a SavedModel, ITM re-ranking "
                         "would re-run both towers for every (image, text) pair")
    config = model_config(model_dir, savedmodel) or base.get_config()
    if savedmodel and "rerank_k" not in overrides and any(
            e.get("rerank_k") for e in config.eval.evaluators.values()):
        print("eval.evaluators' rerank_k of the run's config is skipped: re-ranking needs "
              "--model_dir")
        overrides["rerank_k"] = 0
    config = runner.with_eval_overrides(config, **overrides)
    # Datasets and evaluators are checked before the (possibly large) model is loaded.
    plans = runner.plans_from_config(config, download=download)
    encoder = load_encoder(model_dir, savedmodel, checkpoint, image_size, resize_size,
                           config.eval.batch_size)
    from align_tf.training.progress import announce_plans
    start = time.time()
    results = runner.run_plans(encoder, announce_plans(plans))
    _print(results)
    info = dict(encoder.info(), model_dir=model_dir)
    return runner.make_report(results, info, time.time() - start)


def main(argv, eval_flags: tuple = ()):
    if len(argv) > 1:
        _error(f"unexpected arguments {argv[1:]}")
    f = flags.FLAGS
    overrides = {name: f[name].value for name in eval_flags if f[name].present}
    try:
        report = evaluate(f.model_dir, f.savedmodel, f.checkpoint, f.image_size, f.resize_size,
                          f.download, **overrides)
    except (FileNotFoundError, ValueError) as e:  # UnknownDatasetError is a ValueError
        _error(str(e))
    if f.output:
        import tensorflow as tf
        parent = os.path.dirname(f.output)
        if parent:
            tf.io.gfile.makedirs(parent)
        with tf.io.gfile.GFile(f.output, "w") as out:
            json.dump(report, out, indent=2)
        print(f"Wrote {f.output}")


def run():
    """Console entry point (``align-evaluate``): ``python -m align_tf.evaluate --model_dir=RUN``."""
    cli.import_plugins("align_tf.evaluate", sys.argv)  # first: a plugin's evaluator gets --tasks
    eval_flags = define_flags()
    cli.run(__name__, lambda argv: main(argv, eval_flags))


if __name__ == "__main__":
    run()
