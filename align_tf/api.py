"""The public Python API (``align_tf.load``, ``align_tf.build_model``, ``align_tf.export``) and the
``Model`` they return; ``align_tf/__init__.py`` re-exports them lazily.

A ``Model`` wraps the exported TF Hub object (``align_tf.export``'s ``AlignExport``: a loaded
SavedModel, or the same object built in memory from a checkpoint), so ``align_tf.load`` and
``hub.load`` embed with the very same graph: images resized and centre-cropped inside, the
tokenizer inside.
"""

from __future__ import annotations

import importlib
import os
import shutil
import types

import numpy as np

from align_tf.pretrained import PretrainedError, convert_local, fetch, is_hf_dir, is_repo_id

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


class Model:
    """An ALIGN dual encoder ready to embed and classify (what ``load`` / ``build_model`` return).

    Attributes:
      source: what it was loaded from (a path or a Hugging Face repo id).
      path: the model directory or SavedModel it reads (a cache directory for a repo id), or None.
      module: the TF Hub object (``image_embed``, ``text_embed``, ``zero_shot_classify``, ... as in
        ``export/SIGNATURES.md``).
      keras_model, preprocessor, config: the Keras ``DualEncoder``, its ``TextPreprocessor`` and
        the training config; None for a model loaded from a SavedModel.
      image_size (int): the image tower's input side; embedding_dim (int): ``D``;
      similarity (str): ``"softmax"`` (ALIGN) or ``"sigmoid"`` (SigLIP).
    """

    def __init__(self, source, path=None, module=None, keras_model=None, preprocessor=None,
                 config=None):
        self.source, self.path = str(source), path
        self.keras_model, self.preprocessor, self.config = keras_model, preprocessor, config
        self._module = module

    @property
    def module(self):
        if self._module is None:
            self._module = _InMemoryModule(self.keras_model, self.preprocessor, self.config)
        return self._module

    @property
    def image_size(self) -> int:
        return int(self.module.image_size.numpy())

    @property
    def embedding_dim(self) -> int:
        return int(self.module.embedding_dim.numpy())

    @property
    def similarity(self) -> str:
        return self.module.similarity.numpy().decode()

    def __repr__(self):
        return f"align_tf.Model({self.source!r}, image_size={self.image_size}, " \
               f"embedding_dim={self.embedding_dim}, similarity={self.similarity!r})"

    def embed_images(self, images) -> np.ndarray:
        """Unit-norm image embeddings, float32 ``np.ndarray [N, D]``.

        ``images``: a float32 array ``[N, H, W, 3]`` (or one ``[H, W, 3]``) RGB in [0, 1] (uint8
        arrays are divided by 255), any size; or a list whose items are such arrays (sizes may
        differ), image file paths or encoded bytes (JPEG, PNG, GIF, BMP, WebP). Resized and
        centre-cropped inside to ``image_size``. A file that is not an image is a ``ValueError``
        naming it.
        """
        import tensorflow as tf
        if not isinstance(images, (list, tuple)):
            return self.module.image_embed(tf.constant(_pixels(images)))["embeddings"].numpy()
        rows = []
        for i, item in enumerate(images):
            if isinstance(item, (bytes, str, os.PathLike)):
                data = item if isinstance(item, bytes) else tf.io.read_file(os.fspath(item))
                out = self.module.image_embed_encoded(tf.reshape(tf.constant(data), [1]))
                if not bool(out["valid"].numpy()[0]):
                    what = f"image {i}" if isinstance(item, bytes) else os.fspath(item)
                    raise ValueError(f"{what} is not a readable image (JPEG, PNG, GIF, BMP, WebP)")
                rows.append(out["embeddings"].numpy())
            else:
                rows.append(self.module.image_embed(tf.constant(_pixels(item)))["embeddings"]
                            .numpy())
        return np.concatenate(rows) if rows else np.zeros([0, self.embedding_dim], np.float32)

    def embed_texts(self, texts) -> np.ndarray:
        """Unit-norm text embeddings, float32 ``np.ndarray [N, D]``, of a string or a list of
        ``N`` strings (tokenized inside, ``max_tokens`` tokens)."""
        import tensorflow as tf
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        return self.module.text_embed(tf.constant(texts, tf.string))["embeddings"].numpy()

    def class_embeddings(self, class_names, templates=None) -> np.ndarray:
        """``[C, D]`` unit-norm class embeddings: each class the mean of its prompts' embeddings,
        re-normalised (ALIGN §5.2). ``templates``: strings with one ``"{}"``, a name of
        ``align_tf.prompts`` (``clip80``, ``simple``, ...) or None (those baked in at export)."""
        import tensorflow as tf
        class_names = [str(c) for c in class_names]
        if templates is None:
            return self.module.class_embeddings(tf.constant(class_names, tf.string))[
                "embeddings"].numpy()
        from align_tf.prompts import get_templates
        templates = get_templates(templates) if isinstance(templates, str) else list(templates)
        prompts = [t.replace("{}", c) for c in class_names for t in templates]
        emb = self.embed_texts(prompts).reshape(len(class_names), len(templates), -1).mean(1)
        return emb / np.linalg.norm(emb, axis=-1, keepdims=True)

    def zero_shot(self, images, class_names, templates=None) -> dict:
        """Zero-shot classification of ``images`` (as ``embed_images`` takes them) among
        ``class_names`` (``C`` strings), as the module's ``zero_shot_classify``.

        Returns a dict: ``probabilities`` and ``logits``, float32 ``np.ndarray [N, C]`` (softmax
        over the classes for a softmax model; each class's sigmoid for a sigmoid model), and
        ``labels``, the top-1 class name of each image (``list[str]``, length ``N``).
        """
        class_names = [str(c) for c in class_names]
        if not class_names:
            raise ValueError("class_names is empty")
        cosine = self.embed_images(images) @ self.class_embeddings(class_names, templates).T
        m = self.module
        if self.similarity == "sigmoid":
            logits = cosine * np.exp(m.log_logit_scale.numpy()) + m.logit_bias.numpy()
            probabilities = 1.0 / (1.0 + np.exp(-logits))
        else:  # the temperature is kept above min_temperature in training and conversion
            logits = cosine / m.temperature.numpy()
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probabilities = e / e.sum(axis=-1, keepdims=True)
        return {"probabilities": probabilities.astype(np.float32),
                "logits": logits.astype(np.float32),
                "labels": [class_names[i] for i in probabilities.argmax(axis=-1)]}


class _InMemoryModule:
    """What ``hub.load`` of the export gives (signatures, ``image_size``, ``similarity``, ...),
    from the Keras model in memory; each signature is traced on first use (the export traces
    them all, to save them)."""

    def __init__(self, model, preprocessor, config):
        import tensorflow as tf

        from align_tf.export import SignatureParts, config_export_kwargs, supported_signatures
        from align_tf.prompts import get_templates
        kwargs = config_export_kwargs(config)
        self._parts = parts = SignatureParts(model, preprocessor, kwargs["image_size"],
                                             kwargs["resize_size"],
                                             get_templates(kwargs["templates"]))
        self._signatures = {s.name: s for s in supported_signatures(parts)}
        self.image_size = tf.constant(parts.image_size, tf.int32)
        self.embedding_dim = tf.constant(parts.dim, tf.int32)
        self.similarity = tf.constant(model.similarity)
        if model.similarity == "sigmoid":
            self.log_logit_scale, self.logit_bias = model.log_logit_scale, model.logit_bias
        else:
            self.temperature = model.temperature

    def class_embeddings(self, class_names):
        return {"embeddings": self._parts.class_embeddings(class_names)}

    def __getattr__(self, name):
        signatures = self.__dict__.get("_signatures", {})
        if name not in signatures:
            raise AttributeError(name)
        fn = signatures[name].build(self._parts)
        setattr(self, name, fn)
        return fn


def _pixels(images) -> np.ndarray:
    """An image or batch as float32 ``[N, H, W, 3]`` in [0, 1] (uint8 divided by 255)."""
    array = np.asarray(images)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"images must be RGB [N, H, W, 3] or [H, W, 3]; got shape {array.shape}")
    return array


def _from_checkpoint(source, path) -> Model:
    from align_tf import run_dir
    model, preprocessor, config = run_dir.load_model(path)
    return Model(source, path, keras_model=model, preprocessor=preprocessor, config=config)


def _from_savedmodel(source, path) -> Model:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops before loading)
    return Model(source, path, module=tf.saved_model.load(path))


def load(name_or_path, revision: str | None = None, verbose: bool = True) -> Model:
    """Loads an ALIGN model from any of:

    * a SavedModel directory (``saved_model.pb``: ``python -m align_tf.export``'s output);
    * a run directory or a converted directory (``config.json``, ``vocab.txt``,
      ``checkpoints/``): its ``savedmodel/`` when there is one, else its newest checkpoint;
    * a Hugging Face repo id (``"kakaobrain/align-base"``), downloaded and converted once into
      ``align_tf.pretrained.cache_root()`` (``revision``: a branch, tag or commit; default
      ``main``), offline from then on;
    * a local Hugging Face ``AlignModel`` directory (``save_pretrained`` layout), converted once
      into the same cache.

    Returns a ``Model``. Raises ``FileNotFoundError`` / ``ValueError`` (one line) otherwise.
    """
    path = os.fspath(name_or_path)
    if is_repo_id(path):
        return _load_dir(path, fetch(path, revision, verbose=verbose))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is neither a directory nor a Hugging Face repo id "
                                "(ORG/NAME)")
    if is_hf_dir(path):
        return _load_dir(path, convert_local(path, verbose=verbose))
    return _load_dir(path, path)


def _load_dir(source, path) -> Model:
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return _from_savedmodel(source, path)
    saved = os.path.join(path, "savedmodel")
    if os.path.exists(os.path.join(saved, "saved_model.pb")):
        return _from_savedmodel(source, saved)
    if os.path.exists(os.path.join(path, "config.json")):
        return _from_checkpoint(source, path)
    raise FileNotFoundError(f"{path} holds no saved_model.pb, savedmodel/, config.json or "
                            "Hugging Face AlignModel")


def build_model(preset: str = "default", vocabulary=None) -> Model:
    """A new, untrained model of a config preset (``default``, ``align_base``, ``paper``, ...;
    ``configs/``) or config file.

    ``vocabulary``: a ``vocab.txt`` path or a token list; default the preset's
    ``data.vocab_path``, else (the built-in synthetic corpus) the vocabulary training learns.
    ``model.keras_model`` is the Keras ``DualEncoder`` to train or fine-tune.
    """
    import keras

    from align_tf.configs import load_config_file
    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.tokenizer import TextPreprocessor, build_vocabulary, mode_settings

    config = load_config_file(preset)  # a preset, a .py file or a run's config.json
    if vocabulary is None and config.data.vocab_path:
        vocabulary = config.data.vocab_path
    if vocabulary is None:
        from align_tf.data import synthetic
        from align_tf.data.sources import synthetic as source
        d = config.data
        if d.synthetic_languages:  # the multilingual corpus' vocabulary, as training's
            captions = source.training_pairs(config)["caption"]
        else:
            captions = synthetic.make_pairs(d.num_train_examples, d.image_size,
                                            noise=d.caption_noise, partial=d.caption_partial,
                                            seed=config.seed)["caption"]
        vocabulary = build_vocabulary(captions, vocab_size=d.vocab_size,
                                      **mode_settings(d.get("tokenizer", "uncased")))
    preprocessor = TextPreprocessor.for_data(vocabulary, config.data)
    keras.config.set_dtype_policy("float32")
    model = build_dual_encoder(config.model, preprocessor.vocabulary_size)
    return Model(f"preset:{preset}", keras_model=model, preprocessor=preprocessor, config=config)


def export(model: Model, path: str, templates=None) -> str:
    """Writes ``model`` as a SavedModel / TF Hub module at ``path`` (loads with ``hub.load``
    without align_tf); returns ``path``. ``templates``: the prompts baked into
    ``zero_shot_classify`` (a name of ``align_tf.prompts`` or strings with ``"{}"``), default the
    config's. A model loaded from a SavedModel is copied as it is."""
    if model.keras_model is None:
        if templates is not None:
            raise ValueError("templates= needs a model loaded from a checkpoint, not a SavedModel")
        shutil.copytree(model.path, path, dirs_exist_ok=True)
        return path
    from align_tf.export import config_export_kwargs, export_saved_model
    kwargs = config_export_kwargs(model.config)
    if templates is not None:
        kwargs["templates"] = templates
    return export_saved_model(model.keras_model, model.preprocessor, path, config=model.config,
                              **kwargs)


class _CallableExport(types.ModuleType):
    """The ``align_tf.export`` subpackage, also callable: ``align_tf.export(model, path)``."""

    def __call__(self, model, path, templates=None):
        return export(model, path, templates)


def _make_export_callable():
    """``align_tf.export`` names both the subpackage and ``export``: the subpackage (whatever
    imported it first) gets ``export`` as its ``__call__``."""
    package = importlib.import_module("align_tf.export")
    if type(package) is types.ModuleType:
        package.__class__ = _CallableExport


_make_export_callable()

__all__ = ["Model", "PretrainedError", "build_model", "export", "load"]
