"""align_tf: ALIGN (Jia et al., ICML 2021) dual encoder in TensorFlow 2 / Keras 3.

The Python API (``align_tf.api``), loaded on first use::

    import align_tf

    model = align_tf.load("kakaobrain/align-base")   # or a run dir, a SavedModel, an HF directory
    images = model.embed_images(["cat.jpg", "dog.png"])          # float32 [2, D], unit norm
    texts = model.embed_texts(["a photo of a cat", "a dog"])     # float32 [2, D], unit norm
    result = model.zero_shot(["cat.jpg"], ["cat", "dog"])        # probabilities [1, 2], labels
    align_tf.export(model, "/tmp/align_savedmodel")              # a TF Hub module
    fresh = align_tf.build_model("default")                      # untrained; .keras_model
    index = align_tf.search.Index.load("my_index")               # python -m align_tf.index
    hits = index.query(text="a red circle", k=10)                # [{"id", "score", ...}]

``load`` takes a Hugging Face repo id (downloaded and converted once into ``~/.cache/align_tf``:
``pip install "align_tf[pretrained]"``), a local HF ``AlignModel`` directory, a run or converted
directory, or a SavedModel; ``align_tf.Model`` documents what a model returns.

Importing the package loads nothing heavy (no TensorFlow; ``tests/test_imports.py`` checks it), so
``python -m align_tf.X --help`` starts fast. The commands, each also a console script:

| command | console script |
| --- | --- |
| ``python -m align_tf.train`` | ``align-train`` |
| ``python -m align_tf.evaluate`` | ``align-evaluate`` |
| ``python -m align_tf.export`` | ``align-export`` |
| ``python -m align_tf.finetune`` | ``align-finetune`` |
| ``python -m align_tf.data.build`` | ``align-build`` |
| ``python -m align_tf.data.vocab`` | ``align-vocab`` |
| ``python -m align_tf.convert`` | ``align-convert`` |
| ``python -m align_tf.index`` | ``align-index`` |
| ``python -m align_tf.search`` | ``align-search`` |
| ``python -m align_tf.serve`` | ``align-serve`` |
"""

import importlib

# Public name → the module defining it, imported on first access (PEP 562), so that `import
# align_tf` stays free of TensorFlow.
_PUBLIC = {"load": "align_tf.api", "build_model": "align_tf.api", "Model": "align_tf.api", "PretrainedError": "align_tf.pretrained",
           "sample_images": "align_tf.samples", "sample_pairs": "align_tf.samples"}
# Public subpackages, imported on first access too: ``align_tf.search.Index.load(DIR)``.
_SUBPACKAGES = ("export", "search")
__all__ = sorted(list(_PUBLIC) + list(_SUBPACKAGES))


def __getattr__(name):
    if name == "export":
        # align_tf.export is the export subpackage; align_tf.api makes it callable as
        # align_tf.export(model, path).
        importlib.import_module("align_tf.api")
        return importlib.import_module("align_tf.export")
    if name in _SUBPACKAGES:
        return importlib.import_module(f"align_tf.{name}")
    if name in _PUBLIC:
        # importlib, not an import statement: the package does not depend on its API modules
        # (they import the package's lower layers; tests/test_imports.py counts statements).
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'align_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
