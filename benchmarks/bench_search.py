"""The nearest-neighbour index of ``align_tf.search`` against brute force, faiss IVF-PQ / HNSW
and ScaNN (a benchmark, not a test).

    python benchmarks/bench_search.py                                # N = 10^6, dim 640
    python benchmarks/bench_search.py --n=4000000 --float16          # if memory allows
    python benchmarks/bench_search.py --n=20000 --dim=64 --no_append # smoke run
    python benchmarks/bench_search.py --savedmodel=RUN/savedmodel --real_images=100000

Vectors are clustered synthetic unit vectors ("images"); queries are of two kinds, both unseen at
build time: *image* queries (near stored vectors) and *text* queries, near the same clusters but
shifted by one common vector, as a dual encoder's text embeddings sit apart from its image
embeddings (the modality gap). A quantizer trained on images codes text queries badly
(rom1504/clip-retrieval issue 76), so recall is reported for both, and every method's parameter
is swept until its **text** recall@10 reaches ``--goal`` (matched recall).

With ``--savedmodel``, the same comparison over real embeddings of ``--real_images`` generated
images, with text queries made of generated captions, and the indexer's throughput (images/s and
images per CPU-second) against the ``image_embed_encoded`` signature alone on the same images.

Rows: recall@10 (text, image) against exact search, queries/s at batch 1 and batch 256, build
time and index size. ``ours`` is ``align_tf.search.ann`` as ``align_tf.index`` builds it
(``choose_params``, nprobe calibrated on probe queries of both kinds, disjoint from the measured
ones). The issue's goal: recall@10 ≥ 0.95 at ≥ 10× brute-force queries/s at 10^6.
Take headline rows on a quiet machine (``common.load``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from align_tf.search import ann  # noqa: E402

K = 10


def clustered(rng, n, dim, clusters, spread, dtype=np.float32):
    """``n`` unit vectors around ``clusters`` random centres (generated in blocks: bounded
    memory at 4·10^6 × 640)."""
    centres = ann.normalise(rng.normal(size=(clusters, dim)))
    out = np.empty((n, dim), dtype)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(0, clusters, m)] + rng.normal(0, spread, (m, dim))
        out[start:start + m] = ann.normalise(block.astype(np.float32))
    return centres, out


def queries(rng, centres, count, spread, gap=None):
    """Queries near the clusters; ``gap`` shifts them all (text queries)."""
    q = centres[rng.integers(0, len(centres), count)] + rng.normal(0, spread,
                                                                  (count, centres.shape[1]))
    return ann.normalise((q + (0 if gap is None else gap)).astype(np.float32))


def qps(search, q, batch, seconds=2.0):
    """Queries per second of ``search(batch of queries)`` over about ``seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        lo = done % max(1, len(q) - batch + 1)
        search(q[lo:lo + batch])
        done += batch
    return done / (time.perf_counter() - start)


def size_bytes(index) -> int:
    import faiss
    return int(faiss.serialize_index(index).nbytes)


def measure(name, index, search, truths, qs, build_s, setting):
    recall = {kind: ann.recall_at_k(search(q)[1], truths[kind]) for kind, q in qs.items()}
    return {"method": name, "setting": setting, "recall_text": recall["text"],
            "recall_image": recall["image"], "qps_1": qps(search, qs["text"], 1),
            "qps_256": qps(search, qs["text"], 256), "build_s": build_s,
            "size_mb": size_bytes(index) / 2**20 if index is not None else float("nan")}


def sweep(index, set_param, values, qs, truths, goal):
    """The first value whose text recall reaches ``goal`` (else the last)."""
    for value in values:
        set_param(value)
        if ann.recall_at_k(index.search(qs["text"], K)[1], truths["text"]) >= goal:
            return value
    return values[-1]


def synthetic(args) -> tuple:
    """Clustered vectors, unseen text/image queries and disjoint calibration probes."""
    rng = np.random.default_rng(0)
    centres, vectors = clustered(rng, args.n, args.dim, args.clusters, args.spread)
    gap = ann.normalise(rng.normal(size=(1, args.dim)))[0] * args.gap
    qs = {"text": queries(rng, centres, args.queries, args.spread, gap),
          "image": queries(rng, centres, args.queries, args.spread)}
    probes = {"image": ann.image_probes(vectors), "text": queries(rng, centres, 256, args.spread,
                                                                   gap)}
    return vectors, qs, probes


def compare(vectors, qs, probes, args) -> list:
    """One row per method over ``vectors`` (see the module docstring)."""
    import faiss
    rng = np.random.default_rng(1)
    n, dim = vectors.shape
    truths = {kind: ann.exact_top_k(vectors, q, K) for kind, q in qs.items()}
    rows = []
    flat = faiss.IndexFlatIP(dim)
    start = time.perf_counter()
    flat.add(vectors)
    rows.append(measure("brute force (faiss flat)", flat, lambda q: flat.search(q, K), truths,
                        qs, time.perf_counter() - start, "exact"))
    rows.append(measure("brute force (NumPy matmul)", None,
                        lambda q: (None, ann.exact_top_k(vectors, q, K)), truths, qs, 0.0,
                        "exact"))
    params = ann.choose_params(n, dim)
    # Below ann.EXACT_BELOW ours is exact; the forced-IVF row shows the approximate index (and its
    # nprobe calibration on text probes) on the same vectors.
    for forced, p in ((False, params), (True, ann.choose_params(n, dim, exact_below=0))):
        if forced and params["kind"] != "flat":
            break
        start = time.perf_counter()
        ours = ann.build_shard(vectors, p["kind"], p["nlist"])
        setting = p["kind"]
        if p["kind"] != "flat":
            nprobe, _ = ann.calibrate_nprobe(ours, vectors, probes)
            ours.nprobe, setting = nprobe, f"ivf_flat nlist={p['nlist']} nprobe={nprobe}"
        rows.append(measure("ours (align_tf.search)" + (", IVF forced" if forced else ""), ours,
                            lambda q, ours=ours: ours.search(q, K), truths, qs,
                            time.perf_counter() - start, setting))
    nlist = max(params["nlist"], int(4 * math.sqrt(n)))
    start = time.perf_counter()
    pq_m = max(m for m in range(1, args.pq_m + 1) if dim % m == 0)  # PQ needs M | dim
    pq = faiss.index_factory(dim, f"IVF{nlist},PQ{pq_m}", faiss.METRIC_INNER_PRODUCT)
    pq.train(vectors[rng.choice(n, min(n, 64 * nlist), replace=False)])
    pq.add(vectors)
    build = time.perf_counter() - start
    ivf = faiss.extract_index_ivf(pq)
    nprobe = sweep(pq, lambda v: setattr(ivf, "nprobe", v), [1, 2, 4, 8, 16, 32, 64, 128, 256,
                                                              512, nlist], qs, truths, args.goal)
    rows.append(measure("faiss IVF-PQ", pq, lambda q: pq.search(q, K), truths, qs, build,
                        f"nlist={nlist} PQ{pq_m} nprobe={nprobe}"))
    start = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(vectors)
    build = time.perf_counter() - start
    ef = sweep(hnsw, lambda v: setattr(hnsw.hnsw, "efSearch", v),
               [16, 32, 64, 128, 256, 512, 1024], qs, truths, args.goal)
    rows.append(measure("faiss HNSW32", hnsw, lambda q: hnsw.search(q, K), truths, qs, build,
                        f"efSearch={ef}"))
    rows.extend(_scann(vectors, qs, truths))
    return rows


WORDS = ("red", "blue", "green", "yellow", "purple", "orange", "dark", "bright", "striped",
         "smooth", "noisy", "pale")


def real(args) -> tuple:
    """Embeddings of ``--real_images`` generated images (the SavedModel's
    ``image_embed_encoded``); text queries and probes: generated captions (``text_embed``).
    Also times ``align_tf.index`` against the signature alone on the same images."""
    import shutil
    import tempfile

    from PIL import Image

    from align_tf.search import pipeline
    from align_tf.search.index import PROBE_TEXTS
    from align_tf.search.model import Embedder, resolve
    rng = np.random.default_rng(0)
    root = tempfile.mkdtemp(prefix="bench_search_")
    try:
        encoded = []
        for i in range(args.real_images):
            small = rng.random((4, 4, 3)) * 255
            image = Image.fromarray(small.astype(np.uint8)).resize((96, 96), Image.BILINEAR)
            path = os.path.join(root, "images", f"{i // 1000:04d}", f"{i:07d}.jpg")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            image.save(path, quality=90)
            encoded.append(open(path, "rb").read())
        embedder = Embedder(resolve(args.savedmodel))
        embedder.images(encoded[:64])  # warm-up: tracing
        cpu, wall = time.process_time(), time.perf_counter()
        vectors, _ = embedder.images(encoded)
        alone = (len(encoded) / (time.perf_counter() - wall),
                 len(encoded) / (time.process_time() - cpu))
        cpu, wall = time.process_time(), time.perf_counter()
        pipeline.index(args.savedmodel, f"images:{root}/images", os.path.join(root, "index"),
                       progress=False)
        ours = (len(encoded) / (time.perf_counter() - wall),
                len(encoded) / (time.process_time() - cpu))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    texts = [" ".join(rng.choice(WORDS, 3)) for _ in range(args.queries)]
    qs = {"text": ann.normalise(embedder.texts(texts)),
          "image": ann.image_probes(vectors, count=args.queries, seed=3)}
    probes = {"image": ann.image_probes(vectors), "text": ann.normalise(
        embedder.texts(list(PROBE_TEXTS)))}
    throughput = {"signature alone (images/s, images per CPU-s)": alone,
                  "align_tf.index incl. Beam, read, write, index build": ours}
    return ann.normalise(vectors), qs, probes, throughput


def _scann_numpy_api():
    """``scann_ops_pybind`` without running ``scann/__init__.py``, which loads TF ops built for
    TF 2.20 and fails beside TF 2.21 (undefined absl symbol). Empty namespace modules stand in
    for the packages above it; the pybind module itself needs only NumPy."""
    import importlib.util
    import types
    if "scann.scann_ops.py.scann_ops_pybind" in sys.modules:  # a second call
        return sys.modules["scann.scann_ops.py.scann_ops_pybind"]
    spec = importlib.util.find_spec("scann")
    if spec is None:
        raise ImportError("No module named 'scann'")
    root = spec.submodule_search_locations[0]
    for name, sub in (("scann", ""), ("scann.scann_ops", "scann_ops"),
                      ("scann.scann_ops.py", "scann_ops/py"), ("scann.scann_ops.cc", "scann_ops/cc")):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [os.path.join(root, sub)]
            sys.modules[name] = module
    from scann.scann_ops.py import scann_ops_pybind
    return scann_ops_pybind


def _scann(vectors, qs, truths) -> list:
    """ScaNN through its NumPy API, where it imports (its package __init__ imports TF ops built
    for another TF; never install scann[tf])."""
    try:
        scann_ops_pybind = _scann_numpy_api()
    except Exception as e:  # noqa: BLE001 (ImportError, or the TF op library failing to load)
        print(f"ScaNN: not importable ({type(e).__name__}: {str(e)[:120]})")
        return []
    start = time.perf_counter()
    n = len(vectors)
    searcher = (scann_ops_pybind.builder(vectors, K, "dot_product")
                .tree(num_leaves=int(4 * math.sqrt(n)), num_leaves_to_search=64,
                      training_sample_size=min(n, 250_000))
                .score_ah(2, anisotropic_quantization_threshold=0.2).reorder(100).build())
    build = time.perf_counter() - start
    return [measure("ScaNN", None, lambda q: (None, searcher.search_batched(q)[0]), truths, qs,
                    build, "leaves 4√N, search 64, AH2, reorder 100")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=0.04, help="per-dimension noise")
    parser.add_argument("--gap", type=float, default=0.8, help="modality-gap shift (norm)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--pq_m", type=int, default=64)
    parser.add_argument("--goal", type=float, default=0.95)
    parser.add_argument("--savedmodel", default=None, help="also: real embeddings of generated "
                        "images through this SavedModel, and the indexer's throughput")
    parser.add_argument("--real_images", type=int, default=10_000)
    parser.add_argument("--real_only", action="store_true", help="only the --savedmodel rows")
    parser.add_argument("--no_append", action="store_true")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    rows = [] if args.real_only else [dict(r, data="synthetic")
                                      for r in compare(*synthetic(args), args)]
    throughput = {}
    if args.savedmodel:
        vectors, qs, probes, throughput = real(args)
        rows += [dict(r, data="real") for r in compare(vectors, qs, probes, args)]
        for name, (wall, per_cpu) in throughput.items():
            print(f"{name}: {wall:.1f} images/s, {per_cpu:.1f} images per CPU-second")
    brute = rows[0]["qps_1"]
    headers = ["data", "method", "setting", "recall@10 text", "recall@10 image", "q/s batch 1",
               "q/s batch 256", "build s", "size MB"]
    table = [[r["data"], r["method"], r["setting"], f"{r['recall_text']:.3f}", f"{r['recall_image']:.3f}",
              f"{r['qps_1']:.0f}", f"{r['qps_256']:.0f}", f"{r['build_s']:.1f}",
              f"{r['size_mb']:.0f}"] for r in rows]
    print(common.markdown_table(headers, table))
    setup = (f"real: {args.real_images} generated 96-px JPEGs through {args.savedmodel}, "
             f"{args.queries} caption queries, k={K}" if args.real_only else
             f"N={args.n} dim={args.dim} clusters={args.clusters} gap={args.gap} k={K}"
             + (f"; real rows: {args.real_images} images" if args.savedmodel else ""))
    results = [(f"{r['data']}: {r['method']} [{r['setting']}] recall@10 text/image, q/s b1/b256, build s, MB",
                f"{r['recall_text']:.3f}/{r['recall_image']:.3f}, {r['qps_1']:.0f}/"
                f"{r['qps_256']:.0f}, {r['build_s']:.1f}, {r['size_mb']:.0f}",
                f"brute force {brute:.0f} q/s b1", common.fmt_ratio(r["qps_1"], brute))
               for r in rows]
    results += [(f"images/s {name}", f"{wall:.1f} ({per_cpu:.1f} per CPU-s)", "", "")
                for name, (wall, per_cpu) in throughput.items()]
    common.record("bench_search", results, setup, append=not args.no_append,
                  output=args.output, data=rows)


if __name__ == "__main__":
    main()
