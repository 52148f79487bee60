"""Input pipeline throughput: training pipeline images/s next to raw ``tf.io.decode_jpeg`` images/s.

    python benchmarks/bench_input_pipeline.py                      # paper sizes: 346 → 289, 64 tokens
    python benchmarks/bench_input_pipeline.py --threads=1,4 --repeats=9 --output=bench.json

Generates web-like JPEGs (smooth content plus noise, 300–640 px sides, quality 90) into TFRecord
shards, then measures, for each thread count (tf.data's private thread pool size):

* ``decode``: ``tf.io.decode_jpeg`` of the same encoded images in a parallel map — the ceiling;
  decoding dominates the pipeline's work.
* ``pipeline``: ``tfrecord.read_training_pairs`` → ``pipeline.batch_pairs(training=True)``: shard
  interleave, windowed shuffle, parse, corrupt-safe decode, resize + random crop + flip (stateless,
  seeded per example), WordPiece tokenization, batching — what training consumes.
* ``pipeline_before`` (``--before``): ``pipeline`` with the whole image resized before the random
  crop (``batch_pairs(crop_window_resize=False)``), as before issue 9's crop-window resize.

Each figure is the median images/s over ``--repeats`` windows of about ``--seconds`` each, after
warm-up; per-core figures divide by the thread count. The datasets are measured one after the
other (not interleaved: an idle tf.data iterator keeps prefetching in the background), in the
same run, so the pipeline / decode ratio compares figures taken a minute apart. The figures depend on image sizes and the CPU; the ratio is the robust one. Appends one row
per thread count to ``benchmarks/RESULTS.md`` (``--no_append`` skips it).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

import common  # noqa: E402  (also puts the repository on sys.path)
from align_tf.data import pipeline, sampling, tfrecord  # noqa: E402
from align_tf.tokenizer import RESERVED_TOKENS, TextPreprocessor  # noqa: E402

WORDS = ("a photo of the red blue green car dog cat street park beach sunset house tree "
         "mountain river city night people man woman child old new small large").split()


def make_images(n: int, seed: int = 0) -> list:
    """``n`` JPEG byte strings of web-photo-like sizes and content."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = int(rng.integers(300, 641)), int(rng.integers(300, 481))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([128 + 100 * np.sin(xx / rng.uniform(20, 80) + c) *
                         np.cos(yy / rng.uniform(20, 80)) for c in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def options(threads: int) -> tf.data.Options:
    opts = tf.data.Options()
    opts.threading.private_threadpool_size = threads
    return opts


def measure(ds: tf.data.Dataset, images_per_element: int, seconds: float, repeats: int,
            warmup: int) -> float:
    """Median images/s over ``repeats`` windows of about ``seconds``, after ``warmup`` elements
    and one calibration window that sets the elements per window."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 2:
        next(it)
        n += 1
    count = max(1, round(n * seconds / (time.perf_counter() - start)))  # elements per window
    t = common.time_calls(lambda: [next(it) for _ in range(count)], repeats, warmup=0)
    return count * images_per_element / t["median"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--num_shards", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=289)
    parser.add_argument("--resize_size", type=int, default=346)
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}",
                        help="comma-separated tf.data thread pool sizes")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per figure")
    parser.add_argument("--before", action="store_true",
                        help="also time the pipeline resizing whole images before the random "
                             "crop (pipeline_before; crop-window resize is the default)")
    parser.add_argument("--output", default="", help="also write the results as JSON here")
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)

    t0 = time.time()
    encoded = make_images(args.num_images)
    rng = np.random.default_rng(1)
    captions = [" ".join(rng.choice(WORDS, int(rng.integers(3, 21)))) for _ in encoded]
    tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
    tfrecord.write_pairs(zip(encoded, captions), os.path.join(tmp, "pairs"), args.num_shards)
    pattern = os.path.join(tmp, "pairs-*.tfrecord")
    preprocessor = TextPreprocessor(RESERVED_TOKENS + sorted(set(WORDS)), args.max_tokens)
    mean_kb = np.mean([len(e) for e in encoded]) / 1024
    print(f"{args.num_images} JPEGs (mean {mean_kb:.0f} KB, 300–640 × 300–480 px) in "
          f"{args.num_shards} shards, generated in {time.time() - t0:.1f}s; "
          f"{os.cpu_count()} CPUs visible, affinity {len(os.sched_getaffinity(0))}", flush=True)

    results = {"config": vars(args), "mean_jpeg_kb": round(float(mean_kb), 1), "figures": []}
    table, rows = [], []
    for threads in [int(t) for t in args.threads.split(",")]:
        datasets = {"decode": (tf.data.Dataset.from_tensor_slices(encoded).repeat()
                               .map(lambda b: tf.io.decode_jpeg(b, channels=3),
                                    num_parallel_calls=tf.data.AUTOTUNE)
                               .prefetch(tf.data.AUTOTUNE).with_options(options(threads)))}
        variants = [("pipeline", True)] + ([("pipeline_before", False)] if args.before else [])
        layout = sampling.Layout(args.batch_size, args.batch_size)
        for name, crop_window in variants:
            datasets[name] = pipeline.batch_pairs(
                tfrecord.read_training_pairs(pattern, 0, layout, shuffle_buffer=256),
                preprocessor, args.batch_size, args.image_size, args.resize_size, training=True,
                seed=0, crop_window_resize=crop_window).with_options(options(threads))
        per_element = {"decode": 1, **{name: args.batch_size for name, _ in variants}}
        # One dataset at a time: an idle iterator's prefetch threads would keep filling its
        # buffers while another is timed (and steal its cores).
        figures = {name: measure(ds, per_element[name], args.seconds, args.repeats, warmup=2)
                   for name, ds in datasets.items()}
        for name, ips in figures.items():
            row = {"threads": threads, "what": name, "images_per_s": round(ips, 1),
                   "images_per_s_per_core": round(ips / threads, 1)}
            results["figures"].append(row)
            table.append([threads, name, f"{ips:.1f}", f"{ips / threads:.1f}",
                          f"{ips / figures['decode']:.0%}"])
        rows.append((f"pipeline images/s per core, {threads} thread(s), vs decode_jpeg",
                     f"{figures['pipeline'] / threads:.1f}",
                     f"{figures['decode'] / threads:.1f} (decode only)",
                     f"{figures['pipeline'] / figures['decode']:.0%}"))
        if "pipeline_before" in figures:
            rows.append((f"pipeline images/s per core, {threads} thread(s), whole-image resize "
                         "(before) vs decode_jpeg", f"{figures['pipeline_before'] / threads:.1f}",
                         f"{figures['decode'] / threads:.1f} (decode only)",
                         f"{figures['pipeline_before'] / figures['decode']:.0%}"))
        print(common.markdown_table(["threads", "what", "images/s", "per core", "of decode"],
                                    table[-len(figures):]), flush=True)
    print("\n" + common.markdown_table(["threads", "what", "images/s", "per core", "of decode"],
                                       table))
    common.record("bench_input_pipeline.py", rows,
                  f"{args.num_images} JPEGs ~{mean_kb:.0f} KB, {args.resize_size}→{args.image_size}"
                  f" px crop, {args.max_tokens} tokens, batch {args.batch_size}; median of "
                  f"{args.repeats} windows of ~{args.seconds:.0f} s", not args.no_append,
                  args.output, results)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
