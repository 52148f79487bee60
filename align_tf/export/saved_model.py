"""The objects ``tf.saved_model.save`` writes: ``AlignExport`` (a dual encoder, with the
signatures of ``align_tf.export.signatures`` the model supports) and ``ClassifierExport`` (a
fine-tuned classifier), and the functions that write them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging as absl_logging

from align_tf import compat
from align_tf.data.preprocessing import ImagePreprocessor
from align_tf.export.parts import SignatureParts, _check_pixels
from align_tf.export.signatures import TEXTS, supported_signatures
from align_tf.prompts import get_templates


def _tf_variable(v):
    """The ``tf.Variable`` inside a Keras 3 variable (what traced functions capture).

    Saving the Keras wrapper instead would store and restore a second, disconnected copy of each
    weight: gradients of the loaded functions would never reach the listed variables.
    """
    inner = getattr(v, "value", v)
    if not isinstance(inner, tf.Variable):
        raise TypeError(f"expected a variable, got {type(inner).__name__} for {v!r}")
    return inner


class _Tower(compat.AutoTrackable):
    """A TF Hub "reusable SavedModel" part: ``__call__``, ``variables``, ``trainable_variables``,
    ``regularization_losses`` (what ``hub.KerasLayer`` and ``keras.layers.TFSMLayer`` use)."""

    def __init__(self, fn, layer, input_spec):
        super().__init__()
        self.variables = [_tf_variable(v) for v in layer.variables]
        self.trainable_variables = [_tf_variable(v) for v in layer.trainable_variables]
        self.regularization_losses = []
        call = tf.function(fn, autograph=False)
        # Traced both ways so a loaded tower honours training=True (dropout, BatchNorm statistics).
        for training in (False, True):
            call.get_concrete_function(input_spec, training=training)
        self.__call__ = call


class AlignExport(compat.AutoTrackable):
    """The object ``tf.saved_model.save`` writes; see ``align_tf.export``'s docstring for its
    interface.

    Its signatures are the registered ones (``align_tf.export.signatures``) the model supports,
    each an attribute of this object and an entry of ``signatures()``.

    Args:
      model: a ``DualEncoder`` (``embed_image`` / ``embed_text`` / ``logits`` / ``similarity``).
      preprocessor: its ``align_tf.tokenizer.TextPreprocessor``.
      image_size: side of the square input of the image tower. ``None`` skips all resizing
        (images are embedded at the size given; only for callers that preprocess themselves).
      resize_size: resize-then-centre-crop size of evaluation (the paper: 346 → 289); ``None``
        resizes straight to ``image_size``.
      templates: prompt templates (strings with one ``"{}"``) baked into ``zero_shot_classify``.
      vocab_dir: a directory where the vocabulary file for the ``vocab_file`` asset is written.
    """

    def __init__(self, model, preprocessor, image_size=None, resize_size=None,
                 templates=("{}",), vocab_dir=None):
        super().__init__()
        parts = SignatureParts(model, preprocessor, image_size, resize_size, templates)
        self._image_size, self._resize_size = parts.image_size, parts.resize_size
        self._templates, self._dim, self._seq_len = parts.templates, parts.dim, parts.seq_len
        names = []
        for signature in supported_signatures(parts):
            setattr(self, signature.name, signature.build(parts))
            names.append(signature.name)
        self._signature_names = tuple(names)  # a tuple of strings: not tracked, not saved
        self.class_embeddings = tf.function(
            lambda names: {"embeddings": parts.class_embeddings(names)},
            input_signature=[tf.TensorSpec([None], tf.string, name="class_names")],
            autograph=False)

        # Towers for fine-tuning: un-normalised features (the contrastive loss normalises).
        self.image_tower = _Tower(
            lambda pixels, training=False: model.image_encoder(pixels, training=training),
            model.image_encoder, tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels"))
        self.text_tower = _Tower(
            lambda texts, training=False: model.text_encoder(parts.tokenize(texts),
                                                             training=training),
            model.text_encoder, TEXTS)

        signature_fns = list(self.signatures().values())
        used = _variables_used_by(signature_fns)
        self.variables = used
        self.trainable_variables = [v for v in used if v.trainable]
        # Everything any saved function captures must be reachable from the root object.
        self._captured = _variables_used_by(
            signature_fns + [self.class_embeddings, self.image_tower.__call__,
                             self.text_tower.__call__])
        self._set_attributes(model, parts, vocab_dir)

    def _set_attributes(self, model, parts, vocab_dir):
        """The metadata attributes and the ``vocab_file`` asset."""
        meta = lambda value, dtype: tf.Variable(value, dtype=dtype, trainable=False)  # noqa
        self.similarity = meta(model.similarity, tf.string)
        if model.similarity == "sigmoid":
            self.log_logit_scale = _tf_variable(model.log_logit_scale)
            self.logit_bias = _tf_variable(model.logit_bias)
        else:
            self.temperature = _tf_variable(model.temperature)
        if self._image_size is not None:
            self.image_size = meta(self._image_size, tf.int32)
            self.resize_size = meta(self._resize_size or 0, tf.int32)
        self.max_tokens = meta(parts.seq_len, tf.int32)
        self.embedding_dim = meta(parts.dim, tf.int32)
        self.prompt_templates = meta(list(parts.templates), tf.string)
        if vocab_dir is not None:
            from align_tf.tokenizer import save_vocabulary
            # A real asset: copied to assets/vocab.txt and relocated with the SavedModel. The
            # tokenizer itself runs on the same vocabulary compiled into the graph
            # (FastWordpieceTokenizer's model), so nothing needs to read this file to embed.
            self.vocab_file = tf.saved_model.Asset(save_vocabulary(
                parts.preprocessor.vocabulary, os.path.join(vocab_dir, "vocab.txt")))

    def signatures(self) -> dict:
        """The serving signatures (name → tf.function with an input signature), in the
        registry's order."""
        return {name: getattr(self, name) for name in self._signature_names}


def signature_names(model, preprocessor, *, image_size=None, resize_size=None,
                    templates=("{}",)) -> list:
    """The names of the signatures ``export_saved_model`` writes for ``model`` with these
    arguments (the registry's, filtered by each predicate; nothing is traced)."""
    if isinstance(templates, str):
        templates = get_templates(templates)
    parts = SignatureParts(model, preprocessor, image_size, resize_size, templates)
    return [s.name for s in supported_signatures(parts)]


def _variables_used_by(fns) -> list:
    """Variables captured by the concrete functions of ``fns`` (deduplicated, in order)."""
    seen, out = set(), []
    for fn in fns:
        for concrete in compat.concrete_functions(fn):
            for v in concrete.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
    return out


def _save_with_config(module, path: str, tmp: str, config) -> None:
    """Stores ``config`` (a ``ConfigDict`` or dict, if given) as the ``config_file`` asset
    (``assets/align_config.json``), then saves ``module`` to ``path``."""
    if config is not None:
        data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        config_path = os.path.join(tmp, "align_config.json")
        with open(config_path, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
        module.config_file = tf.saved_model.Asset(config_path)
    _save_quietly(module, path)


def export_saved_model(model, preprocessor, path: str, *, image_size: int | None = None,
                       resize_size: int | None = None, templates="clip80",
                       config=None) -> str:
    """Writes the SavedModel / TF Hub module described in ``align_tf.export``'s docstring.

    Args:
      model: a trained ``DualEncoder``.
      preprocessor: its ``TextPreprocessor`` (vocabulary and maximum length).
      path: output directory.
      image_size: the image tower's input side; ``image_embed`` resizes (and crops) any input to
        it. ``None`` (only for callers that preprocess themselves): images are embedded as given,
        ``image_embed_encoded`` is not exported and no ``image_size`` attribute is stored.
      resize_size: evaluation resize before the centre crop (the paper: 346 for 289); ``None``:
        resize straight to ``image_size``.
      templates: a name in ``TEMPLATE_CHOICES`` or a sequence of templates with one ``"{}"``.
      config: the training config (a ``ConfigDict`` or dict); when given it is stored as the
        ``config_file`` asset (``assets/align_config.json``) for provenance.

    Returns:
      ``path``.
    """
    if isinstance(templates, str):
        templates = get_templates(templates)
    tmp = tempfile.mkdtemp(prefix="align_export_")
    try:
        module = AlignExport(model, preprocessor, image_size=image_size, resize_size=resize_size,
                             templates=templates, vocab_dir=tmp)
        _save_with_config(module, path, tmp, config)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _save_quietly(module, path: str) -> None:
    """``tf.saved_model.save`` with ``module.signatures()``, without its INFO lines."""
    tf.io.gfile.makedirs(path)
    # tf.saved_model.save logs an INFO line per signature about renamed captured inputs
    # (hundreds of names): noise for the training run's log. TF logs it through both its own
    # logger and absl's.
    logger = tf.get_logger()
    level, absl_level = logger.level, absl_logging.get_verbosity()
    logger.setLevel("WARNING")
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        tf.saved_model.save(module, path, signatures=module.signatures())
    finally:
        logger.setLevel(level)
        absl_logging.set_verbosity(absl_level)


class ClassifierExport(compat.AutoTrackable):
    """The SavedModel of a fine-tuned classifier (``align_tf.models.classifier``).

    Signatures: ``classify(images) → {"probabilities": [B, C] (softmax), "logits": [B, C]}`` and
    ``image_embed(images) → {"embeddings": [B, D]}`` (the fine-tuned tower, unit norm), both on
    float32 ``[B, H, W, 3]`` RGB in [0, 1] of any size, resized and centre-cropped inside as
    ``image_embed`` of ``AlignExport``. Attributes: ``class_names`` (string ``[C]``, label order),
    the ``class_names_file`` asset (one name per line), ``image_size``, ``resize_size``,
    ``num_classes``, ``variables`` / ``trainable_variables``.
    """

    def __init__(self, classifier, class_names, image_size: int, resize_size: int | None,
                 asset_dir: str):
        super().__init__()
        class_names = [str(n) for n in class_names]
        if len(class_names) != classifier.num_classes:
            raise ValueError(f"{len(class_names)} class names for {classifier.num_classes} classes")
        dim, num_classes = classifier.embedding_dim, classifier.num_classes
        preprocess = ImagePreprocessor(image_size, resize_size)
        images_spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")

        def features(images):
            pixels = preprocess(_check_pixels(images), training=False)
            # An empty batch never reaches the tower (TF's convs mis-shape it; see AlignExport).
            return tf.cond(tf.shape(pixels)[0] > 0, lambda: classifier.embed_image(pixels),
                           lambda: tf.zeros([0, dim], tf.float32))

        def classify(images):
            logits = classifier.head(features(images))
            return {"probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits}

        fn = lambda f: tf.function(f, input_signature=[images_spec], autograph=False)  # noqa
        self.classify = fn(classify)
        self.image_embed = fn(lambda images: {"embeddings": features(images)})
        used = _variables_used_by(list(self.signatures().values()))
        self.variables = used
        self.trainable_variables = [v for v in used if v.trainable]
        meta = lambda value, dtype: tf.Variable(value, dtype=dtype, trainable=False)  # noqa
        self.class_names = meta(class_names, tf.string)
        self.num_classes = meta(num_classes, tf.int32)
        self.image_size = meta(int(image_size), tf.int32)
        self.resize_size = meta(int(resize_size or 0), tf.int32)
        names_path = os.path.join(asset_dir, "class_names.txt")
        with open(names_path, "w", encoding="utf-8") as f:
            f.write("".join(name + "\n" for name in class_names))
        self.class_names_file = tf.saved_model.Asset(names_path)

    def signatures(self) -> dict:
        return {"classify": self.classify, "image_embed": self.image_embed}


def export_classifier(classifier, class_names, path: str, *, image_size: int,
                      resize_size: int | None = None, config=None) -> str:
    """Writes the SavedModel of ``ClassifierExport`` to ``path`` (loads without align_tf).

    ``image_size`` / ``resize_size``: the evaluation preprocessing baked in (centre crop of
    ``image_size`` after resizing to ``resize_size``; None: resize only). ``config``: stored as
    the ``config_file`` asset, as ``export_saved_model`` does. Returns ``path``.
    """
    tmp = tempfile.mkdtemp(prefix="align_export_")
    try:
        module = ClassifierExport(classifier, class_names, image_size, resize_size, tmp)
        _save_with_config(module, path, tmp, config)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
