"""The export signatures: one function each, registered by name with the models it supports.

A signature is ``fn(parts, *inputs) -> {output name: tensor}``, where ``parts`` is the export's
``SignatureParts`` (model, tokenizer, preprocessing, embedding functions) and ``inputs`` match the
declared ``tf.TensorSpec``s, whose names are the SavedModel signature's input names. Its
predicate, ``supports(parts) -> bool``, says whether a model gets it. ``AlignExport`` builds every
registered signature the model supports, in registration order; the CLI's message and
``export/SIGNATURES.md`` (checked by ``tests/test_export.py``) list the same names.

A new signature needs no edit of this package::

    import tensorflow as tf
    from align_tf.export import TEXTS, register_signature

    @register_signature("text_length", inputs=[TEXTS])
    def text_length(parts, texts):
        return {"num_tokens": tf.reduce_sum(tf.cast(parts.tokenize(texts)["padding_mask"],
                                                    tf.int32), axis=1)}

Importing that module before ``export_saved_model`` runs is enough; ``unregister_signature``
removes it again.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
from typing import Callable

import tensorflow as tf

from align_tf.export.parts import SignatureParts, _ensure_shape

# The inputs the built-in signatures take (the names are the signature's input names).
IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
ENCODED = tf.TensorSpec([None], tf.string, name="encoded")
TEXTS = tf.TensorSpec([None], tf.string, name="texts")
CLASS_NAMES = tf.TensorSpec([None], tf.string, name="class_names")

# Attributes of the exported object: a signature of one of these names would hide it.
RESERVED_NAMES = frozenset({
    "signatures", "image_tower", "text_tower", "class_embeddings", "variables",
    "trainable_variables", "similarity", "temperature", "log_logit_scale", "logit_bias",
    "image_size", "resize_size", "max_tokens", "embedding_dim", "prompt_templates", "vocab_file",
    "config_file"})


def always(parts: SignatureParts) -> bool:  # noqa: ARG001
    """Every model supports the signature."""
    return True


def has_image_size(parts: SignatureParts) -> bool:
    """The export knows the tower's input side (decoded images differ in size: a batch needs
    one)."""
    return parts.image_size is not None


def has_fusion_encoder(parts: SignatureParts) -> bool:
    """An ALBEF model (``model.fusion_layers > 0``): the fusion encoder and its ITM head."""
    return getattr(parts.model, "fusion", None) is not None


@dataclasses.dataclass(frozen=True)
class Signature:
    """One registered signature: ``fn(parts, *inputs)``, its input specs and its predicate."""
    name: str
    fn: Callable
    inputs: tuple
    supports: Callable[[SignatureParts], bool]

    def build(self, parts: SignatureParts):
        """The ``tf.function`` (with an input signature) the SavedModel serves."""
        call = functools.partial(self.fn, parts)
        call.__name__ = self.fn.__name__  # tf.function names its graphs after it
        return tf.function(call, input_signature=list(self.inputs), autograph=False)


_REGISTRY: dict[str, Signature] = {}


def register_signature(name: str, *, inputs, supports: Callable = always,
                       replace: bool = False):
    """Decorator registering ``fn(parts, *inputs) -> dict`` as the export signature ``name``.

    Args:
      name: the signature's name: a SignatureDef key and an attribute of the loaded object.
      inputs: one named ``tf.TensorSpec`` per input after ``parts`` (e.g. ``IMAGES``, ``TEXTS``).
      supports: ``supports(parts) -> bool``, whether a model gets the signature (default: all).
      replace: allow replacing a registered signature of the same name.
    """
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
            or name.startswith("_"):
        raise ValueError(f"export signature name must be a public Python identifier; got {name!r}")
    if name in RESERVED_NAMES:
        raise ValueError(f"export signature name {name!r} is an attribute of the exported object")
    if name in _REGISTRY and not replace:
        raise ValueError(f"export signature {name!r} is already registered (replace=True to "
                         "replace it)")
    inputs = tuple(inputs)
    if not all(isinstance(s, tf.TensorSpec) and s.name for s in inputs):
        raise ValueError(f"export signature {name!r}: inputs must be named tf.TensorSpecs")
    if len({s.name for s in inputs}) != len(inputs):
        raise ValueError(f"export signature {name!r}: input names must differ")

    def decorator(fn):
        _REGISTRY[name] = Signature(name, fn, inputs, supports)
        return fn

    return decorator


def unregister_signature(name: str) -> None:
    """Removes a registered signature (``KeyError`` if none has that name)."""
    del _REGISTRY[name]


def registered_signatures() -> tuple:
    """Every registered signature name, in registration order (built-ins first)."""
    return tuple(_REGISTRY)


def supported_signatures(parts: SignatureParts) -> list:
    """The registered ``Signature``s whose predicate accepts ``parts``, in registration order."""
    return [s for s in _REGISTRY.values() if s.supports(parts)]


# -- the built-in signatures (documented in export/SIGNATURES.md) --------------------------------

@register_signature("image_embed", inputs=[IMAGES])
def image_embed(parts, images):
    """float32 ``[B, H, W, 3]`` RGB in [0, 1] (TF Hub image convention), any ``H``/``W``; resized
    and centre-cropped inside by the layer evaluation uses → ``{"embeddings": [B, D]}``, unit
    norm."""
    return {"embeddings": parts.embed_images(images)}


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


def _decode(encoded):
    # channels=3: grayscale is replicated and alpha dropped; GIF: first frame only.
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.float32, expand_animations=False)
    image.set_shape([None, None, 3])
    # As training's tfrecord.decode_image: a decoded image without pixels is corrupt.
    tf.debugging.assert_positive(tf.reduce_prod(tf.shape(image)[:2]), "empty image")
    return image


@register_signature("image_embed_encoded", inputs=[ENCODED], supports=has_image_size)
def image_embed_encoded(parts, encoded):
    """string ``[B]`` of JPEG/PNG/GIF/BMP bytes (GIF: first frame; grayscale replicated, alpha
    dropped) → ``{"embeddings": [B, D], "valid": bool [B]}``. An image is valid when
    ``tf.io.decode_image(channels=3)`` decodes it to at least one pixel (what training keeps); any
    other (empty bytes, not an image, truncated or corrupt data: TF's decoders reject a JPEG cut
    anywhere, even just its end marker) gets ``valid`` False and a zero row, and never fails the
    batch. Valid rows equal those of a batch of only the valid images."""
    s, dim = parts.image_size, parts.dim

    def decode_one(one):
        # Only the decode is guarded: the resize runs in the graph, with its intra-op threads
        # (inside tf.data it measured ~20% slower per image).
        image, valid = _decode_or_invalid(_decode, one, tf.zeros([1, 1, 3], tf.float32))
        return parts.preprocess(image, training=False), valid

    pixels, valid = tf.map_fn(
        decode_one, _ensure_shape(encoded, [None]),
        fn_output_signature=(tf.TensorSpec([s, s, 3], tf.float32), tf.TensorSpec([], tf.bool)))
    # Only the valid images reach the tower, so their rows are those of a batch of just them
    # (bit for bit); the invalid rows are zeros.
    rows = tf.where(valid)
    embeddings = tf.scatter_nd(rows, parts.embed_pixels(tf.boolean_mask(pixels, valid)),
                               tf.stack([tf.shape(valid, tf.int64)[0], dim]))
    embeddings.set_shape([None, dim])
    return {"embeddings": embeddings, "valid": valid}


@register_signature("text_embed", inputs=[TEXTS])
def text_embed(parts, texts):
    """string ``[B]`` → WordPiece ids with the model's vocabulary, truncated to the model's
    maximum length → ``{"embeddings": [B, D]}``."""
    return {"embeddings": parts.embed_text(texts)}


@register_signature("zero_shot_classify", inputs=[IMAGES, CLASS_NAMES])
def zero_shot_classify(parts, images, class_names):
    """``class_names`` string ``[C]``; the prompt templates chosen at export are baked in (each
    class: the mean of its L2-normalised template embeddings, re-normalised, as ALIGN §5.2 /
    CLIP) → ``{"probabilities": [B, C], "logits": [B, C]}``. A softmax model (ALIGN): ``logits =
    cos / σ`` (the learned temperature), ``probabilities = softmax(logits)`` over the classes
    (rows sum to 1). A sigmoid model (SigLIP): ``logits = t·cos + b`` (learned scale and bias),
    ``probabilities = sigmoid(logits)``, each class's own match probability."""
    model = parts.model
    image = parts.embed_images(images)
    logits = model.logits(tf.matmul(image, parts.class_embeddings(class_names), transpose_b=True))
    if model.similarity == "sigmoid":
        # Trained as independent pairwise decisions: each class's own probability.
        return {"probabilities": tf.sigmoid(logits), "logits": logits}
    return {"probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits}


@register_signature("image_text_match", inputs=[IMAGES, TEXTS], supports=has_fusion_encoder)
def image_text_match(parts, images, texts):
    """ALBEF models only: images as ``image_embed``'s, texts string ``[B]``, row-paired →
    ``{"match_probability": [B]}``, the fusion encoder's image-text matching head's P(match). A
    batch size mismatch is an ``InvalidArgumentError`` naming it."""
    model = parts.model
    # A tf.function of its own: the fusion graph is one library function, as the towers'.
    match = tf.function(
        lambda pixels, tokens: model.fusion.match_probability(pixels, tokens, training=False),
        autograph=False)
    pixels, tokens = parts.prepare_images(images), parts.tokenize(texts)
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
