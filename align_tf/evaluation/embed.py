"""Encoders for evaluation: one interface over a Keras ``DualEncoder`` and an exported SavedModel.

An ``Encoder`` embeds batches of preprocessed images (float32 pixels in [0, 1], already resized to
``image_size``) and lists of strings; evaluators only talk to this interface, so a training
checkpoint and a SavedModel (ours, or converted public weights) are evaluated by the same code.

``load_encoder`` builds one from a training ``model_dir`` (``config.json``, ``vocab.txt``,
``checkpoints/``) or from a SavedModel directory with the ``image_embed`` / ``text_embed``
signatures of ``align_tf.export``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from align_tf.data.pipeline import preprocess_image


class Encoder:
    """Image and text embedding for evaluation.

    Attributes:
      image_size: side of the square images ``embed_image_batch`` expects.
      resize_size: resize-then-centre-crop size of evaluation preprocessing (None: resize only).
      batch_size: batch size used when embedding lists and datasets.
    """

    image_size: int
    resize_size: int | None = None
    batch_size: int = 256

    def embed_image_batch(self, pixels) -> np.ndarray:
        """``(B, image_size, image_size, 3)`` float pixels in [0, 1] → ``(B, D)`` unit-norm."""
        raise NotImplementedError

    def embed_text_batch(self, texts) -> np.ndarray:
        """``(B,)`` strings → ``(B, D)`` unit-norm."""
        raise NotImplementedError

    def preprocess(self, image):
        """One uint8 or [0, 1] float image ``(H, W, 3)`` → float32 ``(S, S, 3)`` (eval crop)."""
        return preprocess_image(image, self.image_size, self.resize_size, training=False)

    def embed_texts(self, texts) -> np.ndarray:
        """A list of strings → ``(N, D)`` unit-norm float32, in ``batch_size`` chunks."""
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in texts]
        out = [self.embed_text_batch(tf.constant(texts[s:s + self.batch_size], tf.string))
               for s in range(0, len(texts), self.batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def embed_images(self, images) -> np.ndarray:
        """An array ``(N, H, W, 3)`` of uint8 or [0, 1] float images → ``(N, D)`` unit-norm."""
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(images))
        return self.embed_image_dataset(ds.map(lambda im: {"image": im}))[0]

    def embed_image_dataset(self, dataset: tf.data.Dataset, keys=()) -> tuple:
        """Embeds the ``"image"`` of every element of an *unbatched* dataset of dicts.

        Images are preprocessed (``preprocess``) and batched here. Returns ``(embeddings, extras)``
        where ``extras[key]`` stacks the element's other entries named in ``keys`` (e.g. labels;
        variable-length entries are padded with zeros or empty strings within each batch).
        """
        keys = tuple(keys)

        def prepare(ex):
            return dict({k: ex[k] for k in keys}, image=self.preprocess(ex["image"]))

        ds = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # padded_batch: extras may vary in length (captions per image); images are all S × S.
        ds = ds.padded_batch(self.batch_size).prefetch(2)
        embeddings, extras = [], {k: [] for k in keys}
        for batch in ds:
            embeddings.append(self.embed_image_batch(batch["image"]))
            for k in keys:
                extras[k].append(batch[k].numpy())
        emb = np.concatenate(embeddings).astype(np.float32) if embeddings \
            else np.zeros((0, 0), np.float32)
        return emb, {k: _concat_padded(v) for k, v in extras.items()}


def _concat_padded(arrays) -> np.ndarray:
    """Concatenates batches along axis 0, padding trailing axes to the widest batch."""
    if not arrays:
        return np.zeros(0)
    shape = np.max([a.shape for a in arrays], axis=0)
    if all(a.shape[1:] == tuple(shape[1:]) for a in arrays):
        return np.concatenate(arrays)
    fill = b"" if arrays[0].dtype == object else 0
    out = []
    for a in arrays:
        padded = np.full((a.shape[0],) + tuple(shape[1:]), fill, dtype=a.dtype)
        padded[tuple(slice(0, n) for n in a.shape)] = a
        out.append(padded)
    return np.concatenate(out)


class KerasEncoder(Encoder):
    """A ``DualEncoder`` (e.g. the model being trained) with its ``TextPreprocessor``.

    Weights are read at call time, so one instance follows a model through training.
    """

    def __init__(self, model, preprocessor, image_size: int, resize_size: int | None = None,
                 batch_size: int = 256):
        self.model, self.preprocessor = model, preprocessor
        self.image_size, self.resize_size, self.batch_size = image_size, resize_size, batch_size
        # reduce_retracing: the last, smaller batch reuses a shape-generic trace.
        self._image_fn = tf.function(lambda x: model.embed_image(x, training=False),
                                     reduce_retracing=True)
        self._text_fn = tf.function(lambda t: model.embed_text(preprocessor(t), training=False),
                                    reduce_retracing=True)

    def embed_image_batch(self, pixels) -> np.ndarray:
        return self._image_fn(tf.convert_to_tensor(pixels, tf.float32)).numpy()

    def embed_text_batch(self, texts) -> np.ndarray:
        return self._text_fn(tf.convert_to_tensor(texts, tf.string)).numpy()


def _saved_function(loaded, name: str):
    """A callable ``f(tensor) -> tensor`` for the SavedModel's ``name`` signature or attribute.

    Signatures are the portable interface (any TF SavedModel consumer, TF Hub); their outputs are
    a dict, of which we take ``"embeddings"`` (our exporter's name) or the only entry.
    """
    signatures = getattr(loaded, "signatures", {}) or {}
    if name in signatures:
        fn = signatures[name]
        arg_names = list(fn.structured_input_signature[1].keys())
        if len(arg_names) != 1:
            raise ValueError(f"SavedModel signature {name!r} must take one input, has {arg_names}")

        def call(x):
            return _pick_embeddings(fn(**{arg_names[0]: x}), name)
        return call
    if hasattr(loaded, name):
        fn = getattr(loaded, name)
        return lambda x: _pick_embeddings(fn(x), name)
    raise ValueError(f"SavedModel has no {name!r} signature or function "
                     f"(signatures: {sorted(signatures)})")


def _pick_embeddings(out, name):
    if isinstance(out, dict):
        if "embeddings" in out:
            return out["embeddings"]
        if len(out) == 1:
            return next(iter(out.values()))
        raise ValueError(f"SavedModel {name!r} returns {sorted(out)}; expected 'embeddings'")
    return out


class SavedModelEncoder(Encoder):
    """An exported SavedModel with ``image_embed`` (float pixels in [0, 1]) and ``text_embed``
    (strings) signatures. It carries its tokenizer; the image size comes from the caller."""

    def __init__(self, path: str, image_size: int, resize_size: int | None = None,
                 batch_size: int = 256):
        import tensorflow_text  # noqa: F401  registers the tokenizer ops the SavedModel uses
        self.path = path
        self.loaded = tf.saved_model.load(path)
        self._image_fn = _saved_function(self.loaded, "image_embed")
        self._text_fn = _saved_function(self.loaded, "text_embed")
        self.image_size, self.resize_size, self.batch_size = image_size, resize_size, batch_size

    def embed_image_batch(self, pixels) -> np.ndarray:
        return np.asarray(self._image_fn(tf.convert_to_tensor(pixels, tf.float32)), np.float32)

    def embed_text_batch(self, texts) -> np.ndarray:
        return np.asarray(self._text_fn(tf.convert_to_tensor(texts, tf.string)), np.float32)


def load_config(model_dir: str):
    """``model_dir/config.json`` as an ``ml_collections.ConfigDict``."""
    import ml_collections
    path = os.path.join(model_dir, "config.json")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no config.json in {model_dir} (is it a training model_dir?)")
    with tf.io.gfile.GFile(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def _saved_model_config(path: str):
    """The training config next to a SavedModel: in it, or in its parent (``model_dir/savedmodel``)."""
    for d in (path, os.path.dirname(os.path.normpath(path))):
        if d and tf.io.gfile.exists(os.path.join(d, "config.json")):
            return load_config(d)
    return None


def load_encoder(model_dir: str | None = None, savedmodel: str | None = None,
                 checkpoint: str | None = None, image_size: int | None = None,
                 resize_size: int | None = None, batch_size: int = 256) -> Encoder:
    """An ``Encoder`` from a training ``model_dir`` or an exported ``savedmodel`` (exactly one).

    Args:
      model_dir: has ``config.json``, ``vocab.txt`` and ``checkpoints/`` (a training run, or the
        output of ``align_tf.convert.hf_align``).
      savedmodel: a SavedModel directory with ``image_embed``/``text_embed`` signatures.
      checkpoint: a checkpoint path (prefix) to restore instead of the newest in
        ``model_dir/checkpoints``.
      image_size, resize_size: evaluation image preprocessing; default: the config's
        ``data.image_size``/``data.resize_size`` (for a SavedModel: its ``image_size`` /
        ``resize_size`` attributes if it has them, else a ``config.json`` in its directory or
        the parent's, else ``image_size`` must be given).
      batch_size: embedding batch size.
    """
    if (model_dir is None) == (savedmodel is None):
        raise ValueError("give exactly one of model_dir and savedmodel")
    if savedmodel is not None:
        if not tf.io.gfile.exists(os.path.join(savedmodel, "saved_model.pb")):
            raise FileNotFoundError(f"no saved_model.pb in {savedmodel}")
        config = _saved_model_config(savedmodel)
        encoder = SavedModelEncoder(savedmodel, image_size or 0, resize_size, batch_size)
        if image_size is None:
            # A SavedModel may record its input size itself; else the training config beside it.
            stored = {k: getattr(encoder.loaded, k, None) for k in ("image_size", "resize_size")}
            if stored["image_size"] is not None:
                encoder.image_size = int(np.asarray(stored["image_size"]))
                if resize_size is None and stored["resize_size"] is not None:
                    encoder.resize_size = int(np.asarray(stored["resize_size"])) or None
            elif config is not None:
                encoder.image_size = config.data.image_size
                if resize_size is None:
                    encoder.resize_size = config.data.get("resize_size")
            else:
                raise ValueError(f"no config.json found with {savedmodel}; pass the image size "
                                 "the model expects (--image_size)")
        return encoder

    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.tokenizer import TextPreprocessor

    config = load_config(model_dir)
    ckpt = checkpoint or tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if not ckpt:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(model_dir, 'checkpoints')}")
    preprocessor = TextPreprocessor(os.path.join(model_dir, "vocab.txt"),
                                    sequence_length=config.data.max_tokens)
    model = build_dual_encoder(config.model, preprocessor.vocabulary_size)
    # Only the model: the optimizer's slots in the checkpoint are not needed to embed.
    status = tf.train.Checkpoint(model=model).restore(ckpt)
    status.expect_partial()
    status.assert_existing_objects_matched()  # every model variable was in the checkpoint
    if image_size is None:
        image_size = config.data.image_size
        resize_size = resize_size if resize_size is not None else config.data.get("resize_size")
    encoder = KerasEncoder(model, preprocessor, image_size, resize_size, batch_size)
    encoder.checkpoint = ckpt
    return encoder


# Kept for existing callers (synthetic_eval): the model's own embedding of arrays and strings.
def embed_images(model, images, image_size: int, batch_size: int = 256) -> np.ndarray:
    """uint8 or [0, 1] float images ``(N, H, W, 3)`` → ``(N, D)`` unit-norm embeddings."""
    return KerasEncoder(model, None, image_size, batch_size=batch_size).embed_images(images)


def embed_texts(model, preprocessor, texts, batch_size: int = 256) -> np.ndarray:
    """Strings → ``(N, D)`` unit-norm embeddings (tokenized with ``preprocessor``)."""
    return KerasEncoder(model, preprocessor, 0, batch_size=batch_size).embed_texts(texts)
