"""What every export signature shares: the model, its tokenizer, the image preprocessing and the
embedding functions, built once per export (``SignatureParts``), and the input checks.

A signature (``align_tf.export.signatures``) is a function of a ``SignatureParts`` and its
inputs; it never builds a tower call of its own, so the SavedModel stores each tower's graph once
whatever the number of signatures.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from align_tf import losses
from align_tf.data.preprocessing import ImagePreprocessor
from align_tf.prompts import check_templates

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


class SignatureParts:
    """The shared pieces of one export, handed to every signature function and predicate.

    Cheap to build: the tower functions are made on first use, so a predicate (or the CLI's
    list of signatures) can look at ``model`` / ``image_size`` without tracing anything.

    Attributes:
      model: the ``DualEncoder`` (``embed_image`` / ``embed_text`` / ``logits`` / ``similarity``;
        ALBEF models also ``fusion``).
      preprocessor: its ``align_tf.tokenizer.TextPreprocessor``.
      image_size: the image tower's input side, or ``None`` (images embedded at the size given).
      resize_size: resize-then-centre-crop size of evaluation, or ``None`` (resize only).
      templates: the prompt templates baked into the zero-shot class embeddings.
      dim, seq_len: the embedding size and the tokenizer's maximum length.
    """

    def __init__(self, model, preprocessor, image_size=None, resize_size=None,
                 templates=("{}",)):
        self.model, self.preprocessor = model, preprocessor
        self.templates = check_templates(templates)
        self.image_size = int(image_size) if image_size else None
        self.resize_size = int(resize_size) if resize_size else None
        self.seq_len = preprocessor.sequence_length
        self.dim = int(model.image_encoder.output_shape[-1])
        # Eager constants, made here and not inside a trace: every function captures the same.
        self._prefixes = tf.constant([t.split("{}")[0] for t in self.templates])
        self._suffixes = tf.constant([t.split("{}")[1] for t in self.templates])

    # -- made once, on first use -----------------------------------------------------------------

    @functools.cached_property
    def preprocess(self):
        """The evaluation preprocessing layer (``ImagePreprocessor``), ``None`` without an
        ``image_size``. Only its ops are saved, never the Keras object."""
        if self.image_size is None:
            return None
        return ImagePreprocessor(self.image_size, self.resize_size)

    @functools.cached_property
    def embed_text(self):
        """``tf.function``: string ``[B]`` → float32 ``[B, D]`` text embeddings. The towers (and
        the tokenizer's compiled vocabulary) are tf.functions of their own: every signature calls
        the same library function, so the SavedModel stores each graph once instead of once per
        signature and branch. Embeddings are float32 whatever the compute precision."""
        return tf.function(
            lambda texts: tf.cast(self.model.embed_text(_trim_padding(self.tokenize(texts)),
                                                        training=False), tf.float32),
            input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)

    @functools.cached_property
    def embed_image(self):
        """``tf.function``: float32 ``[B, S, S, 3]`` tower pixels → ``[B, D]`` embeddings."""
        side = self.image_size
        return tf.function(
            lambda pixels: tf.cast(self.model.embed_image(pixels, training=False), tf.float32),
            input_signature=[tf.TensorSpec([None, side, side, 3], tf.float32)], autograph=False)

    # -- graph pieces, called inside the signatures' traces --------------------------------------

    def tokenize(self, texts):
        """String ``[B]`` → the text tower's inputs, ``[B, seq_len]`` each."""
        tokens = self.preprocessor(_ensure_shape(texts, [None]))
        # An empty batch comes out of the packer as shape (0,); the text tower needs (0, L).
        return {k: tf.reshape(v, [-1, self.seq_len]) for k, v in tokens.items()}

    def prepare_images(self, images):
        """Checked ``[B, H, W, 3]`` pixels in [0, 1] → the tower's ``[B, S, S, 3]``."""
        images = _check_pixels(images)
        if self.image_size is None:
            return images
        return self.preprocess(images, training=False)

    def embed_pixels(self, pixels):
        """Tower pixels → ``[B, D]``; an empty batch never reaches the tower (TF's conv kernels
        mis-shape it: ``[0,H,W,3]`` → ``[0,H',W',3]``)."""
        return tf.cond(tf.shape(pixels)[0] > 0, lambda: self.embed_image(pixels),
                       lambda: tf.zeros([0, self.dim], tf.float32))

    def embed_images(self, images):
        """Raw images (as ``image_embed``'s input) → ``[B, D]``."""
        return self.embed_pixels(self.prepare_images(images))

    def embed_prompts(self, prompts):
        """``[N]`` strings → ``[N, D]``, at most MAX_PROMPTS_PER_CALL per text-tower call."""
        n = tf.size(prompts)
        chunk, dim, embed_text = MAX_PROMPTS_PER_CALL, self.dim, self.embed_text

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

    def class_embeddings(self, class_names):
        """``[C]`` names → ``[C, D]`` prompt-ensembled, unit-norm class embeddings."""
        class_names = _ensure_shape(class_names, [None])
        c, num_templates = tf.size(class_names), len(self.templates)
        grid = [c, num_templates]
        prompts = tf.strings.join([tf.broadcast_to(self._prefixes[None, :], grid),
                                   tf.broadcast_to(class_names[:, None], grid),
                                   tf.broadcast_to(self._suffixes[None, :], grid)])
        emb = tf.reshape(self.embed_prompts(tf.reshape(prompts, [-1])),
                         [c, num_templates, self.dim])
        # Text embeddings are already unit norm: mean over templates, then re-normalise.
        return losses.l2_normalize(tf.reduce_mean(emb, axis=1))
