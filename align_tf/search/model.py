"""The SavedModel an index is built with: where it is, its identity, and embedding through it.

An index records ``{"path", "hash"}``: the SHA-256 of the SavedModel's ``saved_model.pb`` and
``variables/variables.index`` (the graph and the names/shapes/offsets of the weights: a re-export
or a different checkpoint changes it; hashing the weights' data files would cost minutes at
align-base's size). Queries are embedded with that module, and only that module.

Images go through the ``image_embed_encoded`` signature (encoded bytes; ``valid`` False for what
does not decode) and texts through ``text_embed``, as given (no prompt template). WebP, which
``tf.io.decode_image`` cannot read, is transcoded to PNG with Pillow first.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from align_tf.search import files

SAVEDMODEL = "savedmodel"  # a run directory's export (align_tf.run_dir.SAVEDMODEL)
_IDENTITY_FILES = (("saved_model.pb",), ("variables", "variables.index"))

# Leading bytes of the formats we index; anything else is "not_an_image".
_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF87a": "gif",
          b"GIF89a": "gif", b"BM": "bmp"}


class SearchError(ValueError):
    """A mistake the user can fix (bad index, wrong model, bad query); one line."""


def resolve(model: str) -> str:
    """The SavedModel directory of ``model``: a SavedModel, or a run directory's
    ``savedmodel/`` (not exported for you: ``python -m align_tf.export --model_dir=RUN``); local
    or remote (``gs://``: Dataflow's workers must reach it)."""
    if files.exists(files.join(model, "saved_model.pb")):
        return files.abspath(model)
    inner = files.join(model, SAVEDMODEL)
    if files.exists(files.join(inner, "saved_model.pb")):
        return files.abspath(inner)
    if files.exists(files.join(model, "config.json")):
        raise SearchError(f"run directory {model} has no exported {SAVEDMODEL}/; export it "
                          f"first: python -m align_tf.export --model_dir={model}")
    raise SearchError(f"{model} is neither a SavedModel nor a run directory with {SAVEDMODEL}/")


def identity(path: str) -> str:
    """The SHA-256 (hex) of the SavedModel's graph and variable index."""
    digest = hashlib.sha256()
    for names in _IDENTITY_FILES:
        try:
            digest.update(files.read_bytes(files.join(path, *names)))  # a few MB at most
        except OSError as e:
            raise SearchError(f"cannot read {'/'.join(names)} of the SavedModel at {path}: "
                              f"{e}") from None
    return digest.hexdigest()


def image_format(data: bytes) -> str | None:
    """``"jpeg"``, ``"png"``, ``"gif"``, ``"bmp"``, ``"webp"`` from the leading bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def decodable_bytes(data: bytes) -> bytes | None:
    """``data`` as the signature can take it: WebP transcoded to PNG (None if Pillow cannot)."""
    if image_format(data) != "webp":
        return data
    try:
        from PIL import Image
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG")
        return out.getvalue()
    except Exception:  # noqa: BLE001 (Pillow raises many kinds for damaged data)
        return None


class Embedder:
    """The SavedModel's ``image_embed_encoded`` and ``text_embed``, as NumPy in and out."""

    def __init__(self, path: str):
        import importlib

        import tensorflow as tf
        importlib.import_module("tensorflow_text")  # registers the tokenizer ops the module uses
        self.path = path
        self.module = tf.saved_model.load(path)
        names = set(self.module.signatures)
        for name in ("image_embed_encoded", "text_embed"):
            if name not in names:
                raise SearchError(f"the SavedModel at {path} has no {name} signature")
        self._image = self.module.signatures["image_embed_encoded"]
        self._text = self.module.signatures["text_embed"]
        self.calls = 0  # images embedded (tests count re-embedding with it)

    def images(self, encoded: list, batch_size: int = 64) -> tuple:
        """``(embeddings float32 [n, D], valid bool [n])`` for a list of encoded images."""
        import tensorflow as tf
        rows, valid = [], []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            out = self._image(encoded=tf.constant(chunk, tf.string))
            rows.append(out["embeddings"].numpy().astype(np.float32))
            valid.append(out["valid"].numpy().astype(bool))
            self.calls += len(chunk)
        if not rows:
            return np.zeros((0, self.dim), np.float32), np.zeros((0,), bool)
        return np.concatenate(rows), np.concatenate(valid)

    def texts(self, texts: list) -> np.ndarray:
        """float32 ``[n, D]`` unit embeddings of ``texts``, as given."""
        import tensorflow as tf
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self._text(texts=tf.constant(list(texts), tf.string))
        return out["embeddings"].numpy().astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self._text.structured_outputs["embeddings"].shape[-1])
