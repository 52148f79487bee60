"""Load test of ``python -m align_tf.serve`` on loopback (a benchmark, not a test): requests/s
and p50 / p99 latency of text queries, image queries and thumbnails at several concurrencies,
against an index of 10^5 vectors.

    python benchmarks/bench_serve.py                         # N = 10^5, 1000 requests a row
    python benchmarks/bench_serve.py --savedmodel=RUN/savedmodel
    python benchmarks/bench_serve.py --n=5000 --requests=100 --no_append   # smoke run

The index, honestly: ``--real`` generated images (synthetic shapes, every one a file, embedded
by the SavedModel's ``image_embed_encoded``) plus N − real synthetic unit vectors clustered around
those embeddings (sources pointing at the real files, so that thumbnails work), built by
``align_tf.search.index.build`` exactly as ``align_tf.index`` builds it at that N (IVF above 5·10^4,
nprobe calibrated). The SavedModel is ``--savedmodel``, else the default preset, untrained
(``align_tf.build_model()``: its towers' cost is the trained model's).

The server runs as ``python -m align_tf.serve`` in its own process; the clients are threads of
this one, each with a keep-alive connection, sending ``--requests`` requests in all per row
(texts and images cycled from fixed sets). Client and server share the machine's cores, so
requests/s is for the pair. ``reference`` is the server's own ``query_time_ms`` (embedding plus
search, no HTTP) at its median: the ratio is what HTTP, parsing and queueing add.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TEXTS = [f"a {size}{colour} {shape}" for size in ("", "big ", "small ")
         for colour in ("red", "green", "blue", "yellow", "purple", "orange")
         for shape in ("circle", "square", "triangle", "star", "cross")]


def make_index(workdir: str, savedmodel: str | None, n: int, real: int, seed: int = 0) -> dict:
    """Writes the images and the index under ``workdir``; returns what the setup line says."""
    from PIL import Image

    import align_tf
    from align_tf.data import synthetic
    from align_tf.search import ann
    from align_tf.search import index as index_lib
    from align_tf.search.model import Embedder, identity, resolve
    if savedmodel is None:
        savedmodel = align_tf.export(align_tf.build_model(), os.path.join(workdir, "savedmodel"))
    savedmodel = resolve(savedmodel)
    rng = np.random.default_rng(seed)
    images, sources = [], []
    for i in range(real):
        pair = synthetic.CLASSES[i % len(synthetic.CLASSES)]
        out = io.BytesIO()
        Image.fromarray(synthetic.render(pair, 96, rng)[0]).save(out, format="PNG")
        sources.append(os.path.join(workdir, "images", f"{pair[0]}_{pair[1]}_{i:05d}.png"))
        os.makedirs(os.path.dirname(sources[-1]), exist_ok=True)
        with open(sources[-1], "wb") as f:
            f.write(out.getvalue())
        images.append(out.getvalue())
    embedder = Embedder(savedmodel)
    start = time.perf_counter()
    embeddings, valid = embedder.images(images)
    embed_s = time.perf_counter() - start
    assert valid.all()
    # Synthetic rows: a real embedding plus noise, renormalised (clusters around real images).
    dim = embeddings.shape[1]
    picks = rng.integers(0, real, n - real)
    noise = rng.normal(0, 0.6 / np.sqrt(dim), (n - real, dim)).astype(np.float32)
    vectors = np.concatenate([embeddings, ann.normalise(embeddings[picks] + noise)])
    ids = [f"real/{i:05d}" for i in range(real)] + [f"synthetic/{i:07d}" for i in range(n - real)]
    index_dir = os.path.join(workdir, "index")
    os.makedirs(os.path.join(index_dir, "parts"), exist_ok=True)
    np.savez(os.path.join(index_dir, "parts", "part-00000.npz"), embeddings=vectors,
             ids=np.array(ids), sources=np.array(sources + [sources[p] for p in picks]),
             captions=np.array([""] * n), outcomes=np.array([index_lib.EMBEDDED] * n),
             hashes=np.array([f"{i}" for i in range(n)]))
    start = time.perf_counter()
    index_lib.build(index_dir, {"parts": [{"name": "part-00000"}], "modality": "image"},
                    {"path": savedmodel, "hash": identity(savedmodel)}, embedder)
    meta = json.load(open(os.path.join(index_dir, "index.json")))
    return {"index": index_dir, "sources": sources, "images": images, "dim": dim,
            "params": meta["params"], "nprobe": meta["shards"][0].get("nprobe"),
            "build_s": time.perf_counter() - start, "embed_ms": 1000 * embed_s / real,
            "savedmodel": savedmodel}


def start_server(index_dir: str) -> tuple:
    """``python -m align_tf.serve`` on a free port: ``(process, port)`` once it serves."""
    proc = subprocess.Popen([sys.executable, "-m", "align_tf.serve", f"--index={index_dir}",
                             "--port=0"], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(common.HERE))
    for line in proc.stdout:
        found = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return proc, int(found.group(1))
    raise RuntimeError(f"the server did not start (exit {proc.wait()})")


def multipart(data: bytes) -> tuple:
    boundary = "bench-serve-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"'
            f"\r\nContent-Type: image/png\r\n\r\n").encode() + data + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n10\r\n'
            f"--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}"


def requests_of(kind: str, setup: dict) -> list:
    """``(method, target, body, headers)`` to cycle through for ``kind``."""
    if kind == "text":
        return [("GET", "/api/search?" + urllib.parse.urlencode({"text": t, "k": 10}), None, {})
                for t in TEXTS]
    if kind == "image":
        out = []
        for data in setup["images"][:50]:
            body, content_type = multipart(data)
            out.append(("POST", "/api/search", body, {"Content-Type": content_type}))
        return out
    return [("GET", "/api/thumbnail?id=" + urllib.parse.quote(f"real/{i:05d}"), None, {})
            for i in range(min(50, len(setup["images"])))]


def load(port: int, requests: list, total: int, concurrency: int) -> dict:
    """``total`` requests from ``concurrency`` keep-alive clients: req/s, latencies, the
    server's query times."""
    latencies, server_ms, errors = [], [], []
    per_client = [total // concurrency + (c < total % concurrency) for c in range(concurrency)]

    def client(c):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for i in range(per_client[c]):
            method, target, body, headers = requests[(c * 7919 + i) % len(requests)]
            start = time.perf_counter()
            conn.request(method, target, body, headers)
            response = conn.getresponse()
            data = response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                errors.append(f"{response.status} {data[:200]!r}")
            elif response.headers["Content-Type"].startswith("application/json"):
                server_ms.append(json.loads(data)["query_time_ms"])
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    ms = sorted(1000 * x for x in latencies)
    return {"rps": total / wall, "p50": statistics.median(ms),
            "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "server_p50": statistics.median(server_ms) if server_ms else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--real", type=int, default=500, help="of which real image files")
    parser.add_argument("--requests", type=int, default=1000, help="requests per row")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--kinds", default="text,image,thumbnail")
    parser.add_argument("--savedmodel", default=None)
    parser.add_argument("--no_append", action="store_true")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as workdir:
        setup = make_index(workdir, args.savedmodel, args.n, args.real)
        print(f"index: {args.n} vectors (dim {setup['dim']}), {setup['params']}, nprobe "
              f"{setup['nprobe']}, built in {setup['build_s']:.1f} s", flush=True)
        proc, port = start_server(setup["index"])
        try:
            results = run_rows(port, setup, args)
        finally:
            proc.terminate()
            proc.wait(30)
    params = setup["params"]
    index_kind = (f"IVF-Flat nlist {params['nlist']} nprobe {setup['nprobe']}"
                  if params["kind"] != "flat" else "flat")
    model = "default preset, untrained" if args.savedmodel is None else args.savedmodel
    described = (f"N={args.n:,} vectors, dim {setup['dim']}: {args.real} real generated images "
                 f"(96 px PNG) + {args.n - args.real:,} synthetic vectors clustered around their "
                 f"embeddings; {index_kind}; SavedModel: {model}; k=10; {args.requests} "
                 "requests per row, keep-alive clients (threads) and server on the same "
                 "machine; ThreadingHTTPServer")
    rows = []
    for (kind, c), r in results.items():
        ours = f"{r['rps']:.1f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms"
        if r["server_p50"] is None:
            rows.append((f"{kind} at concurrency {c}", ours, "n/a", "n/a"))
        else:
            rows.append((f"{kind} queries at concurrency {c}", ours,
                         f"server query_time_ms p50 {r['server_p50']:.1f} ms",
                         common.fmt_ratio(r["p50"], r["server_p50"])))
    print(common.markdown_table(["figure", "ours", "reference", "latency / query time"], rows))
    common.record("bench_serve.py", rows, described, append=not args.no_append,
                  output=args.output, data={"results": {f"{k}@{c}": v for (k, c), v in
                                                        results.items()}, "setup": described})


def run_rows(port: int, setup: dict, args) -> dict:
    results = {}
    for kind in args.kinds.split(","):
        requests = requests_of(kind, setup)
        load(port, requests, min(20, args.requests), 2)  # warm-up (threads, caches)
        for c in (int(x) for x in args.concurrency.split(",")):
            results[kind, c] = load(port, requests, args.requests, c)
            r = results[kind, c]
            print(f"{kind:9s} c={c:2d}: {r['rps']:7.1f} req/s  p50 {r['p50']:7.1f} ms  "
                  f"p99 {r['p99']:7.1f} ms", flush=True)
    return results


if __name__ == "__main__":
    main()
