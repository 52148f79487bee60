"""SavedModel / TF Hub export of a trained dual encoder, with signatures on raw inputs.

Command line: rebuilds the model from a training ``model_dir`` (``config.json``, ``vocab.txt``),
restores the newest checkpoint (model weights only) and writes the SavedModel::

    python -m align_tf.export --model_dir=align_runs/default --output=/tmp/align_savedmodel \
        [--templates=clip80|clip7|simple|none]

``python -m align_tf.train`` ends with the same ``export_saved_model`` call. The SavedModel carries the image preprocessing, the tokenizer and its vocabulary, so a consumer
needs only ``tensorflow``, ``tensorflow_text`` (``import tensorflow_text`` registers the tokenizer
ops *before* loading) and optionally ``tensorflow_hub`` -- never align_tf or keras-hub::

    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the ops text_embed uses)
    import tensorflow_hub as hub

    m = hub.load("path/to/savedmodel")          # or tf.saved_model.load
    m.text_embed(tf.constant(["a photo of a cat"]))["embeddings"]          # (1, D), unit norm
    m.image_embed(tf.random.uniform([2, 480, 640, 3]))["embeddings"]       # (2, D), unit norm
    m.zero_shot_classify(images, tf.constant(["cat", "dog"]))["probabilities"]  # (2, 2)

Signatures (also callable as attributes of the loaded object; ``export/SIGNATURES.md``):

* ``image_embed(images)``: float32 ``[B, H, W, 3]`` RGB in [0, 1] (TF Hub image convention), any
  ``H``/``W``; resized and centre-cropped inside by the layer evaluation uses
  (``align_tf.data.preprocessing.ImagePreprocessor``) → ``{"embeddings": float32 [B, D]}``, unit
  norm.
* ``image_embed_encoded(encoded)``: string ``[B]`` of JPEG/PNG/GIF/BMP bytes (GIF: first frame;
  grayscale replicated, alpha dropped) → ``{"embeddings": [B, D], "valid": bool [B]}``. An image
  is valid when ``tf.io.decode_image(channels=3)`` decodes it to at least one pixel (what training
  keeps); any other (empty bytes, not an image, truncated or corrupt data: TF's decoders reject a
  JPEG cut anywhere, even just its end marker) gets ``valid`` False and a zero row, and never
  fails the batch. Valid rows equal those of a batch of only the valid images.
* ``text_embed(texts)``: string ``[B]`` → WordPiece ids with the model's vocabulary, truncated to the
  model's maximum length → ``{"embeddings": [B, D]}``.
* ``image_text_match(images, texts)`` (ALBEF models only, ``model.fusion_layers > 0``): images as
  ``image_embed``'s, texts string ``[B]``, row-paired → ``{"match_probability": [B]}``, the
  fusion encoder's image-text matching head's P(match).
* ``zero_shot_classify(images, class_names)``: ``class_names`` string ``[C]``; the prompt templates
  chosen at export are baked in (each class: the mean of its L2-normalised template embeddings,
  re-normalised, as ALIGN §5.2 / CLIP) → ``{"probabilities": [B, C], "logits": [B, C]}``. A
  softmax model (ALIGN): ``logits = cos / σ`` (the learned temperature), ``probabilities =
  softmax(logits)`` over the classes (rows sum to 1). A sigmoid model (SigLIP): ``logits = t·cos
  + b`` (learned scale and bias), ``probabilities = sigmoid(logits)``, each class's own match
  probability (rows need not sum to 1).

Other attributes: ``image_tower`` / ``text_tower`` (TF Hub "reusable SavedModel" objects for
fine-tuning: ``__call__(inputs, training=False)`` giving un-normalised features, ``variables``,
``trainable_variables``, ``regularization_losses``), ``class_embeddings(class_names)``,
``variables`` / ``trainable_variables`` (all weights), ``similarity`` (the loss the model was
trained with: ``"softmax"`` or ``"sigmoid"``), ``temperature`` (softmax) or ``log_logit_scale``
(t′, t = exp(t′)) and ``logit_bias`` (sigmoid), ``image_size``,
``resize_size`` (0: resize only), ``max_tokens``, ``embedding_dim``, ``prompt_templates`` and the
``vocab_file`` asset. ``export/`` at the repository root holds the TF Hub publishing material.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import tensorflow as tf
from absl import logging as absl_logging

from align_tf import compat, losses
from align_tf.data.preprocessing import ImagePreprocessor
from align_tf.prompts import TEMPLATE_CHOICES, check_templates, get_templates

# zero_shot_classify embeds at most this many prompts per text-tower call, so 1000 classes × 80
# templates never sit in memory as one batch of activations.
MAX_PROMPTS_PER_CALL = 1024

# image_embed rejects pixels outside this range: [0, 255] images or [-1, 1]-normalised images would
# otherwise give silently wrong embeddings. The slack admits resampling overshoot of [0, 1] images.
PIXEL_RANGE = (-0.5, 1.5)


def _ensure_shape(x, shape):
    """Runtime shape check. Loaded *signatures* do not validate input shapes (attribute calls
    do), so without it a wrongly shaped input would fail deep inside the towers, or not at all."""
    return tf.ensure_shape(x, shape)


def _trim_padding(tokens):
    """Drops the padding columns every text of the batch has: the text tower then runs on the
    longest text's length instead of ``max_tokens``. The padding is masked out of attention and
    positions are absolute, so the embeddings are those of the padded batch (float rounding aside)
    at a fraction of the cost for short texts (captions, prompts)."""
    longest = tf.maximum(tf.reduce_max(tf.reduce_sum(
        tf.cast(tokens["padding_mask"], tf.int32), axis=1)), 1)
    return {k: v[:, :longest] for k, v in tokens.items()}


def _check_pixels(images):
    """Fails with InvalidArgumentError on a wrong shape, an empty image side or pixels far outside
    [0, 1]."""
    images = _ensure_shape(images, [None, None, None, 3])
    shape = tf.shape(images)
    nonempty = tf.logical_or(tf.equal(shape[0], 0),
                             tf.logical_and(shape[1] > 0, shape[2] > 0))
    lo, hi = PIXEL_RANGE
    # NaN fails both comparisons, so non-finite pixels are rejected too.
    in_range = tf.reduce_all(tf.logical_and(images >= lo, images <= hi))
    checks = [
        tf.debugging.Assert(nonempty, ["images must have height and width > 0; got shape",
                                       shape]),
        tf.debugging.Assert(in_range, [
            "images must be float32 RGB pixels in [0, 1] (TF Hub convention; divide uint8 "
            "images by 255). Got values outside [-0.5, 1.5] or non-finite: min/max",
            tf.reduce_min(images), tf.reduce_max(images)]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def _decode_or_invalid(decode, encoded, invalid):
    """``(decode(encoded), True)``, or ``(invalid, False)`` where ``decode`` fails.

    A graph cannot catch an op's error, and no TF decoder reports "corrupt" without raising, so
    the decode runs inside a one-element ``tf.data`` pipeline whose ``ignore_errors`` turns a
    failure into an empty dataset, followed by the ``invalid`` fallback: the first element is the
    answer (the trick of ``align_tf.data.tfrecord.map_skipping_errors``, for one tensor). The
    dataset ops are core TF, so a SavedModel using this loads anywhere.
    """
    good = tf.data.Dataset.from_tensors(encoded).map(
        lambda e: (decode(e), tf.constant(True))).ignore_errors()
    fallback = tf.data.Dataset.from_tensors((invalid, tf.constant(False)))
    return good.concatenate(fallback).take(1).get_single_element()


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
    """The object ``tf.saved_model.save`` writes; see the module docstring for its interface.

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
        templates = check_templates(templates)
        self._image_size = int(image_size) if image_size else None
        self._resize_size = int(resize_size) if resize_size else None
        self._templates = templates
        seq_len = preprocessor.sequence_length
        dim = int(model.image_encoder.output_shape[-1])
        self._dim, self._seq_len = dim, seq_len
        images_spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
        # A local, not an attribute: the SavedModel needs the layer's ops, not a Keras object.
        preprocess = (ImagePreprocessor(self._image_size, self._resize_size)
                      if self._image_size is not None else None)

        def tokenize(texts):
            tokens = preprocessor(_ensure_shape(texts, [None]))
            # An empty batch comes out of the packer as shape (0,); the text tower needs (0, L).
            return {k: tf.reshape(v, [-1, seq_len]) for k, v in tokens.items()}

        def prepare_images(images):
            images = _check_pixels(images)
            if self._image_size is None:
                return images
            return preprocess(images, training=False)

        # The towers (and the tokenizer's compiled vocabulary) as tf.functions of their own: every
        # signature calls the same library function, so the SavedModel stores each graph once
        # instead of once per signature and branch.
        side = self._image_size
        # Embeddings are float32 whatever the compute precision (export_model_dir's precision).
        embed_text = tf.function(
            lambda texts: tf.cast(model.embed_text(_trim_padding(tokenize(texts)),
                                                   training=False), tf.float32),
            input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        embed_image = tf.function(
            lambda pixels: tf.cast(model.embed_image(pixels, training=False), tf.float32),
            input_signature=[tf.TensorSpec([None, side, side, 3], tf.float32)], autograph=False)

        def embed_pixels(pixels):
            # TF's conv kernels mis-shape an empty batch ([0,H,W,3] → [0,H',W',3]), so an empty
            # batch never reaches the tower.
            return tf.cond(tf.shape(pixels)[0] > 0, lambda: embed_image(pixels),
                           lambda: tf.zeros([0, dim], tf.float32))

        def embed_images(images):
            return embed_pixels(prepare_images(images))

        def image_embed(images):
            return {"embeddings": embed_images(images)}

        def decode(encoded):
            # channels=3: grayscale is replicated and alpha dropped; GIF: first frame only.
            image = tf.io.decode_image(encoded, channels=3, dtype=tf.float32,
                                       expand_animations=False)
            image.set_shape([None, None, 3])
            # As training's tfrecord.decode_image: a decoded image without pixels is corrupt.
            tf.debugging.assert_positive(tf.reduce_prod(tf.shape(image)[:2]), "empty image")
            return image

        def decode_one(encoded):
            # Only the decode is guarded: the resize runs in the graph, with its intra-op threads
            # (inside tf.data it measured ~20% slower per image).
            image, valid = _decode_or_invalid(decode, encoded, tf.zeros([1, 1, 3], tf.float32))
            return preprocess(image, training=False), valid

        def image_embed_encoded(encoded):
            s = self._image_size
            pixels, valid = tf.map_fn(
                decode_one, _ensure_shape(encoded, [None]),
                fn_output_signature=(tf.TensorSpec([s, s, 3], tf.float32),
                                     tf.TensorSpec([], tf.bool)))
            # Only the valid images reach the tower, so their rows are those of a batch of just
            # them (bit for bit); the invalid rows are zeros.
            rows = tf.where(valid)
            embeddings = tf.scatter_nd(rows, embed_pixels(tf.boolean_mask(pixels, valid)),
                                       tf.stack([tf.shape(valid, tf.int64)[0], dim]))
            embeddings.set_shape([None, dim])
            return {"embeddings": embeddings, "valid": valid}

        def text_embed(texts):
            return {"embeddings": embed_text(texts)}

        prefixes = tf.constant([t.split("{}")[0] for t in templates])
        suffixes = tf.constant([t.split("{}")[1] for t in templates])
        num_templates = len(templates)

        def embed_prompts(prompts):
            """``[N]`` strings → ``[N, D]``, at most MAX_PROMPTS_PER_CALL per text-tower call."""
            n = tf.size(prompts)
            chunk = MAX_PROMPTS_PER_CALL

            def chunked():
                num_chunks = (n + chunk - 1) // chunk
                padded = tf.concat([prompts, tf.fill([num_chunks * chunk - n], "")], 0)
                out = tf.map_fn(embed_text, tf.reshape(padded, [num_chunks, chunk]),
                                fn_output_signature=tf.TensorSpec([chunk, dim], tf.float32),
                                parallel_iterations=1)
                return tf.reshape(out, [-1, dim])[:n]

            out = tf.cond(n <= chunk, lambda: embed_text(prompts), chunked)
            out.set_shape([None, dim])
            return out

        def class_embeddings(class_names):
            """``[C]`` names → ``[C, D]`` prompt-ensembled, unit-norm class embeddings."""
            class_names = _ensure_shape(class_names, [None])
            c = tf.size(class_names)
            grid = [c, num_templates]
            prompts = tf.strings.join([tf.broadcast_to(prefixes[None, :], grid),
                                       tf.broadcast_to(class_names[:, None], grid),
                                       tf.broadcast_to(suffixes[None, :], grid)])
            emb = tf.reshape(embed_prompts(tf.reshape(prompts, [-1])), [c, num_templates, dim])
            # Text embeddings are already unit norm: mean over templates, then re-normalise.
            return losses.l2_normalize(tf.reduce_mean(emb, axis=1))

        def zero_shot_classify(images, class_names):
            image = embed_images(images)
            logits = model.logits(tf.matmul(image, class_embeddings(class_names), transpose_b=True))
            if model.similarity == "sigmoid":
                # Trained as independent pairwise decisions: each class's own probability.
                return {"probabilities": tf.sigmoid(logits), "logits": logits}
            return {"probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits}

        strings = tf.TensorSpec([None], tf.string, name="texts")
        fn = lambda f, *spec: tf.function(f, input_signature=list(spec), autograph=False)  # noqa
        self.image_embed = fn(image_embed, images_spec)
        if self._image_size is not None:  # decoded images differ in size: a batch needs one
            self.image_embed_encoded = fn(image_embed_encoded,
                                          tf.TensorSpec([None], tf.string, name="encoded"))
        self.text_embed = fn(text_embed, strings)
        self.zero_shot_classify = fn(zero_shot_classify, images_spec,
                                     tf.TensorSpec([None], tf.string, name="class_names"))
        self.class_embeddings = fn(lambda names: {"embeddings": class_embeddings(names)},
                                   tf.TensorSpec([None], tf.string, name="class_names"))
        if getattr(model, "fusion", None) is not None:  # ALBEF: the fusion encoder + ITM head
            self.image_text_match = fn(_image_text_match(model, tokenize, prepare_images),
                                       images_spec, strings)

        # Towers for fine-tuning: un-normalised features (the contrastive loss normalises).
        self.image_tower = _Tower(
            lambda pixels, training=False: model.image_encoder(pixels, training=training),
            model.image_encoder, tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels"))
        self.text_tower = _Tower(
            lambda texts, training=False: model.text_encoder(tokenize(texts), training=training),
            model.text_encoder, strings)

        signature_fns = list(self.signatures().values())
        used = _variables_used_by(signature_fns)
        self.variables = used
        self.trainable_variables = [v for v in used if v.trainable]
        # Everything any saved function captures must be reachable from the root object.
        self._captured = _variables_used_by(
            signature_fns + [self.class_embeddings, self.image_tower.__call__,
                             self.text_tower.__call__])

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
        self.max_tokens = meta(seq_len, tf.int32)
        self.embedding_dim = meta(dim, tf.int32)
        self.prompt_templates = meta(list(templates), tf.string)
        if vocab_dir is not None:
            from align_tf.tokenizer import save_vocabulary
            # A real asset: copied to assets/vocab.txt and relocated with the SavedModel. The
            # tokenizer itself runs on the same vocabulary compiled into the graph
            # (FastWordpieceTokenizer's model), so nothing needs to read this file to embed.
            self.vocab_file = tf.saved_model.Asset(
                save_vocabulary(preprocessor.vocabulary, os.path.join(vocab_dir, "vocab.txt")))

    def signatures(self) -> dict:
        """The serving signatures (name → tf.function with an input signature)."""
        names = ("image_embed", "image_embed_encoded", "text_embed", "zero_shot_classify",
                 "image_text_match")
        return {name: getattr(self, name) for name in names if hasattr(self, name)}


def _image_text_match(model, tokenize, prepare_images):
    """ALBEF models' ``image_text_match(images, texts) -> {"match_probability": [B]}``: the ITM
    head's P(match) of row-paired images (as ``image_embed``'s input) and raw strings; a batch
    size mismatch is an ``InvalidArgumentError`` naming it."""
    match = tf.function(
        lambda pixels, tokens: model.fusion.match_probability(pixels, tokens, training=False),
        autograph=False)

    def image_text_match(images, texts):
        pixels, tokens = prepare_images(images), tokenize(texts)
        n = tf.shape(pixels)[0]
        same = tf.debugging.assert_equal(
            n, tf.shape(tokens["token_ids"])[0],
            message="image_text_match needs one text per image (row-paired inputs): the batch "
                    "sizes of images and texts differ")
        with tf.control_dependencies([same]):
            # An empty batch never reaches the towers (TF's conv kernels mis-shape it).
            probability = tf.cond(n > 0, lambda: match(pixels, tokens),
                                  lambda: tf.zeros([0], tf.float32))
        probability.set_shape([None])
        return {"match_probability": probability}

    return image_text_match


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


def export_saved_model(model, preprocessor, path: str, *, image_size: int | None = None,
                       resize_size: int | None = None, templates="clip80",
                       config=None) -> str:
    """Writes the SavedModel / TF Hub module described in this module's docstring.

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
        if config is not None:
            data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            config_path = os.path.join(tmp, "align_config.json")
            with open(config_path, "w") as f:
                json.dump(data, f, indent=2, sort_keys=True, default=str)
            module.config_file = tf.saved_model.Asset(config_path)
        _save_quietly(module, path)
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
        if config is not None:
            config_path = os.path.join(tmp, "align_config.json")
            with open(config_path, "w") as f:
                json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
            module.config_file = tf.saved_model.Asset(config_path)
        _save_quietly(module, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def config_export_kwargs(config) -> dict:
    """``export_saved_model`` keyword arguments from a training config (image sizes, templates)."""
    return {"image_size": config.data.image_size, "resize_size": config.data.resize_size,
            "templates": config.export.templates}


PRECISIONS = ("fp32", "bf16")


def export_model_dir(model_dir: str, output: str | None = None, templates=None,
                     checkpoint: str | None = None, image_size: int | None = None,
                     resize_size: int | None = None, precision: str = "fp32") -> str:
    """What ``python -m align_tf.export`` does: ``run_dir.load_model`` then ``export_saved_model``.

    ``templates``, ``image_size`` / ``resize_size`` default to the config's ``export.templates``,
    ``data.image_size`` / ``data.resize_size``; ``output`` to ``{model_dir}/savedmodel``.
    ``precision="bf16"`` (opt-in) computes the towers in bfloat16 (Keras ``mixed_bfloat16``:
    float32 weights, preprocessing and embeddings), for GPUs and TPUs: on the AVX512-BF16 CPU of
    ``benchmarks/`` TF ran it slower than float32 (0.43-0.94x). Embeddings differ from float32
    by ~2-4e-3 (``bench_inference.py --bf16`` reports the deviation).
    """
    from align_tf import run_dir
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    model, preprocessor, config = run_dir.load_model(model_dir, checkpoint)
    if precision == "bf16":
        model = _bf16_copy(model, config, preprocessor.vocabulary_size)
    kwargs = config_export_kwargs(config)
    if templates is not None:
        kwargs["templates"] = templates
    if image_size:
        kwargs["image_size"] = image_size
    if resize_size is not None:
        kwargs["resize_size"] = resize_size or None
    output = output or run_dir.RunDir(model_dir).savedmodel_path
    return export_saved_model(model, preprocessor, output, config=config, **kwargs)


def _bf16_copy(model, config, vocabulary_size: int):
    """The same dual encoder built under Keras' ``mixed_bfloat16`` policy, with ``model``'s
    weights (the global policy is restored)."""
    import keras

    from align_tf.models.dual_encoder import build_dual_encoder
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        copy = build_dual_encoder(config.model, vocabulary_size)
    finally:
        keras.config.set_dtype_policy(policy)
    copy.set_weights(model.get_weights())
    return copy


def _define_flags():
    from absl import flags
    flags.DEFINE_string("model_dir", None, "Training model_dir with config.json, vocab.txt and "
                        "checkpoints/ (a training run or align_tf.convert.hf_align output).",
                        required=True)
    flags.DEFINE_string("output", None, "SavedModel directory to write; default "
                        "{model_dir}/savedmodel.")
    flags.DEFINE_enum("templates", "clip80", list(TEMPLATE_CHOICES),
                      "Prompt templates baked into zero_shot_classify: clip80 (CLIP's 80 ImageNet "
                      "templates, ALIGN §5.2), clip7 (CLIP's 7-template subset), simple "
                      "('a photo of a {}.'), none (the bare class name) or synthetic (the "
                      "built-in corpus' prompts).")
    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix to export; default the newest in "
                        "{model_dir}/checkpoints.")
    flags.DEFINE_integer("image_size", None, "Image tower input side; default the config's "
                         "data.image_size.")
    flags.DEFINE_enum("precision", "fp32", list(PRECISIONS), "Compute precision of the towers: "
                      "fp32, or bf16 (opt-in, for GPU/TPU serving; embeddings ~3e-3 off).")
    flags.DEFINE_integer("resize_size", None, "Resize before the centre crop (0: none); default "
                         "the config's data.resize_size.")


def main(argv):
    from absl import flags
    if len(argv) > 1:
        sys.exit(f"align_tf.export: error: unexpected arguments {argv[1:]}")
    f = flags.FLAGS
    try:
        path = export_model_dir(f.model_dir, f.output, f.templates, f.checkpoint, f.image_size,
                                f.resize_size, f.precision)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"align_tf.export: error: {e}")
    print(f"exported SavedModel to {path} "
          "(signatures: image_embed, image_embed_encoded, text_embed, zero_shot_classify)")


def run():
    """Console entry point (``align-export``): ``python -m align_tf.export --model_dir=DIR
    --output=DIR``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from align_tf import cli
    _define_flags()
    cli.run(__name__, main)


if __name__ == "__main__":
    run()
