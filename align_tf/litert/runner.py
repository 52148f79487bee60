"""``Embedder``: runs ``RUN/litert/`` (``python -m align_tf.export --format=litert``) with
ai-edge-litert's interpreter (XNNPACK on), NumPy and the reference tokenizer; no TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np

from align_tf.litert.tokenizer import Tokenizer

PIXEL_RANGE = (-0.5, 1.5)  # as the SavedModel's image_embed: [0, 1] plus resampling slack


class LiteRTError(ValueError):
    """A bad input or directory: the message is one line, ``align_tf.litert: error: …``."""

    def __init__(self, message: str):
        super().__init__(f"align_tf.litert: error: {message}")


class _Tower:
    """One ``.tflite`` file: its interpreter, resized only when the input shapes change."""

    def __init__(self, path: str, threads: int | None):
        from ai_edge_litert.interpreter import Interpreter
        # The default (AUTO) resolver applies the XNNPACK delegate with num_threads threads.
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.inputs = {d["name"]: d["index"] for d in self.interpreter.get_input_details()}
        self.output = self.interpreter.get_output_details()[0]["index"]  # the embeddings
        self.shapes = None

    def __call__(self, **arrays) -> np.ndarray:
        shapes = {k: a.shape for k, a in arrays.items()}
        if shapes != self.shapes:
            for name, shape in shapes.items():
                self.interpreter.resize_tensor_input(self.inputs[name], list(shape))
            self.interpreter.allocate_tensors()
            self.shapes = shapes
        for name, array in arrays.items():
            self.interpreter.set_tensor(self.inputs[name], array)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


class Embedder:
    """Unit-norm image and text embeddings from the LiteRT files of an export.

    Args:
      directory: ``RUN/litert`` (``image_embed.tflite``, ``text_embed.tflite``, ``vocab.txt``,
        ``metadata.json``).
      threads: interpreter (XNNPACK) threads; ``None``: LiteRT's default.

    Attributes: ``metadata`` (``metadata.json``), ``tokenizer`` (``align_tf.litert.Tokenizer``),
    ``embedding_dim``.
    """

    def __init__(self, directory: str, threads: int | None = None):
        meta_path = os.path.join(directory, "metadata.json")
        if not os.path.isfile(meta_path):
            raise LiteRTError(f"{directory} has no metadata.json: not a LiteRT export "
                              "(python -m align_tf.export --format=litert --model_dir=RUN)")
        with open(meta_path, encoding="utf-8") as f:
            self.metadata = json.load(f)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise LiteRTError(f"threads must be a positive integer; got {threads!r}")
        if importlib.util.find_spec("ai_edge_litert") is None:
            raise LiteRTError("the LiteRT runner needs ai-edge-litert: pip install "
                              "'align_tf[edge]'")
        meta = self.metadata
        self.embedding_dim = int(meta["embedding_dim"])
        self._image = _Tower(os.path.join(directory, meta["image"]["file"]), threads)
        self._text = _Tower(os.path.join(directory, meta["text"]["file"]), threads)
        t = meta["tokenizer"]
        self.tokenizer = Tokenizer(os.path.join(directory, t["vocab"]), t["max_tokens"],
                                   t["lowercase"], t["strip_accents"])

    def embed_images(self, images) -> np.ndarray:
        """float32 ``[B, H, W, 3]`` RGB in [0, 1], any ``H``/``W`` → float32 ``[B, D]``."""
        images = _check_images(images)
        if images.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        return self._image(images=images)

    def embed_texts(self, texts) -> np.ndarray:
        """Strings (or UTF-8 bytes) → float32 ``[B, D]``; the towers run on the batch's longest
        text (padding columns are masked, so the embeddings equal the padded batch's)."""
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.embedding_dim), np.float32)
        tokens = self.tokenizer(texts)
        lengths = tokens["padding_mask"].sum(axis=1)
        empty = np.flatnonzero(lengths <= 2)  # [CLS] [SEP] only
        if empty.size:
            i = int(empty[0])
            raise LiteRTError(f"text {i} is empty (no tokens after normalisation): "
                              f"{texts[i]!r:.60}")
        longest = int(lengths.max())
        return self._text(token_ids=np.ascontiguousarray(tokens["token_ids"][:, :longest]),
                          padding_mask=np.ascontiguousarray(tokens["padding_mask"][:, :longest]))

    def class_embeddings(self, class_names) -> np.ndarray:
        """``[C]`` names → ``[C, D]``: each the re-normalised mean of its prompt embeddings
        (``metadata.json``'s templates), as the SavedModel's ``class_embeddings``."""
        templates = self.metadata["prompt_templates"]
        names = _check_texts(class_names)
        prompts = [t.replace("{}", n if isinstance(n, str) else n.decode("utf-8", "replace"))
                   for n in names for t in templates]
        emb = self.embed_texts(prompts).reshape(len(names), len(templates), -1).mean(axis=1)
        return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


def _check_images(images) -> np.ndarray:
    """The checks of the SavedModel's ``image_embed``, as one-line errors."""
    if not isinstance(images, np.ndarray):
        raise LiteRTError(f"images must be a NumPy array; got {type(images).__name__}")
    if images.dtype != np.float32:
        raise LiteRTError(f"images must be float32 RGB in [0, 1] (divide uint8 images by 255); "
                          f"got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise LiteRTError(f"images must have shape [B, H, W, 3]; got {list(images.shape)}")
    if images.shape[0] and (images.shape[1] == 0 or images.shape[2] == 0):
        raise LiteRTError(f"images must have height and width > 0; got {list(images.shape)}")
    if images.size and not np.isfinite(images).all():
        raise LiteRTError("images must be float32 RGB pixels in [0, 1]: got non-finite values")
    if images.size and not PIXEL_RANGE[0] <= images.min() <= images.max() <= PIXEL_RANGE[1]:
        raise LiteRTError("images must be float32 RGB pixels in [0, 1] (divide uint8 by 255): "
                          f"got values outside [-0.5, 1.5] (min {images.min():.3g}, max "
                          f"{images.max():.3g})")
    return np.ascontiguousarray(images)


def _check_texts(texts) -> list:
    if isinstance(texts, (str, bytes)):
        raise LiteRTError("texts must be a list of strings, not one string (wrap it: [text])")
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise LiteRTError(f"texts must be one-dimensional; got shape {list(texts.shape)}")
    try:
        texts = list(texts)
    except TypeError:
        raise LiteRTError(f"texts must be a list of strings; got {type(texts).__name__}") from None
    for i, text in enumerate(texts):
        if not isinstance(text, (str, bytes)):
            raise LiteRTError(f"text {i} must be a str (or UTF-8 bytes); got "
                              f"{type(text).__name__}")
    return texts
