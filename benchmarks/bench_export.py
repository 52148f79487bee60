"""Size and per-batch latency of the exported SavedModel's signatures (a benchmark, not a test).

Either exports randomly initialised models of the given tower sizes (the numbers depend on the
architecture, not on the weights) or measures an existing export::

    python benchmarks/bench_export.py                                  # the tiny default
    python benchmarks/bench_export.py --models=nano:tiny,b0:mini --batch_sizes=1,8,32
    python benchmarks/bench_export.py --savedmodel=align_runs/default/savedmodel

For each model: SavedModel size (saved_model.pb, variables, assets), export and load time, and for
each signature the first call (graph warm-up) and the median / p90 of ``--repeats`` timed calls
per batch size, through the loaded object exactly as a consumer calls it (eager, attribute
functions). Images are ``2 × image_size`` on a side so resize and crop run; texts are
~12-word captions; ``zero_shot_classify`` recomputes ``--num_classes`` × templates prompt
embeddings per call. Results go to stdout and, with ``--output``, to JSON.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  registers the tokenizer ops before loading

import common  # noqa: E402  (also puts the repository on sys.path)

CAPTIONS = ["a photo of a small red car parked next to an old brick building",
            "two dogs playing with a yellow ball on the green grass in the park",
            "a bowl of fresh fruit on a wooden kitchen table near the window",
            "the city skyline at night with bright lights reflected in the river"]


def dir_size(path: str) -> dict:
    """Bytes under ``path``: total and per top-level entry (saved_model.pb, variables, assets)."""
    sizes = {}
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if os.path.isdir(full):
            sizes[entry] = sum(os.path.getsize(os.path.join(d, f))
                               for d, _, files in os.walk(full) for f in files)
        else:
            sizes[entry] = os.path.getsize(full)
    sizes["total"] = sum(sizes.values())
    return sizes


def export_random(image_size_name: str, text_size_name: str, out: str, templates: str) -> tuple:
    """Exports a randomly initialised model; returns (seconds, num_parameters).

    The nano/tiny image towers get the embedded default's data settings (48 px, 16 tokens, 2000
    WordPiece vocabulary); larger ones their nominal resolution with the paper's resize ratio
    (346/289), 64 tokens and BERT's 30522 vocabulary (the embedding table dominates small text
    towers, so its size matters for the SavedModel size).
    """
    from align_tf import export
    from align_tf.configs import base
    from align_tf.models import efficientnet
    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.tokenizer import RESERVED_TOKENS, TextPreprocessor

    config = base.get_config()
    config.model.image_size_name, config.model.text_size_name = image_size_name, text_size_name
    if image_size_name not in ("nano", "tiny"):
        resolution = efficientnet.SIZES[image_size_name].resolution
        config.data.image_size = resolution
        config.data.resize_size = round(resolution * 346 / 289)
        config.data.vocab_size, config.data.max_tokens = 30522, 64
        config.model.max_sequence_length = max(config.model.max_sequence_length, 64)
    words = sorted({w for c in CAPTIONS for w in c.split()})
    vocab = RESERVED_TOKENS + words + [
        f"tok{i}" for i in range(config.data.vocab_size - len(words) - len(RESERVED_TOKENS))]
    preprocessor = TextPreprocessor(vocab, sequence_length=config.data.max_tokens)
    model = build_dual_encoder(config.model, len(vocab))
    kwargs = export.config_export_kwargs(config)
    kwargs["templates"] = templates
    start = time.perf_counter()
    export.export_saved_model(model, preprocessor, out, config=config, **kwargs)
    return time.perf_counter() - start, int(sum(np.prod(v.shape) for v in model.weights))


def time_calls(fn, repeats: int) -> dict:
    """First call, then median / p90 / min of ``repeats`` calls, in milliseconds."""
    t = common.time_calls(fn, repeats, warmup=1)
    return {f"{k}_ms": 1e3 * t[k] for k in ("first", "median", "p90", "min")}


def bench(path: str, batch_sizes, repeats: int, num_classes: int) -> dict:
    """Loads ``path`` and times every signature at every batch size."""
    start = time.perf_counter()
    m = tf.saved_model.load(path)
    load_s = time.perf_counter() - start
    side = 2 * int(m.image_size.numpy())
    rng = np.random.default_rng(0)
    classes = tf.constant([f"class number {i}" for i in range(num_classes)])
    results = {}
    for b in batch_sizes:
        images = tf.constant(rng.uniform(size=(b, side, side, 3)).astype(np.float32))
        jpegs = tf.stack([tf.io.encode_jpeg(tf.cast(im * 255, tf.uint8)) for im in images])
        texts = tf.constant([CAPTIONS[i % len(CAPTIONS)] for i in range(b)])
        calls = {
            "image_embed": lambda: m.image_embed(images)["embeddings"].numpy(),
            "image_embed_encoded": lambda: m.image_embed_encoded(jpegs)["embeddings"].numpy(),
            "text_embed": lambda: m.text_embed(texts)["embeddings"].numpy(),
            "zero_shot_classify": lambda: m.zero_shot_classify(images, classes)["logits"].numpy(),
        }
        for name, fn in calls.items():
            results.setdefault(name, {})[b] = time_calls(fn, repeats)
    return {"load_s": load_s, "input_side": side, "num_classes": num_classes,
            "num_templates": int(m.prompt_templates.shape[0]), "embedding_dim":
            int(m.embedding_dim.numpy()), "latency": results}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="nano:tiny",
                        help="comma-separated IMAGE:TEXT tower sizes to export at random init "
                             "(align_tf.models.efficientnet / text_encoder SIZES)")
    parser.add_argument("--savedmodel", default=None, help="measure this export instead")
    parser.add_argument("--templates", default="clip80", help="templates for the random exports")
    parser.add_argument("--batch_sizes", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--num_classes", type=int, default=10, help="zero-shot class names")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    report = {"device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
              "machine": common.machine(), "versions": common.versions(), "models": {}}
    targets = [(args.savedmodel, args.savedmodel)] if args.savedmodel else [
        (spec, None) for spec in args.models.split(",")]
    for name, path in targets:
        entry, tmp = {}, None
        if path is None:
            tmp = tempfile.mkdtemp(prefix="bench_export_")
            path = os.path.join(tmp, "savedmodel")
            image, text = name.split(":")
            entry["export_s"], entry["num_parameters"] = export_random(image, text, path,
                                                                       args.templates)
        try:
            entry["size_bytes"] = dir_size(path)
            entry.update(bench(path, batch_sizes, args.repeats, args.num_classes))
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        report["models"][name] = entry
        size = entry["size_bytes"]
        print(f"\n== {name}: SavedModel {size['total'] / 2**20:.1f} MiB (saved_model.pb "
              f"{size.get('saved_model.pb', 0) / 2**20:.1f}, variables "
              f"{size.get('variables', 0) / 2**20:.1f}), load {entry['load_s']:.1f} s"
              + (f", export {entry['export_s']:.1f} s, {entry['num_parameters']:,} parameters"
                 if "export_s" in entry else "")
              + f"; images {entry['input_side']}² px, zero-shot {entry['num_classes']} classes × "
                f"{entry['num_templates']} templates")
        print(common.markdown_table(
            ["signature"] + [f"batch {b}: median ms (p90)" for b in batch_sizes],
            [[sig] + [f"{per_batch[b]['median_ms']:.1f} ({per_batch[b]['p90_ms']:.0f})"
                      for b in batch_sizes] for sig, per_batch in entry["latency"].items()]))
    print(f"\n({report['device']}: {report['machine']}; median of {args.repeats} calls after a "
          "warm-up call; first-call times in --output)")
    batches = "/".join(str(b) for b in batch_sizes)
    rows = [(f"{name} {sig} latency, batch {batches}",
             " / ".join(f"{per[b]['median_ms']:.1f}" for b in batch_sizes) + " ms", "", "")
            for name, entry in report["models"].items() for sig, per in entry["latency"].items()]
    rows += [(f"{name} SavedModel size / load", f"{e['size_bytes']['total'] / 2**20:.1f} MiB"
              f" / {e['load_s']:.1f} s", "", "") for name, e in report["models"].items()]
    common.record("bench_export.py", rows, f"exported SavedModel, {report['device']}, images 2× "
                  f"the model's side (resize + crop run), {args.templates} templates × "
                  f"{args.num_classes} classes", not args.no_append, args.output, report)
    return report


if __name__ == "__main__":
    main()
