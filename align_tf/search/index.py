"""An index directory: build the nearest-neighbour index from embedded parts, load it, query it.

Layout of ``INDEX_DIR``, a local directory or any ``tf.io.gfile`` one (``gs://B/index``); every
file is written atomically, a temporary file then a rename (``files``)::

    plan.json          the input and its ids split into fixed parts, up front (align_tf.index)
    parts/NAME.npz     one part's embeddings (float32 or float16), ids, sources, captions,
                       per-id outcome and content hash; present = done (resume skips it)
    todo/              the parts the last run had to embed, handed to the runner as files
    stats.json         {"embedded", "skipped": {"not_an_image", "corrupt", "unreadable"},
                        "duplicates"}
    rows.jsonl         one {"id", "source", "caption"} per indexed row, in row order
    ann/shard-K.faiss  the faiss index of rows [start, stop) (see ``ann``)
    index.json         model {"path", "hash"}, modality (image, or text: a caption index), dim,
                       count, parameters, shards (written last)

``Index.load(DIR).query(text=..., image=..., plus=[...], minus=[...], weight=1.0, k=10)`` embeds
the query with the recorded SavedModel and returns ``[{"id", "score", "source", "caption"}]``,
best first; the query is q = normalise(ê + w·Σê₊ − w·Σê₋) (ALIGN's Figure 5).
"""

from __future__ import annotations

import io
import json
import time

import numpy as np

from align_tf.search import ann, files
from align_tf.search.model import Embedder, SearchError, identity, resolve

FORMAT = 1
REASONS = ("not_an_image", "corrupt", "unreadable")
EMBEDDED = "embedded"
# Probe texts for calibrating nprobe on text queries (the modality gap): generic captions.
PROBE_TEXTS = tuple(f"a photo of {what}" for what in (
    "a dog", "a cat", "a car", "a red flower", "a mountain", "the sea", "a city at night",
    "a person smiling", "food on a plate", "a bird", "a house", "a tree", "a computer",
    "a child playing", "a bicycle", "a painting", "a street", "snow", "a beach", "a horse",
    "a chair", "shoes", "a cake", "a boat", "a train", "a book", "a guitar", "a clock",
    "a bridge", "a forest", "the moon", "a logo")) + (
    "red", "blue", "green", "a small black square", "text", "two people", "a diagram")


def write_json(path: str, obj) -> None:
    """``obj`` as JSON at ``path``, atomically."""
    files.write_bytes(path, json.dumps(obj, indent=1).encode("utf-8"))


def read_json(path: str):
    return json.loads(files.read_bytes(path).decode("utf-8"))


def load_part(path: str) -> dict:
    """A part file's arrays (``embeddings``, ``ids``, ``sources``, ``captions``, ``outcomes``,
    ``hashes``)."""
    with np.load(path if not files.is_remote(path) else io.BytesIO(files.read_bytes(path)),
                 allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def collect(index_dir: str, plan: dict) -> tuple:
    """Every part in plan order → ``(vectors float32, rows [{id, source, caption}], stats)``;
    a valid image whose bytes equal an earlier one's is a duplicate, not a row."""
    vectors, rows, seen = [], [], set()
    stats = {"embedded": 0, "skipped": dict.fromkeys(REASONS, 0), "duplicates": 0}
    for part in plan["parts"]:
        data = load_part(files.join(index_dir, "parts", part["name"] + ".npz"))
        keep = []
        for i, outcome in enumerate(data["outcomes"]):
            if outcome != EMBEDDED:
                stats["skipped"][str(outcome)] += 1
            elif data["hashes"][i] in seen:
                stats["duplicates"] += 1
            else:
                seen.add(data["hashes"][i])
                keep.append(i)
                rows.append({"id": str(data["ids"][i]), "source": str(data["sources"][i]),
                             "caption": str(data["captions"][i]) or None})
        vectors.append(data["embeddings"][keep].astype(np.float32))
    stats["embedded"] = len(rows)
    dim = vectors[0].shape[1] if vectors else 0
    return (np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)), rows, stats


def build(index_dir: str, plan: dict, model: dict, embedder=None, *,
          exact_below: int = ann.EXACT_BELOW, budget_bytes: int = ann.BUDGET_BYTES) -> dict:
    """Builds ``rows.jsonl``, ``ann/``, ``stats.json`` and ``index.json`` from the parts;
    returns the stats. ``embedder`` embeds the text probes for an approximate index."""
    start = time.time()
    vectors, rows, stats = collect(index_dir, plan)
    if not len(vectors):
        raise SearchError("no image could be embedded: nothing to index "
                          f"(skipped: {stats['skipped']}, duplicates: {stats['duplicates']})")
    params = ann.choose_params(len(vectors), vectors.shape[1], exact_below=exact_below,
                               budget_bytes=budget_bytes)
    files.makedirs(files.join(index_dir, "ann"))
    probes = None
    if params["kind"] != "flat":
        embedder = embedder or Embedder(model["path"])
        probes = {"image": ann.image_probes(vectors),
                  "text": ann.normalise(embedder.texts(list(PROBE_TEXTS)))}
    shards = []
    for number, (lo, hi) in enumerate(ann.shard_bounds(len(vectors), params["num_shards"])):
        shard = ann.build_shard(vectors[lo:hi], params["kind"], params["nlist"])
        entry = {"file": f"ann/shard-{number:05d}.faiss", "start": lo, "stop": hi}
        if probes is not None:
            entry["nprobe"], entry["recall@10"] = ann.calibrate_nprobe(shard, vectors[lo:hi],
                                                                       probes)
        ann.write_index(shard, files.join(index_dir, entry["file"]))
        shards.append(entry)
    with files.local_copy_for_writing(files.join(index_dir, "rows.jsonl")) as local, \
            open(local, "w", encoding="utf-8") as f:  # streamed: 10^8 rows are gigabytes
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_json(files.join(index_dir, "stats.json"), stats)
    write_json(files.join(index_dir, "index.json"), {
        "format": FORMAT, "model": model, "modality": plan.get("modality", "image"),
        "dim": int(vectors.shape[1]), "count": len(rows),
        "params": params, "shards": shards, "build_seconds": round(time.time() - start, 3)})
    return stats


def _as_list(texts) -> list:
    if texts is None:
        return []
    return [texts] if isinstance(texts, str) else list(texts)


class Index:
    """A built index directory, ready to query (``Index.load``)."""

    def __init__(self, directory: str, meta: dict, rows: list, shards: list, model_path: str):
        self.directory, self.meta, self.rows, self.shards = directory, meta, rows, shards
        self.offsets = [s["start"] for s in meta["shards"]]
        self.model_path = model_path
        self._embedder = None

    @classmethod
    def load(cls, directory: str, model: str | None = None) -> "Index":
        """Opens ``directory``; queries embed with the SavedModel recorded in it, or ``model``
        (a moved copy of it). A SavedModel other than the one the index was built with (another
        export, other weights) is a ``SearchError``."""
        try:
            path = files.join(directory, "index.json")
            if not files.exists(path):
                raise SearchError(f"{directory} is not a built index (no index.json); build "
                                  "it with python -m align_tf.index")
            meta = read_json(path)
            model_path = resolve(model) if model else meta["model"]["path"]
            check_model(meta["model"], model_path)
            with files.local_copy_for_reading(files.join(directory, "rows.jsonl")) as local, \
                    open(local, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f]
            shards = [ann.read_index(files.join(directory, s["file"]), s.get("nprobe", 0))
                      for s in meta["shards"]]
        except OSError as e:  # unreadable (permissions, a file missing, an unknown scheme)
            raise SearchError(f"cannot read the index {directory}: {e}") from None
        return cls(directory, meta, rows, shards, model_path)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.model_path)
        return self._embedder

    def share_model(self, other: "Index") -> bool:
        """Embeds queries with ``other``'s model when both indexes were built with the same
        SavedModel (an image and a caption index: one model in memory, not two); whether so."""
        if self.meta["model"]["hash"] != other.meta["model"]["hash"]:
            return False
        self._embedder = other.embedder
        return True

    def embed_query(self, text: str | None = None, image=None, plus=(), minus=(),
                    weight: float = 1.0) -> np.ndarray:
        """q = normalise(ê + w·Σê₊ − w·Σê₋), float32 ``[D]``; ``image`` is a path or bytes."""
        if (text is None) == (image is None):
            raise SearchError("give exactly one of text or image")
        if text is not None:
            base = self.embedder.texts([text])[0]
        else:
            base = self._embed_image(image)
        plus, minus = _as_list(plus), _as_list(minus)
        query = base.astype(np.float64)
        if plus:
            query = query + weight * self.embedder.texts(plus).astype(np.float64).sum(0)
        if minus:
            query = query - weight * self.embedder.texts(minus).astype(np.float64).sum(0)
        return ann.normalise(query[None])[0]

    def _embed_image(self, image) -> np.ndarray:
        from align_tf.search.model import decodable_bytes
        name = "the image"
        if not isinstance(image, (bytes, bytearray)):
            name = str(image)
            try:
                image = files.read_bytes(str(image))
            except OSError as e:
                raise SearchError(f"cannot read image {name}: {e.strerror or e}") from None
        data = decodable_bytes(bytes(image))
        embeddings, valid = self.embedder.images([data or b""])
        if not valid[0]:
            raise SearchError(f"{name} is not a decodable image")
        return embeddings[0]

    def search(self, queries: np.ndarray, k: int = 10) -> tuple:
        """Raw search of unit query vectors ``[q, D]``: ``(scores, rows)`` ``[q, k]``."""
        return ann.search_shards(self.shards, self.offsets, np.atleast_2d(queries), k)

    def query(self, text: str | None = None, image=None, plus=(), minus=(), weight: float = 1.0,
              k: int = 10) -> list:
        """The ``k`` best rows for the query: ``[{"id", "score", "source", "caption"}]``."""
        if k < 1:
            raise SearchError(f"k must be >= 1; got {k}")
        q = self.embed_query(text=text, image=image, plus=plus, minus=minus, weight=weight)
        scores, rows = self.search(q[None], k)
        return [{"id": self.rows[r]["id"], "score": float(s), "source": self.rows[r]["source"],
                 "caption": self.rows[r].get("caption")} for s, r in zip(scores[0], rows[0])
                if r >= 0]


def check_model(recorded: dict, path: str) -> None:
    """Raises ``SearchError`` unless the SavedModel at ``path`` is the one ``recorded``."""
    if not files.exists(files.join(path, "saved_model.pb")):
        raise SearchError(f"the index's SavedModel {path} is missing; pass the moved copy "
                          "(--model)")
    if identity(path) != recorded["hash"]:
        raise SearchError(f"the SavedModel at {path} is not the one this index was built with "
                          f"({recorded['path']}, sha256 {recorded['hash'][:12]}); queries must be "
                          "embedded by the same model")
