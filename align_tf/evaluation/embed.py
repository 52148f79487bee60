"""Encoders for evaluation: one interface over a Keras ``DualEncoder`` and an exported SavedModel.

An ``Encoder`` embeds batches of preprocessed images (float32 pixels in [0, 1], already resized to
``image_size``) and lists of strings; evaluators only talk to this interface, so a training
checkpoint and a SavedModel (ours, or converted public weights) are evaluated by the same code.

``encoder_for_model`` wraps a model in memory (the trainer's); ``load_encoder`` builds one from a
run directory (``align_tf.run_dir``) or from a SavedModel directory with the ``image_embed`` /
``text_embed`` signatures of ``align_tf.export``. Both read the image sizes and the batch size from
the training config the same way, so a run's numbers are reproduced bit for bit from its checkpoint.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import tensorflow as tf

from align_tf.data.preprocessing import ImagePreprocessor


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
    _memo: dict | None = None  # set inside ``fixed_weights``

    def embed_image_batch(self, pixels) -> np.ndarray:
        """``(B, image_size, image_size, 3)`` float pixels in [0, 1] → ``(B, D)`` unit-norm."""
        raise NotImplementedError

    def embed_text_batch(self, texts) -> np.ndarray:
        """``(B,)`` strings → ``(B, D)`` unit-norm."""
        raise NotImplementedError

    def info(self) -> dict:
        """What an evaluation report records about the model (``runner.make_report``)."""
        return {"image_size": self.image_size, "resize_size": self.resize_size,
                "batch_size": self.batch_size}

    @contextlib.contextmanager
    def fixed_weights(self):
        """Within the block the weights are taken not to change, so ``memoize`` computes each key
        once (``runner.run_plans``: test images embedded once for zero-shot, kNN and probe)."""
        outer = self._memo
        self._memo = {} if outer is None else outer
        try:
            yield self
        finally:
            self._memo = outer

    def memoize(self, key, compute):
        """``compute()``, cached under ``key`` inside a ``fixed_weights`` block."""
        if self._memo is None:
            return compute()
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def preprocess(self, image):
        """One uint8 or [0, 1] float image ``(H, W, 3)`` → float32 ``(S, S, 3)`` (eval crop)."""
        return ImagePreprocessor(self.image_size, self.resize_size)(image, training=False)

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

    Weights are read at call time, so one instance follows a model through training: build it
    once per model (``encoder_for_model``) and reuse it. Each tower is traced once, for any batch
    size (the last, smaller batch included), by a ``tf.function`` with a fixed input signature.
    """

    def __init__(self, model, preprocessor, image_size: int, resize_size: int | None = None,
                 batch_size: int = 256):
        self.model, self.preprocessor = model, preprocessor
        self.image_size, self.resize_size, self.batch_size = image_size, resize_size, batch_size
        self.checkpoint = None  # the checkpoint the weights came from, when known
        self._image_fn = tf.function(self._embed_image, input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
        self._text_fn = tf.function(self._embed_text, input_signature=[
            tf.TensorSpec([None], tf.string)])

    def _embed_image(self, pixels):
        return self.model.embed_image(pixels, training=False)

    def _embed_text(self, texts):
        return self.model.embed_text(self.preprocessor(texts), training=False)

    def embed_image_batch(self, pixels) -> np.ndarray:
        return self._image_fn(tf.convert_to_tensor(pixels, tf.float32)).numpy()

    def embed_text_batch(self, texts) -> np.ndarray:
        return self._text_fn(tf.convert_to_tensor(texts, tf.string)).numpy()

    def info(self) -> dict:
        # How the model turns cosines into logits: σ (softmax), or t and b (sigmoid).
        model = self.model
        scale = {"temperature": float(np.asarray(model.temperature))} \
            if model.temperature is not None else \
            {"logit_scale": float(np.asarray(model.logit_scale())),
             "logit_bias": float(np.asarray(model.logit_bias))}
        return dict(super().info(), checkpoint=self.checkpoint, similarity=model.similarity, **scale)


def encoder_for_model(model, preprocessor, config, image_size: int | None = None,
                      resize_size: int | None = None,
                      batch_size: int | None = None) -> KerasEncoder:
    """The evaluation encoder of a model trained with ``config``, as the trainer and
    ``python -m align_tf.evaluate --model_dir`` build it.

    Images are preprocessed at ``data.image_size`` (centre crop of ``data.resize_size``) and
    embedded ``eval.batch_size`` at a time. ``image_size`` replaces both sizes (with
    ``resize_size``, else resize only); ``resize_size`` alone the crop's; ``batch_size`` the batch.
    """
    if image_size is None:
        image_size = config.data.image_size
        resize_size = config.data.resize_size if resize_size is None else resize_size
    return KerasEncoder(model, preprocessor, image_size, resize_size,
                        batch_size or config.eval.batch_size)


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

    def info(self) -> dict:
        temperature = getattr(self.loaded, "temperature", None)
        similarity = getattr(self.loaded, "similarity", None)  # absent in pre-[siglip] exports
        return dict(super().info(), savedmodel=self.path,
                    similarity="softmax" if similarity is None else similarity.numpy().decode(),
                    temperature=None if temperature is None else float(np.asarray(temperature)))


def _saved_model_config(path: str):
    """The training config next to a SavedModel: in it, or in its parent (``model_dir/savedmodel``);
    None if neither has one."""
    from align_tf import run_dir
    for d in (path, os.path.dirname(os.path.normpath(path))):
        if d and tf.io.gfile.exists(run_dir.RunDir(d).config_path):
            return run_dir.load_config(d)
    return None


def model_config(model_dir: str | None = None, savedmodel: str | None = None):
    """The training config of a run directory, or the one beside a SavedModel (None if none)."""
    from align_tf import run_dir
    return run_dir.load_config(model_dir) if model_dir is not None else _saved_model_config(savedmodel)


def load_encoder(model_dir: str | None = None, savedmodel: str | None = None,
                 checkpoint: str | None = None, image_size: int | None = None,
                 resize_size: int | None = None, batch_size: int | None = None) -> Encoder:
    """An ``Encoder`` from a run directory ``model_dir`` or an exported ``savedmodel`` (exactly one).

    Args:
      model_dir: a run directory (``align_tf.run_dir``: a training run, or the output of
        ``align_tf.convert.hf_align``); the model is built as ``encoder_for_model`` does.
      savedmodel: a SavedModel directory with ``image_embed``/``text_embed`` signatures.
      checkpoint: a checkpoint path (prefix) to restore instead of the newest in
        ``model_dir/checkpoints``.
      image_size, resize_size: evaluation image preprocessing; default: the config's
        ``data.image_size``/``data.resize_size`` (for a SavedModel: its ``image_size`` /
        ``resize_size`` attributes if it has them, else a ``config.json`` in its directory or
        the parent's, else ``image_size`` must be given).
      batch_size: embedding batch size; default the config's ``eval.batch_size``.
    """
    if (model_dir is None) == (savedmodel is None):
        raise ValueError("give exactly one of model_dir and savedmodel")
    if savedmodel is not None:
        return _load_savedmodel_encoder(savedmodel, image_size, resize_size, batch_size)
    from align_tf import run_dir
    model, preprocessor, config = run_dir.load_model(model_dir, checkpoint)
    encoder = encoder_for_model(model, preprocessor, config, image_size, resize_size, batch_size)
    encoder.checkpoint = checkpoint or run_dir.RunDir(model_dir).latest_checkpoint()
    return encoder


def _load_savedmodel_encoder(savedmodel: str, image_size, resize_size, batch_size):
    """``load_encoder`` for a SavedModel (sizes: arguments, its attributes, or a config beside)."""
    if not tf.io.gfile.exists(os.path.join(savedmodel, "saved_model.pb")):
        raise FileNotFoundError(f"no saved_model.pb in {savedmodel}")
    config = _saved_model_config(savedmodel)
    if batch_size is None:
        from align_tf.configs import base
        batch_size = (config or base.get_config()).eval.batch_size
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
                encoder.resize_size = config.data.resize_size
        else:
            raise ValueError(f"no config.json found with {savedmodel}; pass the image size "
                             "the model expects (--image_size)")
    return encoder
