"""Inference candidates of issue 21, each timed against the export's current graph, and where the
image signature's time goes.

    python benchmarks/profile_inference.py                   # B0 @ 224 px + BERT-mini, 64 tokens
    python benchmarks/profile_inference.py --batch_sizes=1 --repeats=20

A random dual encoder of ``bench_inference.py``'s shape (EfficientNet-B0, BERT-mini; the weights do
not matter for speed). For each batch size, interleaved call by call (``common.time_interleaved``):

* image tower: ``graph`` (a ``tf.function`` of ``embed_image``, as ``align_tf.export`` traces it)
  vs ``xla`` (the same with ``jit_compile=True``), ``custom_swish`` (traced as if a gradient tape
  recorded it: ``align_tf.models.activations.swish`` then keeps its custom-gradient wrapper, as
  every inference graph did before issue 21; the speed-up shown is then below 1) and ``bf16`` (built under ``mixed_bfloat16``, as the opt-in
  ``export --precision=bf16``);
* text tower on 64-token padded batches of short captions: ``graph`` vs ``trimmed`` (the padding
  columns all texts share dropped first, ``export._trim_padding``) vs ``xla``.

Then one profiler trace of the image graph and of the (trimmed) text graph at batch 1 and 64, op
time by kind (as ``profile_train_step.py``). Appends one row per candidate and batch size (speed-up over ``graph``)
to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import common  # noqa: E402  (also puts the repository on sys.path)

IMAGE_CATEGORIES = (
    ("squeeze-excitation", r"_se_"),
    ("depthwise convolutions", r"DepthwiseConv2dNative"),
    ("other convolutions", r"Conv2D"),
    ("BatchNorm", r"FusedBatchNorm"),
    ("swish", r"[Ss]wish|[Ss]ilu|Sigmoid|IdentityN"),
)


TEXT_CATEGORIES = (
    ("projection and feed-forward matmuls", r":MatMul$"),
    ("attention scores and weighting", r"BatchMatMul|Softmax"),
    ("attention head transposes", r"Transpose"),
    ("exact GELU", r"[Gg]elu|Erf"),
    ("LayerNorm", r"layer_norm"),
)


def profile(fn, x, categories, calls: int = 3):
    """Op time per call of ``fn(x)`` by kind (``profile_train_step.categorize``), in seconds."""
    import tensorflow as tf

    from profile_train_step import categorize, op_times

    logdir = tempfile.mkdtemp(prefix="profile_inference_")
    fn(x).numpy()
    tf.profiler.experimental.start(logdir)
    for _ in range(calls):
        fn(x).numpy()
    tf.profiler.experimental.stop()
    return categorize({k: v / calls for k, v in op_times(logdir).items()}, categories, "other")


def build(image_size: int, text: str, seq_len: int, **kwargs):
    import keras

    from align_tf.configs import base
    from align_tf.models.dual_encoder import build_dual_encoder

    keras.utils.set_random_seed(0)
    config = base.get_config()
    config.model.image_size_name, config.model.text_size_name = "b0", text
    config.model.max_sequence_length = seq_len
    return build_dual_encoder(config.model, 30522, **kwargs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--text", default="mini")
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--batch_sizes", default="1,64")
    parser.add_argument("--repeats", type=int, default=0, help="0: 20 at batch 1, 5 at 64")
    parser.add_argument("--no_xla", action="store_true", help="skip the XLA candidates")
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from align_tf.export import _trim_padding

    from tensorflow.python.eager import record

    model = build(args.image_size, args.text, args.max_tokens)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        bf16 = build(args.image_size, args.text, args.max_tokens)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    bf16.set_weights(model.get_weights())

    def image_fn(m, xla=False):
        return tf.function(lambda x: tf.cast(m.embed_image(x, training=False), tf.float32),
                           jit_compile=xla, autograph=False)

    def custom_swish_fn(m, x):
        """``image_fn(m)`` traced (for ``x``'s shape) as if a tape recorded the call."""
        fn, real = image_fn(m), record.could_possibly_record
        record.could_possibly_record = lambda: True
        try:
            fn.get_concrete_function(x)
        finally:
            record.could_possibly_record = real
        return fn

    def text_fn(m, trim=False, xla=False):
        return tf.function(lambda t: m.embed_text(_trim_padding(t) if trim else t,
                                                  training=False), jit_compile=xla,
                           autograph=False)

    rng = np.random.default_rng(0)
    table, rows, results = [], [], {}
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        repeats = args.repeats or (20 if b == 1 else 5)
        pixels = tf.constant(rng.uniform(size=(b, args.image_size, args.image_size, 3)),
                             tf.float32)
        ids = np.zeros((b, args.max_tokens), np.int32)
        lengths = rng.integers(8, 17, size=b)  # captions: 8–16 wordpieces with [CLS]/[SEP]
        for i, n in enumerate(lengths):
            ids[i, :n] = rng.integers(1000, 30522, n)
        tokens = {"token_ids": tf.constant(ids), "padding_mask": tf.constant((ids != 0)
                                                                             .astype(np.int32)),
                  "segment_ids": tf.zeros_like(tf.constant(ids))}
        image = {"graph": image_fn(model), "custom_swish": custom_swish_fn(model, pixels),
                 "bf16": image_fn(bf16)}
        text = {"graph": text_fn(model), "trimmed": text_fn(model, trim=True)}
        if not args.no_xla:
            image["xla"] = image_fn(model, xla=True)
            text["xla"] = text_fn(model, xla=True)
        for what, fns, x in (("image", image, pixels), ("text", text, tokens)):
            calls = {k: (lambda f=f: f(x).numpy()) for k, f in fns.items()}
            reference = fns["graph"](x).numpy()
            times = common.time_interleaved(calls, repeats, warmup=2)
            for name, t in times.items():
                dev = float(np.abs(fns[name](x).numpy() - reference).max())
                speedup = times["graph"]["median"] / t["median"]
                table.append([b, what, name, f"{t['median'] * 1e3:.1f}", f"{t['first']:.1f}",
                              f"{speedup:.2f}×", f"{dev:.1e}"])
                results[f"{what} b{b} {name}"] = {"median_s": t["median"], "max_abs_dev": dev}
                if name != "graph":
                    rows.append((f"inference {what} tower batch {b}: {name} vs export's graph "
                                 f"(max abs embedding difference {dev:.1e})",
                                 f"{t['median'] * 1e3:.1f} ms",
                                 f"{times['graph']['median'] * 1e3:.1f} ms",
                                 f"{speedup:.2f}×"))
            print(common.markdown_table(["batch", "tower", "candidate", "ms", "first call s",
                                         "speed-up", "max abs diff"], table[-len(times):]),
                  flush=True)

        # Where each graph's time goes (the text tower as the export runs it: trimmed).
        for what, fn, x, categories in (("image", image["graph"], pixels, IMAGE_CATEGORIES),
                                        ("text", text["trimmed"], tokens, TEXT_CATEGORIES)):
            cats = profile(fn, x, categories)
            total = sum(cats.values())
            print(f"\n{what} graph, batch {b}: op time {total * 1e3:.1f} ms per call\n" +
                  common.markdown_table(["kind", "ms", "share"], [
                      [k, f"{v * 1e3:.1f}", f"{v / total:.0%}"] for k, v in cats.most_common()]))
            rows.append((f"inference {what} graph batch {b} profile: " + ", ".join(
                f"{k} {v / total:.0%}" for k, v in cats.most_common()),
                         f"{total * 1e3:.1f} ms op time", "-", "-"))
    common.record("profile_inference.py", rows,
                  f"random B0 @ {args.image_size}px + BERT-{args.text}, {args.max_tokens} tokens "
                  "(captions of 8-16), fp32 CPU unless named; towers only, no tokenizer",
                  not args.no_append)
    return results


if __name__ == "__main__":
    main()
