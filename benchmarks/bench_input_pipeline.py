"""Input pipeline throughput: training pipeline images/s next to raw ``tf.io.decode_jpeg`` images/s.

    python benchmarks/bench_input_pipeline.py                      # paper sizes: 346 → 289, 64 tokens
    python benchmarks/bench_input_pipeline.py --threads=1,4 --repeats=9 --output=bench.json

Generates JPEGs (quality 90) in two size mixes (``--mix``): ``web`` (long side 300–1600 px,
log-normal around a 700 px median, common aspect ratios: what web alt-text corpora hold; smooth
colour fields with edges and mild noise) and ``small`` (300–640 × 300–480 px, smooth waves plus
strong noise: the original benchmark's images) into TFRecord shards, then measures, for each mix
and thread count (tf.data's private thread pool size):

* ``decode``: full-scale ``tf.io.decode_jpeg`` of the same encoded images in a parallel map — the
  reference the issue compares with.
* ``pipeline``: ``tfrecord.read_training_pairs`` → ``pipeline.batch_pairs(training=True)``: shard
  interleave, windowed shuffle, parse, corrupt-safe reduced-scale decode (1/2, 1/4, 1/8 in the
  DCT when both sides stay ≥ the resize size, ``preprocessing.decode_for_resize``), crop-window
  resize + random crop + flip (stateless, seeded per example), WordPiece tokenization, batching —
  what training consumes.
* ``pipeline_full_decode`` (``--before``): ``pipeline`` decoding every image at full scale.
* ``pipeline_before`` (``--before``): full-scale decode and the whole image resized before the
  random crop (``batch_pairs(crop_window_resize=False)``), as before issue 9's crop-window resize.

Each figure is the median images/s over ``--repeats`` windows of about ``--seconds`` each, after
warm-up; per-core figures divide by the thread count. The datasets are measured one after the
other (not interleaved: an idle tf.data iterator keeps prefetching in the background), in the
same run, so the pipeline / decode ratio compares figures taken a minute apart. The figures depend on image sizes and the CPU; the ratio is the robust one. Appends one row
per mix, thread count and variant to ``benchmarks/RESULTS.md`` (``--no_append`` skips it).
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
from align_tf.data import pipeline, preprocessing, sampling, tfrecord  # noqa: E402
from align_tf.tokenizer import RESERVED_TOKENS, TextPreprocessor  # noqa: E402

WORDS = ("a photo of the red blue green car dog cat street park beach sunset house tree "
         "mountain river city night people man woman child old new small large").split()


# Aspect ratios (long / short side) of the web mix: common photo and screen formats.
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)


def web_size(rng) -> tuple:
    """``(width, height)`` of a web-sized image: long side log-normal with median 700 px, clipped
    to 300–1600, one of ``ASPECTS``, landscape or portrait."""
    long = int(np.clip(700 * np.exp(rng.normal(0, 0.45)), 300, 1600))
    short = max(200, int(long / ASPECTS[rng.integers(len(ASPECTS))]))
    return (long, short) if rng.uniform() < 0.7 else (short, long)


def make_images(n: int, seed: int = 0, mix: str = "small") -> list:
    """``n`` JPEG byte strings of web-photo-like content; ``mix``: ``small`` (300–640 × 300–480
    px, the original benchmark) or ``web`` (``web_size``: 300–1600 px, median long side 700)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if mix == "web":
            w, h = web_size(rng)
            # Smooth colour fields with edges and mild noise (~1–3 bits/pixel at quality 90).
            small = rng.uniform(0, 255, (max(2, h // 48), max(2, w // 48), 3)).astype(np.uint8)
            base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32)
            for _ in range(4):
                y, x = int(rng.integers(0, h - h // 5)), int(rng.integers(0, w - w // 5))
                base[y:y + h // 6, x:x + w // 6] = rng.uniform(0, 255, 3)
            pixels = np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
            continue
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


def stage_datasets(encoded, captions, preprocessor, args, threads: int) -> dict:
    """The pipeline's stages alone, for ``--stages``: the reduced-scale decode, the decode plus
    the crop window's antialiased resample (``preprocessing.crop_of_resized``, a fixed offset),
    and the tokenization of batches of captions."""
    offset = tf.constant([(args.resize_size - args.image_size) // 2] * 2)

    def decoded(b):
        return preprocessing.decode_for_resize(b, args.resize_size)

    def resampled(b):
        image, sizes = decoded(b)
        return preprocessing.crop_of_resized(image, args.image_size, args.resize_size, offset,
                                             sizes)

    images = tf.data.Dataset.from_tensor_slices(encoded).repeat()
    texts = tf.data.Dataset.from_tensor_slices(captions).repeat().batch(args.batch_size)
    return {name: ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
            .with_options(options(threads))
            for name, ds, fn in (("decode_for_resize", images, lambda b: decoded(b)[0]),
                                 ("decode_and_resample", images, resampled),
                                 ("tokenize", texts, preprocessor))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mix", default="web,small",
                        help="image size mixes, comma-separated: web (300–1600 px, median 700) "
                             "and/or small (300–640 px)")
    parser.add_argument("--num_images", type=int, default=0,
                        help="JPEGs per mix; 0: 128 (web), 256 (small)")
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
                        help="also time the pipeline with full-scale decoding "
                             "(pipeline_full_decode) and with full-scale decoding and whole "
                             "images resized before the random crop (pipeline_before)")
    parser.add_argument("--stages", action="store_true",
                        help="also time the pipeline's stages alone (decode_for_resize, "
                             "decode_and_resample, tokenize) and print each one's share")
    parser.add_argument("--output", default="", help="also write the results as JSON here")
    parser.add_argument("--no_append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)

    results = {"config": vars(args), "mixes": {}, "figures": []}
    table, rows, setups = [], [], []
    for mix in args.mix.split(","):
        if mix not in ("web", "small"):
            raise SystemExit(f"bench_input_pipeline.py: error: unknown --mix {mix!r} (web, small)")
        t0 = time.time()
        n = args.num_images or (128 if mix == "web" else 256)
        encoded = make_images(n, mix=mix)
        rng = np.random.default_rng(1)
        captions = [" ".join(rng.choice(WORDS, int(rng.integers(3, 21)))) for _ in encoded]
        tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
        tfrecord.write_pairs(zip(encoded, captions), os.path.join(tmp, "pairs"), args.num_shards)
        pattern = os.path.join(tmp, "pairs-*.tfrecord")
        preprocessor = TextPreprocessor(RESERVED_TOKENS + sorted(set(WORDS)), args.max_tokens)
        shapes = np.array([tf.image.extract_jpeg_shape(e).numpy()[:2] for e in encoded])
        mean_kb = np.mean([len(e) for e in encoded]) / 1024
        bpp = 8 * sum(len(e) for e in encoded) / shapes.prod(axis=1).sum()
        reduced = float(np.mean(shapes.min(axis=1) >= 2 * args.resize_size))
        described = (f"{mix} mix: {n} JPEGs, long side {shapes.max(axis=1).min()}–"
                     f"{shapes.max(axis=1).max()} px (median {np.median(shapes.max(axis=1)):.0f}),"
                     f" mean {mean_kb:.0f} KB, {bpp:.1f} bits/pixel; {reduced:.0%} decodable at "
                     f"reduced scale (short side ≥ 2 × {args.resize_size})")
        print(f"{described}; generated in {time.time() - t0:.1f}s; {os.cpu_count()} CPUs "
              f"visible, affinity {len(os.sched_getaffinity(0))}", flush=True)
        results["mixes"][mix] = {"description": described, "mean_jpeg_kb": round(float(mean_kb), 1)}
        setups.append(described)

        for threads in [int(t) for t in args.threads.split(",")]:
            datasets = {"decode": (tf.data.Dataset.from_tensor_slices(encoded).repeat()
                                   .map(lambda b: tf.io.decode_jpeg(b, channels=3),
                                        num_parallel_calls=tf.data.AUTOTUNE)
                                   .prefetch(tf.data.AUTOTUNE).with_options(options(threads)))}
            # (name, crop-window resize, reduced-scale decode)
            variants = [("pipeline", True, True)] + (
                [("pipeline_full_decode", True, False), ("pipeline_before", False, False)]
                if args.before else [])
            layout = sampling.Layout(args.batch_size, args.batch_size)
            for name, crop_window, reduced_decode in variants:
                datasets[name] = pipeline.batch_pairs(
                    tfrecord.read_training_pairs(pattern, 0, layout, shuffle_buffer=256),
                    preprocessor, args.batch_size, args.image_size, args.resize_size,
                    training=True, seed=0, crop_window_resize=crop_window,
                    reduced_decode=reduced_decode).with_options(options(threads))
            per_element = {"decode": 1, **{name: args.batch_size for name, *_ in variants}}
            if args.stages:
                datasets.update(stage_datasets(encoded, captions, preprocessor, args, threads))
                per_element.update(decode_for_resize=1, decode_and_resample=1,
                                   tokenize=args.batch_size)
            # One dataset at a time: an idle iterator's prefetch threads would keep filling its
            # buffers while another is timed (and steal its cores).
            figures = {name: measure(ds, per_element[name], args.seconds, args.repeats, warmup=2)
                       for name, ds in datasets.items()}
            for name, ips in figures.items():
                row = {"mix": mix, "threads": threads, "what": name, "images_per_s": round(ips, 1),
                       "images_per_s_per_core": round(ips / threads, 1)}
                results["figures"].append(row)
                table.append([mix, threads, name, f"{ips:.1f}", f"{ips / threads:.1f}",
                              f"{ips / figures['decode']:.0%}"])
            labels = {"pipeline": "", "pipeline_full_decode": ", full-scale decode (before)",
                      "pipeline_before": ", full decode + whole-image resize (before)"}
            for name in [v[0] for v in variants]:
                rows.append((f"pipeline images/s per core, {mix} mix, {threads} thread(s)"
                             f"{labels[name]} vs decode_jpeg", f"{figures[name] / threads:.1f}",
                             f"{figures['decode'] / threads:.1f} (decode only)",
                             f"{figures[name] / figures['decode']:.0%}"))
            if args.stages:
                ms = {name: 1e3 / ips for name, ips in figures.items()}  # per image, all threads
                parts = {"decode (reduced scale where it can)": ms["decode_for_resize"],
                         "antialiased resample of the crop window (ScaleAndTranslate)":
                             ms["decode_and_resample"] - ms["decode_for_resize"],
                         "WordPiece tokenization": ms["tokenize"]}
                parts["the rest (read, shuffle, parse, flip, batch)"] = (
                    ms["pipeline"] - sum(parts.values()))
                for part, t in parts.items():
                    print(f"  {mix}, {threads} thread(s): {part}: {t:.2f} ms/image "
                          f"({t / ms['pipeline']:.0%})")
                    rows.append((f"pipeline stage, {mix} mix, {threads} thread(s): {part}",
                                 f"{t:.2f} ms/image", f"{ms['pipeline']:.2f} ms/image (pipeline)",
                                 f"{t / ms['pipeline']:.0%}"))
            print(common.markdown_table(["mix", "threads", "what", "images/s", "per core",
                                         "of decode"], table[-len(figures):]), flush=True)
    print("\n" + common.markdown_table(["mix", "threads", "what", "images/s", "per core",
                                        "of decode"], table))
    common.record("bench_input_pipeline.py", rows,
                  "; ".join(setups) + f"; {args.resize_size}→{args.image_size} px crop, "
                  f"{args.max_tokens} tokens, batch {args.batch_size}; median of {args.repeats} "
                  f"windows of ~{args.seconds:.0f} s", not args.no_append, args.output, results)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
