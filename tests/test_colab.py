"""The Colab demos in colab/ (issue 8) run top to bottom, headless, on a tiny model made here.

Every notebook is executed with nbclient in a fresh ``python3`` kernel. Their first code cell reads
its parameters from ``ALIGN_*`` environment variables, which point at a tiny model trained and
exported once for this module (20 steps) and at synthetic images written here, so nothing is
downloaded or installed. Each notebook ends with a cell that prints a JSON summary; the tests check
its values, and that the cells that plot produced PNG figures.
"""

import ast
import glob
import json
import os
import re

import nbformat
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(REPO, "colab")
NOTEBOOKS = ("zero_shot_classification", "image_text_search", "train_your_own")
BADGE = "https://colab.research.google.com/github/align-tf/align_tf/blob/main/colab/{}.ipynb"
# Seen (colour, shape) pairs of align_tf.data.synthetic, one image each in IMAGE_DIR.
SAMPLE_CLASSES = (("red", "circle"), ("blue", "square"), ("green", "star"), ("yellow", "triangle"),
                  ("orange", "cross"), ("purple", "circle"))


def _read(name):
    return nbformat.read(os.path.join(COLAB, name + ".ipynb"), as_version=4)


# --------------------------------------------------------------------------- static checks

def test_notebook_set():
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(COLAB, "*.ipynb"))) == sorted(
        n + ".ipynb" for n in NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_have_no_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (name, cell.source[:80])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_badge_parameters_and_guarded_install(name):
    nb = _read(name)
    assert BADGE.format(name) in nb.cells[0].source
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert "os.environ.get(" in code[0]  # the first code cell holds the parameters
    installs = [s for s in code if "%pip install" in s]
    assert len(installs) == 1 and "find_spec" in installs[0]
    # tensorflow_text registers the tokenizer ops: imported before any hub.load.
    text = "\n".join(code)
    assert text.index("import tensorflow_text") < text.index("hub.load(")


def _python(source):
    """A code cell as plain Python: IPython's ``%magic`` and ``!shell`` lines (with their
    backslash continuations) become ``pass``."""
    return re.sub(r"(?m)^(\s*)[%!](?:.*\\\n)*.*$", r"\1pass", source)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_use_only_public_align_tf_names(name):
    """``import align_tf`` and its public names (``align_tf.__all__``), never a submodule; the
    commands (``python -m align_tf.X``) are the other way in."""
    import align_tf
    for cell in _read(name).cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(_python(cell.source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.startswith("align_tf.")]
                assert not bad, (name, bad)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("align_tf"):
                pytest.fail(f"{name}: from {node.module} import ...")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id == "align_tf":
                assert node.attr in align_tf.__all__, (name, node.attr)


def test_zero_shot_draws_its_samples_at_the_module_image_size(tiny_module, tmp_path, monkeypatch):
    """The zero-shot notebook's cells up to the drawing, run here (magics skipped): with an empty
    image folder it draws MAX_IMAGES samples at the loaded module's ``image_size`` (the tiny run's
    data.image_size, 48), where the default model was trained (issue [usability] #30)."""
    from PIL import Image

    folder = tmp_path / "images"
    for key, value in dict(ALIGN_ROOT=tmp_path, ALIGN_MODULE=tiny_module, ALIGN_IMAGE_DIR=folder,
                           ALIGN_MAX_IMAGES=8).items():
        monkeypatch.setenv(key, str(value))
    cells = [c.source for c in _read("zero_shot_classification").cells if c.cell_type == "code"]
    draw = next(i for i, source in enumerate(cells) if "sample_images" in source)
    namespace = {}
    for source in cells[:draw + 1]:
        exec(compile(_python(source), "zero_shot_classification.ipynb", "exec"), namespace)
    size = int(namespace["module"].image_size.numpy())
    assert size == 48 and namespace["SAMPLE_SIZE"] == size
    drawn = sorted(glob.glob(str(folder / "*.png")))
    assert len(drawn) == 8 and namespace["paths"] == drawn
    assert {Image.open(p).size for p in drawn} == {(size, size)}


# --------------------------------------------------------------------------- execution

@pytest.fixture(scope="module")
def tiny_module(tiny_run):
    """A tiny model (nano towers, 20 steps on the synthetic corpus) exported as a SavedModel
    (conftest's ``tiny_run``)."""
    return os.path.join(tiny_run, "savedmodel")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Synthetic PNGs of various sizes, named colour_shape_N.png."""
    from PIL import Image

    from align_tf.data import synthetic

    folder = tmp_path_factory.mktemp("colab_images")
    rng = np.random.default_rng(1)
    for i, pair in enumerate(SAMPLE_CLASSES):
        for j, size in enumerate((64, 96)):
            image, _, _ = synthetic.render(pair, size, rng)
            Image.fromarray(image).save(folder / f"{pair[0]}_{pair[1]}_{j}.png")
    return str(folder)


def _execute(name, tmp_path, monkeypatch, **env):
    from nbclient import NotebookClient

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    monkeypatch.setenv("ALIGN_ROOT", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    nb = _read(name)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(nb, str(tmp_path / f"{name}.executed.ipynb"))  # for debugging a failure
    return nb


def _stdout(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _summary(nb):
    """The JSON printed by the last code cell."""
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    return json.loads(_stdout(last).strip().splitlines()[-1])


def _png_cells(nb):
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
        "image/png" in o.get("data", {}) for o in c.outputs)]


def _nothing_installed(nb):
    cell = next(c for c in nb.cells if c.cell_type == "code" and "%pip install" in c.source)
    assert "already installed: nothing to install" in _stdout(cell)


def test_zero_shot_classification(tiny_module, image_dir, tmp_path, monkeypatch):
    classes = ["red circle", "blue square", "green star", "yellow triangle", "orange cross",
               "purple circle", "a cat"]
    nb = _execute("zero_shot_classification", tmp_path, monkeypatch, ALIGN_MODULE=tiny_module,
                  ALIGN_IMAGE_DIR=image_dir, ALIGN_CLASS_NAMES=",".join(classes),
                  ALIGN_MAX_IMAGES=8)
    _nothing_installed(nb)
    s = _summary(nb)
    assert s["num_images"] == 8 and s["num_classes"] == len(classes)
    # The hub.load part runs without align_tf (the images were given, so nothing drew them).
    assert s["align_tf_imported"] is False
    for labels in s["top_labels"].values():
        assert len(labels) == 5 and len(set(labels)) == 5 and set(labels) <= set(classes)
    for probs in s["top_probabilities"]:
        assert all(a >= b for a, b in zip(probs, probs[1:]))
    np.testing.assert_allclose(s["probability_sums"], 1.0, atol=1e-5)
    np.testing.assert_allclose(s["embedding_norms"], 1.0, atol=1e-4)
    assert s["max_manual_difference"] < 1e-4
    assert len(_png_cells(nb)) >= 1


def test_image_text_search(tiny_module, tmp_path, monkeypatch):
    # No ALIGN_IMAGE_DIR: the notebook draws its own sample collection (25 images, one per class).
    nb = _execute("image_text_search", tmp_path, monkeypatch, ALIGN_MODULE=tiny_module,
                  ALIGN_NUM_SAMPLE_IMAGES=25, ALIGN_TOP_K=4)
    _nothing_installed(nb)
    s = _summary(nb)
    assert s["num_images"] == s["index_size"] == s["embedded"] == 25
    # The search goes through align_tf.index and Index.query, not notebook-local FAISS code.
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "-m align_tf.index" in code and "index.query(" in code and "import faiss" not in code
    assert len(os.listdir(tmp_path / "align_search_images")) == 25
    np.testing.assert_allclose(s["image_norms"], 1.0, atol=1e-4)
    np.testing.assert_allclose(s["text_norms"], 1.0, atol=1e-4)
    np.testing.assert_allclose(s["arithmetic_norms"], 1.0, atol=1e-5)
    assert len(s["text_results"]) == 4
    for results in (list(s["text_results"].values()) + s["image_results"]
                    + s["arithmetic_results"]):
        assert len(results) == 4 and len(set(results)) == 4
    for scores in s["text_scores"] + s["image_scores"]:
        assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:]))
    # Searching with an image of the collection finds that image first, with cosine 1.
    assert [r[0] for r in s["image_results"]] == s["image_queries"]
    np.testing.assert_allclose([sc[0] for sc in s["image_scores"]], 1.0, atol=1e-4)
    # The arithmetic queries start from the images their prefixes name.
    assert [q.split(":")[0].rsplit("_", 1)[0] for q in s["arithmetic_queries"]] == [
        "red_circle", "green_square", "orange_triangle"]
    # One figure each for the text, image and image + text searches.
    assert len(_png_cells(nb)) >= 3


def test_train_your_own(tmp_path, monkeypatch):
    steps = 6
    nb = _execute("train_your_own", tmp_path, monkeypatch, ALIGN_WORK_DIR=tmp_path / "work",
                  ALIGN_NUM_PAIRS=200, ALIGN_TRAIN_STEPS=steps, ALIGN_BATCH_SIZE=16,
                  ALIGN_VOCAB_SIZE=300)
    _nothing_installed(nb)
    s = _summary(nb)
    # The builder read every pair and dropped the junk captions (file names: < 3 words).
    assert s["rows"] == 200 and 100 < s["kept"] < 200
    assert set(s["dropped"]) == {"too_few_words"}
    assert (s["train_shards"], s["eval_shards"]) == (9, 1)
    assert 50 < s["vocab_size"] <= 300
    assert s["checkpoint"].endswith(f"ckpt-{steps}")
    assert s["loss_steps"] == [steps]
    retrieval = s["retrieval"]
    for key in ("i2t_R@1", "t2i_R@1", "i2t_R@5", "t2i_R@5"):
        assert 0.0 <= retrieval[key] <= 1.0, key
    assert os.path.exists(os.path.join(s["export"], "saved_model.pb"))
    assert s["image_embeddings"][0] == s["text_embeddings"][0] == 6
    assert s["image_embeddings"][1] == s["text_embeddings"][1]
    np.testing.assert_allclose(s["norms"], 1.0, atol=1e-4)
    assert s["similarity_shape"] == [6, 6]
    # Sample pairs, loss curve, similarity matrix.
    assert len(_png_cells(nb)) >= 3
