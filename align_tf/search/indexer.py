"""Embeds a collection into an index directory with Apache Beam, resumably; then builds the index.

1. **Plan** (``plan.json``, up front): the input's ids, sorted, split into fixed parts of
   ``shard_size``. A rerun keeps the plan; ids not in it (new files, or ``append`` with another
   input) become new parts after the old ones.
2. **Embed** the parts not yet written, as a Beam pipeline (``align_tf.search.pipeline``;
   DirectRunner in memory by default, any runner's options pass through):
   ``Create(parts) | Reshuffle | ReadPart | RunInference | WritePart``. A part is RunInference's
   element, so reading, embedding and writing one part fuse into one step and a killed run
   loses at most the parts in flight. ``PartModelHandler`` loads the SavedModel with
   ``tf.saved_model.load`` (Beam's TF handlers use Keras' ``load_model``, which Keras 3 refuses
   for our SavedModel) and embeds through ``image_embed_encoded`` (``text_embed`` for a caption
   index); RunInference shares the loaded model per worker. Each part file is written atomically.
3. **Build** the nearest-neighbour index over every part (``align_tf.search.index.build``).

Every input file ends as exactly one of: embedded, a duplicate (same bytes as an earlier one),
or skipped by reason: ``not_an_image`` (not JPEG/PNG/GIF/BMP/WebP bytes), ``corrupt`` (an image
the signature's decoder rejects: truncated, damaged) or ``unreadable`` (the file cannot be read).

Paths (the input, the index directory) may be local or remote (``gs://``): ``files`` reads,
lists and writes them.

Fault injection, for tests: ``ALIGN_INDEX_STOP_AFTER_PARTS=k`` stops the run (``Stopped``) once
this process has written k parts.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time

import numpy as np

from align_tf.search import files
from align_tf.search import index as index_lib
from align_tf.search.model import SearchError, decodable_bytes, image_format

STOP_ENV = "ALIGN_INDEX_STOP_AFTER_PARTS"
SHARD_SIZE = 1000
# images:DIR is planned by id; the sample formats by file (each input shard is one part).
SAMPLE_KINDS = ("webdataset", "img2dataset_tfrecord", "tfrecord")
# captions:FILE (one caption per line; id its line number): a text index, for image → text.
INPUT_KINDS = ("images", "captions") + SAMPLE_KINDS
# Per process: images embedded (tests count re-embedding) and parts written (the stop hook).
COUNTERS = {"images": 0, "parts": 0}


class Stopped(RuntimeError):
    """The fault-injection hook stopped the run."""


def parse_input(spec: str) -> tuple:
    """``"images:DIR"`` → ``("images", DIR)``, ``"captions:FILE"`` → ``("captions", FILE)``,
    ``"webdataset:PATTERN"`` (also
    ``img2dataset_tfrecord:``, ``tfrecord:``) → ``(kind, PATTERN)``; a ``SearchError`` if
    malformed or nothing is there."""
    kind, sep, arg = spec.partition(":")
    if kind not in INPUT_KINDS or not sep or not arg:
        raise SearchError(f"--input must be one of {', '.join(k + ':' for k in INPUT_KINDS)} "
                          f"followed by a directory or file pattern; got {spec!r}")
    if kind == "images" and not files.isdir(arg):
        raise SearchError(f"--input {spec}: no such directory {arg}")
    if kind == "captions" and not files.isfile(arg):
        raise SearchError(f"--input {spec}: no such file {arg}")
    return kind, arg


def modality(spec: str) -> str:
    """What an input's rows are: ``"text"`` (captions) or ``"image"``."""
    return "text" if spec.startswith("captions:") else "image"


def _caption_lines(path: str, span: list | None = None) -> list:
    """``[(line number, caption, start byte, end byte)]`` of a captions file's non-blank lines
    (UTF-8, ``\\n`` or ``\\r\\n`` line ends); only those in ``span`` = ``[start byte, end byte,
    number of the line at start]`` if given: a part reads its own lines, not the whole file."""
    start, stop, number = span or (0, None, 1)
    try:
        data = files.read_bytes(path, start, stop)
    except OSError as e:
        raise SearchError(f"cannot read captions file {path}: {e}") from None
    lines, offset = [], start
    for n, line in enumerate(data.split(b"\n"), number):
        try:
            caption = line.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise SearchError(f"cannot read captions file {path}: line {n}: {e}") from None
        if caption:
            lines.append((n, caption, offset, offset + len(line) + 1))
        offset += len(line) + 1
    return lines


def list_ids(kind: str, root: str) -> list:
    """The ids of an ``images`` input: every regular file under ``root``, as POSIX paths
    relative to it; for a sample format, its files (``webdataset.expand``: braces, globs)."""
    if kind == "captions":
        return [str(line[0]) for line in _caption_lines(root)]
    if kind in SAMPLE_KINDS:
        from align_tf.data import webdataset
        try:
            with files.as_os_error(root):  # an unknown scheme, no permission
                return webdataset.expand(root)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise SearchError(f"--input {kind}:{root}: {e}") from None
    return files.walk_files(root)


def make_plan(index_dir: str, spec: str, model: dict, shard_size: int, append: bool) -> dict:
    """The plan, extended with the input's ids (files, for a sample format) not yet planned,
    written to ``plan.json``."""
    path = files.join(index_dir, "plan.json")
    plan = {"format": index_lib.FORMAT, "model": model, "inputs": [], "parts": []}
    if files.exists(path):
        plan = index_lib.read_json(path)
        if plan["model"]["hash"] != model["hash"]:
            raise SearchError(f"{index_dir} was built with another model ({plan['model']['path']})"
                              "; index into a new --output")
        if plan.get("modality", "image") != modality(spec):
            raise SearchError(f"{index_dir} is an index of {plan.get('modality', 'image')}s; "
                              f"{spec} would add {modality(spec)}s: index it into a new --output")
        if spec not in plan["inputs"] and not append:
            raise SearchError(f"{index_dir} indexes {', '.join(plan['inputs'])}; pass --append to "
                              f"add {spec}")
    kind, root = parse_input(spec)
    plan["modality"] = modality(spec)
    planned = {i for part in plan["parts"] if part["input"] == spec
               for i in part.get("ids", [part.get("file")])}
    # A caption part records its lines' byte span, so that it reads only them.
    spans = ({str(n): (a, b) for n, _, a, b in _caption_lines(root)} if kind == "captions"
             else {})
    new = [i for i in (spans or list_ids(kind, root)) if i not in planned]
    if spec not in plan["inputs"]:
        plan["inputs"].append(spec)
    step = 1 if kind in SAMPLE_KINDS else shard_size
    for start in range(0, len(new), step):
        part = {"name": f"part-{len(plan['parts']):05d}", "input": spec}
        if kind in SAMPLE_KINDS:
            part["file"] = new[start]
        else:
            part["ids"] = new[start:start + step]
        if spans:
            first, last = part["ids"][0], part["ids"][-1]
            part["span"] = [spans[first][0], spans[last][1], int(first)]
        plan["parts"].append(part)
    files.makedirs(files.join(index_dir, "parts"))
    index_lib.write_json(path, plan)
    return plan


def part_path(index_dir: str, name: str) -> str:
    return files.join(index_dir, "parts", name + ".npz")


def _file_entries(part: dict, root: str):
    """``(id, source, caption, bytes or None)`` per file of an ``images`` part (None: the file
    is unreadable)."""
    for id_ in part["ids"]:
        source = files.join(root, *id_.split("/"))
        try:
            yield id_, source, "", files.read_bytes(source)
        except OSError:
            yield id_, source, "", None


_DAMAGED = b"\0damaged"  # a sample its reader could not read whole: "corrupt"


def _sample_entries(kind: str, path: str):
    """The same per sample of a shard (``align_tf.data``'s readers); a damaged sample's bytes are
    ``b""`` (corrupt), a sample without an image is ``b""`` too."""
    if kind == "webdataset":
        from align_tf.data.webdataset import read_samples
    elif kind == "img2dataset_tfrecord":
        from align_tf.data.img2dataset import read_samples
    else:
        read_samples = _tfrecord_samples
    for sample in read_samples(path):
        if sample is None:  # the shard's framing is damaged: its reader logged what was lost
            return
        source = sample.url or f"{path}#{sample.key}"
        yield sample.key, source, sample.caption or "", (
            _DAMAGED if sample.error else sample.image or b"")


def _tfrecord_samples(path: str):
    """Our TFRecord shards (``image/encoded``, ``caption``) as ``webdataset.Sample``\\ s."""
    import tensorflow as tf

    from align_tf.data.tfrecord import KEYS
    from align_tf.data.webdataset import Sample
    name = os.path.basename(path)
    try:
        for number, record in enumerate(tf.data.TFRecordDataset(path)):
            try:
                features = tf.train.Example.FromString(record.numpy()).features.feature
                image, caption = (features[k].bytes_list.value[0] if k in features
                                  and features[k].bytes_list.value else b"" for k in KEYS)
                yield Sample(f"{name}#{number}", image=image, caption=caption.decode("utf-8"))
            except Exception:  # noqa: BLE001 (not an Example, caption not UTF-8)
                yield Sample(f"{name}#{number}", error="corrupt_member")
    except tf.errors.OpError:  # bad CRC, cut short: the rest of the file is lost
        yield None


def read_part(part: dict) -> dict:
    """A part's files or samples read and classified: ``ids``, ``sources``, ``captions``,
    ``data`` (bytes the signature can decode, or None), ``outcomes`` (a skip reason, or None:
    to embed) and ``hashes`` (of the bytes, for duplicates)."""
    kind, root = parse_input(part["input"])
    out = {"name": part["name"], "ids": [], "sources": [], "captions": [], "data": [],
           "outcomes": [], "hashes": [], "kind": kind}
    if kind == "captions":
        wanted = set(part["ids"])
        for n, caption, _, _ in _caption_lines(root, part.get("span")):
            if str(n) in wanted:
                for key, value in (("ids", str(n)), ("sources", f"{root}#{n}"),
                                   ("captions", caption), ("data", caption), ("outcomes", None),
                                   ("hashes", hashlib.sha1(caption.encode()).hexdigest())):
                    out[key].append(value)
        return out
    entries = (_sample_entries(kind, part["file"]) if kind in SAMPLE_KINDS
               else _file_entries(part, root))
    for id_, source, caption, raw in entries:
        data, outcome = None, None
        if raw is None:
            raw, outcome = b"", "unreadable"
        elif raw is _DAMAGED:
            outcome = "corrupt"
        elif image_format(raw) is None:
            outcome = "not_an_image"
        else:
            data = decodable_bytes(raw)
            outcome = None if data else "corrupt"
        for key, value in (("ids", id_), ("sources", source), ("captions", caption),
                           ("data", data), ("outcomes", outcome),
                           ("hashes", hashlib.sha1(raw).hexdigest() if data else "")):
            out[key].append(value)
    return out


def embed_part(part: dict, embedder, batch_size: int) -> dict:
    """``part`` with ``embeddings`` [n, D] (zero rows where not embedded) and final outcomes."""
    todo = [i for i, outcome in enumerate(part["outcomes"]) if outcome is None]
    if part.get("kind") == "captions":
        texts = [part["data"][i] for i in todo]
        vectors = np.concatenate([embedder.texts(texts[i:i + batch_size])
                                  for i in range(0, len(texts), batch_size)] or
                                 [np.zeros((0, embedder.dim), np.float32)])
        valid = [True] * len(todo)
    else:
        vectors, valid = embedder.images([part["data"][i] for i in todo], batch_size)
    COUNTERS["images"] += len(todo)
    embeddings = np.zeros((len(part["ids"]), embedder.dim), np.float32)
    embeddings[todo] = vectors
    outcomes = list(part["outcomes"])
    for i, ok in zip(todo, valid):
        outcomes[i] = index_lib.EMBEDDED if ok else "corrupt"
    return dict(part, embeddings=embeddings, outcomes=outcomes, data=None, kind=None)


def write_part(index_dir: str, part: dict, dtype: str) -> None:
    """The part's file, atomically (temporary file, then rename; ``files``)."""
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=part["embeddings"].astype(dtype),
             **{key: np.array(part[key], dtype=str)
                for key in ("ids", "sources", "captions", "outcomes", "hashes")})
    files.write_bytes(part_path(index_dir, part["name"]), buffer.getvalue())


class Progress:
    """One stderr line: parts and images done, images/s, ETA (this process' view)."""

    def __init__(self, total_images: int, total_parts: int, enabled: bool = True):
        self.total_images, self.total_parts, self.enabled = total_images, total_parts, enabled
        self.images = self.parts = 0
        self.first = None  # (time, images) when the first part was done: the model is loaded

    def update(self, images: int) -> str:
        self.images += images
        self.parts += 1
        now = time.time()
        if self.first is None:
            self.first = (now, self.images)
        done, elapsed = self.images - self.first[1], now - self.first[0]
        rate, eta = "- images/s", "ETA -"
        if done and elapsed > 0:
            rate = f"{done / elapsed:.1f} images/s"
            seconds = (self.total_images - self.images) * elapsed / done
            if not self.total_images:  # sample shards: their size is known once read
                seconds = (self.total_parts - self.parts) * elapsed / (self.parts - 1)
            eta = f"ETA {time.strftime('%H:%M:%S', time.gmtime(seconds))}"
        line = (f"\r[align_tf.index] parts {self.parts}/{self.total_parts}  images "
                f"{self.images}/{self.total_images or '?'}  {rate}  {eta}")
        if self.enabled:
            sys.stderr.write(line)
            sys.stderr.flush()
        return line
