"""The nearest-neighbour index over unit embeddings (faiss-cpu): parameters chosen from N.

* N below ``EXACT_BELOW`` (or ``exact_below``): an exact flat inner-product index. At that size a
  brute-force matrix product is as fast as any approximate index, and exact.
* Above it: IVF-Flat (inverted lists of the full float32 vectors). The coarse quantizer only
  picks which lists a query visits; the scores of what it visits are exact inner products, so
  the top-k is re-ranked exactly for free. Plain PQ is not used: a product quantizer trained on
  image vectors codes text queries' neighbourhoods badly (the dual encoder's "modality gap";
  clip-retrieval issue 76 saw text→image search fail on an autofaiss PQ index).
* ``nlist`` ≈ 4·√N (at least 39 training points per centroid, faiss' rule); ``nprobe`` is
  calibrated at build time: the smallest power of two whose recall@10 against exact search
  reaches ``RECALL_GOAL`` for image queries (stored vectors) *and* text queries (probe texts
  embedded by the same model), doubled once as a margin for unseen queries, so the modality gap
  is measured, not assumed.
* More vectors than ``budget_bytes`` of float32: several shards, each its own index; a query
  fans out to every shard and the per-shard top-k are merged.

Nothing here imports TensorFlow (``files`` does, for a remote index directory only).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from align_tf.search import files

# faiss logs "Successfully loaded faiss" at INFO on import: noise on a command's console.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

EXACT_BELOW = 50_000  # brute force is as fast as IVF below this (benchmarks/bench_search.py)
RECALL_GOAL = 0.97  # calibration target; the goal is 0.95 (margin for unseen queries)
BUDGET_BYTES = 8 << 30  # float32 vectors per shard
MIN_POINTS_PER_CENTROID = 39  # faiss' k-means warns below this


def choose_params(n: int, dim: int, *, exact_below: int = EXACT_BELOW,
                  budget_bytes: int = BUDGET_BYTES) -> dict:
    """The index parameters for ``n`` vectors of ``dim``: ``{"kind", "nlist", "num_shards"}``."""
    num_shards = max(1, math.ceil(n * dim * 4 / budget_bytes))
    per_shard = math.ceil(n / num_shards) if n else 0
    if per_shard < max(exact_below, 16):
        return {"kind": "flat", "nlist": 0, "num_shards": num_shards}
    nlist = int(min(4 * math.sqrt(per_shard), per_shard // MIN_POINTS_PER_CENTROID, 1 << 16))
    # A tiny forced-approximate index (tests) still gets a few lists, at some k-means quality.
    return {"kind": "ivf_flat", "nlist": max(nlist, min(8, per_shard // 4)),
            "num_shards": num_shards}


def shard_bounds(n: int, num_shards: int) -> list:
    """``[(start, stop), ...]``: ``n`` rows split into ``num_shards`` contiguous shards."""
    edges = np.linspace(0, n, num_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def build_shard(vectors: np.ndarray, kind: str, nlist: int, seed: int = 0):
    """A trained, filled faiss index over ``vectors`` (float32 ``[n, d]``, unit rows)."""
    import faiss
    vectors = np.ascontiguousarray(vectors, np.float32)
    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        # k-means on a sample: 64 points per centroid is plenty and bounds the build time.
        take = min(len(vectors), 64 * nlist)
        sample = vectors[np.random.default_rng(seed).choice(len(vectors), take, replace=False)]
        index.train(sample)
    index.add(vectors)
    return index


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact top-``k`` inner products (NumPy), ``[q, k]``."""
    scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k found (``-1`` entries count as misses)."""
    if truth.size == 0:
        return 1.0
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def calibrate_nprobe(index, vectors: np.ndarray, probes: dict, k: int = 10,
                     goal: float = RECALL_GOAL) -> tuple:
    """The smallest power-of-two ``nprobe`` whose recall@``k`` reaches ``goal`` for every probe
    set (``{"image": [q, d], "text": [q, d]}``), doubled once: queries unlike the probes (other
    texts) fall a little short of the probes' recall (measured: 0.94 against 0.97 on a tiny
    index), and one doubling closes most of the tail. Returns ``(nprobe, {name: recall})``."""
    truths = {name: exact_top_k(vectors, q, k) for name, q in probes.items() if len(q)}
    nlist = index.nlist

    def recalls(nprobe):
        index.nprobe = nprobe
        return {name: recall_at_k(index.search(probes[name], k)[1], truth)
                for name, truth in truths.items()}

    nprobe = 1
    while nprobe < nlist and min(recalls(nprobe).values()) < goal:
        nprobe = min(2 * nprobe, nlist)
    nprobe = min(2 * nprobe, nlist)
    return nprobe, recalls(nprobe)


def image_probes(vectors: np.ndarray, count: int = 256, seed: int = 0) -> np.ndarray:
    """Image-like queries: stored vectors with a little noise (a stored vector's own list is
    trivially found; a neighbour of it is the realistic case)."""
    rng = np.random.default_rng(seed)
    picks = vectors[rng.choice(len(vectors), min(count, len(vectors)), replace=False)]
    noisy = picks + rng.normal(0, 0.5 / math.sqrt(vectors.shape[1]), picks.shape)
    return normalise(noisy.astype(np.float32))


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1)).astype(np.float32)


def write_index(index, path: str) -> None:
    """Writes ``index`` atomically (temporary file, then rename). faiss writes local files
    only: a remote ``path`` is written locally, then copied up (``files``)."""
    import faiss
    with files.local_copy_for_writing(path) as local:
        faiss.write_index(index, local)


def read_index(path: str, nprobe: int = 0):
    """Reads an index written by ``write_index``; ``nprobe`` for an IVF one. A remote one is
    downloaded to a temporary file first, not read through ``faiss.deserialize_index``: that
    holds the bytes three times (Python's, faiss' copy, the index), 24 GB for an 8 GB shard."""
    import faiss
    with files.local_copy_for_reading(path) as local:
        index = faiss.read_index(local)
    if nprobe:
        faiss.extract_index_ivf(index).nprobe = nprobe
    return index


def search_shards(shards: list, offsets: list, queries: np.ndarray, k: int) -> tuple:
    """Fans ``queries`` out to every shard and merges: ``(scores [q, k], rows [q, k])``, global
    row numbers (shard offset added), best first; ``-1`` rows where fewer than ``k`` exist."""
    queries = np.ascontiguousarray(queries, np.float32)
    all_scores, all_rows = [], []
    for index, offset in zip(shards, offsets):
        scores, rows = index.search(queries, min(k, index.ntotal) or 1)
        all_scores.append(np.where(rows >= 0, scores, -np.inf))
        all_rows.append(np.where(rows >= 0, rows + offset, -1))
    scores, rows = np.concatenate(all_scores, 1), np.concatenate(all_rows, 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
