"""Cross-modal search: ``align_tf.index`` (Beam, resumable) and ``align_tf.search`` (CLI, Python).

One random nano model is exported once; a generated folder (images of every format in nested
directories, plus a text file, a corrupt JPEG, a truncated JPEG, a dangling link and a duplicate)
is indexed through the command's ``main`` in-process. Every answer is checked against an exact
NumPy search over embeddings the test gets from the SavedModel's own signatures, not from the
indexer. The approximate index is checked on its own at a size where it really is approximate
(clustered vectors with a modality gap), and end to end with ``--exact_below=0``. Remote input
and output (gs:// on Dataflow) run on tf.io.gfile's in-process ``ram://`` filesystem.
"""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from align_tf.search import ann
from align_tf.search.model import SearchError

IMAGE_SIZE = 32
FORMATS = (("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"), ("WEBP", "webp"))
NUM_IMAGES = 45
TEXTS = ["a red star", "a blue circle on a white background", "two small green squares",
         "the yellow triangle", "a big purple heart", "an orange cat and a black dog",
         "a photo of the cool car", "a drawing of many flowers", "snow", "zzz unknown"]


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory):
    """A random nano model exported with ``image_embed_encoded`` and ``text_embed``."""
    import tensorflow as tf

    from align_tf.configs import base
    from align_tf.export import export_saved_model
    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.tokenizer import TextPreprocessor, build_vocabulary
    config = base.get_config()
    config.model.text_size_name = config.model.image_size_name = "nano"
    vocab = build_vocabulary(TEXTS, vocab_size=100)
    model = build_dual_encoder(config.model, len(vocab))
    # BERT at init embeds every text alike; random weights make text queries differ.
    for i, v in enumerate(model.text_encoder.trainable_variables):
        offset = 1.0 if v.path.endswith("gamma") else 0.0
        v.assign(tf.random.stateless_normal(v.shape, seed=(3, i)) * 0.2 + offset)
    path = str(tmp_path_factory.mktemp("search") / "savedmodel")
    export_saved_model(model, TextPreprocessor(vocab, sequence_length=16), path,
                       image_size=IMAGE_SIZE, templates="none")
    return path


def _image(rng, fmt):
    """A small smooth random image in ``fmt``."""
    h, w = rng.integers(8, 40, 2)
    base = rng.random((3, 3, 3))
    pixels = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((int(w), int(h))))
    noise = rng.normal(0, 20, pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """``(root, {id: bytes of each good, distinct image}, bad {id: reason}, duplicate ids)``."""
    root = tmp_path_factory.mktemp("collection")
    rng = np.random.default_rng(0)
    good = {}
    for i in range(NUM_IMAGES):
        fmt, ext = FORMATS[i % len(FORMATS)]
        rel = f"{'ab'[i % 2]}/{'deep/' if i % 3 == 0 else ''}img {i:02d}.{ext}"
        good[rel] = _image(rng, fmt)
    jpeg = _image(rng, "JPEG")
    files = dict(good, **{"notes.txt": b"not an image", "truncated.jpg": jpeg[:len(jpeg) // 2],
                          "corrupt.jpg": jpeg[:30] + bytes(300) + jpeg[330:],
                          "copy.png": good["a/deep/img 00.jpg"]})
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    bad = {"notes.txt": "not_an_image", "truncated.jpg": "corrupt", "corrupt.jpg": "corrupt",
           "dangling.jpg": "unreadable"}
    return str(root), good, bad, ["copy.png"]


def _transcoded(data):
    """The bytes TF can decode: WebP as PNG (Pillow), as the indexer documents."""
    if data[8:12] != b"WEBP":
        return data
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def reference(savedmodel, collection):
    """Embeddings straight from the SavedModel's signatures:
    ``(ids, E, embed_text, embed_image)``."""
    import importlib

    import tensorflow as tf
    importlib.import_module("tensorflow_text")  # the module's tokenizer ops
    module = tf.saved_model.load(savedmodel)
    image_fn, text_fn = (module.signatures[n] for n in ("image_embed_encoded", "text_embed"))

    def embed_image(data):
        out = image_fn(encoded=tf.constant([_transcoded(data)]))
        assert out["valid"].numpy()[0]
        return out["embeddings"].numpy()[0]

    def embed_text(text):
        return text_fn(texts=tf.constant([text]))["embeddings"].numpy()[0]

    ids = sorted(collection[1])
    return ids, np.stack([embed_image(collection[1][i]) for i in ids]), embed_text, embed_image


def _index(argv, capsys=None):
    """``python -m align_tf.index ARGV``, in-process; its printed stats."""
    from align_tf import index
    values, beam_args = index.parse_args(argv + ["--no-progress"])
    index.main(["align_tf.index"] + beam_args, values)
    return json.loads(capsys.readouterr().out.splitlines()[-1]) if capsys else None


def _search(argv, capsys):
    """``python -m align_tf.search ARGV``, in-process; its JSON lines."""
    from align_tf.search import command
    command.main([], command.parse_args(argv))
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def indexed(savedmodel, collection, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("index") / "idx")
    import contextlib

    from align_tf import index
    buffer = io.StringIO()  # module scope: no capsys
    with contextlib.redirect_stdout(buffer):
        values, beam_args = index.parse_args([f"--model={savedmodel}",
                                              f"--input=images:{collection[0]}",
                                              f"--output={out}", "--shard_size=16",
                                              "--no-progress"])
        index.main(["align_tf.index"] + beam_args, values)
    return out, json.loads(buffer.getvalue().splitlines()[-1])


def _exact(reference, q, k=10):
    ids, vectors = reference[0], reference[1]
    scores = vectors @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[i] for i in order], dict(zip(ids, scores))


def _assert_exact(results, reference, q, k=10):
    """``results`` is the exact top-``k`` of ``q``: same scores rank by rank; same ids but
    where two scores tie within float noise."""
    ids, scores = _exact(reference, q, k)
    assert len(results) == min(k, len(reference[0]))
    for rank, result in enumerate(results):
        assert result["score"] == pytest.approx(scores[result["id"]], abs=2e-4)
        assert result["score"] == pytest.approx(scores[ids[rank]], abs=2e-4)
        if result["id"] != ids[rank]:
            assert abs(scores[result["id"]] - scores[ids[rank]]) < 2e-4


def test_stats_count_every_file_by_reason(indexed, collection, savedmodel):
    out, printed = indexed
    root, good, bad, duplicates = collection
    stats = json.load(open(os.path.join(out, "stats.json")))
    assert stats == printed
    assert stats == {"embedded": len(good),
                     "skipped": {"not_an_image": 1, "corrupt": 2, "unreadable": 1},
                     "duplicates": len(duplicates)}
    files = sum(len(f) for _, _, f in os.walk(root))
    assert stats["embedded"] + sum(stats["skipped"].values()) + stats["duplicates"] == files
    meta = json.load(open(os.path.join(out, "index.json")))
    assert meta["params"]["kind"] == "flat" and meta["count"] == len(good)
    from align_tf.search.model import identity
    assert meta["model"] == {"path": os.path.abspath(savedmodel), "hash": identity(savedmodel)}


def test_cli_text_and_image_queries_equal_exact_search(indexed, collection, reference, capsys):
    out = indexed[0]
    results = _search([f"--index={out}", f"--text={TEXTS[0]}"], capsys)
    assert [list(r) for r in results] == [["id", "score", "source", "caption"]] * 10
    _assert_exact(results, reference, reference[2](TEXTS[0]))
    image_id = "a/deep/img 06.png"
    results = _search([f"--index={out}", f"--image={os.path.join(collection[0], image_id)}",
                       "--k=5"], capsys)
    _assert_exact(results, reference, reference[3](collection[1][image_id]), k=5)
    assert results[0]["id"] == image_id and results[0]["score"] == pytest.approx(1, abs=1e-4)
    assert results[0]["source"] == os.path.join(collection[0], "a", "deep", "img 06.png")
    assert results[0]["caption"] is None


def test_python_api_arithmetic_query_equals_exact_search(indexed, collection, reference):
    from align_tf.search import Index
    index = Index.load(indexed[0])
    for text in TEXTS[1:5]:
        _assert_exact(index.query(text=text), reference, reference[2](text))
    data = collection[1]["a/img 04.webp"]
    for weight in (1.0, 0.5):
        q = ann.normalise((reference[3](data) + weight * reference[2](TEXTS[0])
                           - weight * reference[2](TEXTS[1]))[None])[0]
        results = index.query(image=data, plus=[TEXTS[0]], minus=[TEXTS[1]], weight=weight)
        _assert_exact(results, reference, q)
        assert results[0]["id"] == _exact(reference, q)[0][0]
    # Several plus/minus texts add up; a text base query.
    q = ann.normalise((reference[2]("snow") + sum(reference[2](t) for t in TEXTS[2:4])
                       - reference[2](TEXTS[5]))[None])[0]
    _assert_exact(index.query(text="snow", plus=TEXTS[2:4], minus=TEXTS[5], k=7), reference, q,
                  k=7)
    with pytest.raises(SearchError, match="notes.txt is not a decodable image"):
        index.query(image=os.path.join(collection[0], "notes.txt"))


def test_forced_approximate_index_recall(indexed, reference, tmp_path, capsys):
    """``--exact_below=0``: the same parts (nothing re-embedded) under IVF; recall@10 against
    exact search for text and image queries."""
    from align_tf.search import Index, indexer
    out = str(tmp_path / "approx")
    shutil.copytree(indexed[0], out)
    shutil.rmtree(os.path.join(out, "ann"))
    before = indexer.COUNTERS["images"]
    model = json.load(open(os.path.join(out, "index.json")))["model"]["path"]
    collection_root = json.load(open(os.path.join(out, "plan.json")))["inputs"][0]
    _index([f"--model={model}", f"--input={collection_root}", f"--output={out}",
            "--exact_below=0"], capsys)
    assert indexer.COUNTERS["images"] == before
    meta = json.load(open(os.path.join(out, "index.json")))
    assert meta["params"]["kind"] == "ivf_flat" and meta["params"]["nlist"] >= 2
    index = Index.load(out)
    for queries in ([reference[2](t) for t in TEXTS], list(reference[1])):
        found = [[index.rows[r]["id"] for r in index.search(q[None], 10)[1][0]] for q in queries]
        truth = [_exact(reference, q)[0] for q in queries]
        assert ann.recall_at_k(np.array(found), np.array(truth)) >= 0.95
    # A memory budget of a few vectors: many exact shards; the fanned-out, merged top-10 is
    # still exact search's.
    _index([f"--model={model}", f"--input={collection_root}", f"--output={out}",
            "--budget_gb=2e-6"], capsys)
    meta = json.load(open(os.path.join(out, "index.json")))
    assert meta["params"]["kind"] == "flat" and len(meta["shards"]) == meta["params"][
        "num_shards"] > 5
    index = Index.load(out)
    for text in TEXTS[5:8]:
        _assert_exact(index.query(text=text), reference, reference[2](text))


def test_ivf_meets_recall_on_text_queries_across_a_modality_gap():
    """At a size where IVF really prunes (nprobe < nlist), the calibrated index keeps recall@10
    ≥ 0.95 for unseen "text" queries that sit apart from the "image" vectors, and the sharded
    index's merged top-k equals exact search."""
    rng = np.random.default_rng(1)
    dim, n = 32, 12_000
    centres = ann.normalise(rng.normal(size=(200, dim)))
    images = ann.normalise(centres[rng.integers(0, 200, n)] + rng.normal(0, 0.25, (n, dim)))
    gap = ann.normalise(rng.normal(size=(1, dim)))[0] * 1.2

    def texts(count):  # near a cluster, shifted by the common modality-gap vector
        return ann.normalise(centres[rng.integers(0, 200, count)] + gap
                             + rng.normal(0, 0.3, (count, dim)))

    params = ann.choose_params(n, dim, exact_below=1000)
    assert params == {"kind": "ivf_flat", "nlist": min(int(4 * np.sqrt(n)), n // 39),
                      "num_shards": 1}
    index = ann.build_shard(images, params["kind"], params["nlist"])
    nprobe, recalls = ann.calibrate_nprobe(index, images, {"image": ann.image_probes(images),
                                                           "text": texts(200)})
    assert nprobe < params["nlist"] and min(recalls.values()) >= ann.RECALL_GOAL
    for queries in (texts(300), ann.image_probes(images, seed=7)):
        found = ann.search_shards([index], [0], queries, 10)[1]
        assert ann.recall_at_k(found, ann.exact_top_k(images, queries, 10)) >= 0.95
    # Sharded by the memory budget: a query fans out, the merge equals one exact search.
    params = ann.choose_params(n, dim, exact_below=10**9, budget_bytes=n * dim * 4 // 3)
    assert params["num_shards"] == 3 and params["kind"] == "flat"
    bounds = ann.shard_bounds(n, 3)
    shards = [ann.build_shard(images[a:b], "flat", 0) for a, b in bounds]
    queries = texts(50)
    scores, rows = ann.search_shards(shards, [a for a, _ in bounds], queries, 10)
    np.testing.assert_array_equal(rows, ann.exact_top_k(images, queries, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ images.T, rows, 1), atol=1e-5)


def test_resume_after_stop_embeds_only_missing_parts(savedmodel, collection, indexed, tmp_path,
                                                     monkeypatch, capsys):
    from align_tf.search import indexer
    root = str(tmp_path / "images")
    shutil.copytree(collection[0], root, symlinks=True)
    out = str(tmp_path / "idx")
    argv = [f"--model={savedmodel}", f"--input=images:{root}", f"--output={out}",
            "--shard_size=8", "--dtype=float16"]
    monkeypatch.setenv(indexer.STOP_ENV, "2")
    with pytest.raises(indexer.Stopped):
        _index(argv)
    parts = json.load(open(os.path.join(out, "plan.json")))["parts"]
    written = sorted(os.listdir(os.path.join(out, "parts")))
    assert written == [p["name"] + ".npz" for p in parts[:2]] or len(written) == 2
    done = {i for p in parts if p["name"] + ".npz" in written for i in p["ids"]}
    monkeypatch.delenv(indexer.STOP_ENV)
    before = indexer.COUNTERS["images"]
    stats = _index(argv, capsys)
    embeddable = set(collection[1]) | {"truncated.jpg", "corrupt.jpg", "copy.png"}
    assert indexer.COUNTERS["images"] - before == len(embeddable - done)
    assert stats == indexed[1]
    rows = open(os.path.join(out, "rows.jsonl")).read()
    assert [json.loads(r)["id"] for r in rows.splitlines()] == [
        json.loads(r)["id"] for r in open(os.path.join(indexed[0], "rows.jsonl"))]
    # float16 parts hold the float32 run's embeddings, rounded.
    full = {}
    for name in os.listdir(os.path.join(indexed[0], "parts")):
        with np.load(os.path.join(indexed[0], "parts", name)) as part:
            full.update(zip(part["ids"], part["embeddings"]))
    with np.load(os.path.join(out, "parts", written[0])) as part:
        assert part["embeddings"].dtype == np.float16
        np.testing.assert_allclose(part["embeddings"].astype(np.float32),
                                   np.stack([full[i] for i in part["ids"]]), atol=2e-3)


def test_errors_are_one_line(indexed, savedmodel, collection, tmp_path, capsys):
    out = indexed[0]
    other = str(tmp_path / "other")
    shutil.copytree(savedmodel, other)
    with open(os.path.join(other, "saved_model.pb"), "ab") as f:
        f.write(b"\0")  # another graph: another model
    cases = [([f"--index={out}", "--text=a", f"--model={other}"], "is not the one this index"),
             ([f"--index={out}"], "give exactly one of --text and --image"),
             ([f"--index={out}", "--text=a", "--image=b"], "give exactly one"),
             ([f"--index={tmp_path}", "--text=a"], "is not a built index"),
             (["--index=nosuchscheme://x", "--text=a"], "cannot read the index"),
             ([f"--index={out}", f"--image={tmp_path / 'none.jpg'}"], "cannot read image")]
    from align_tf.search import command
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            command.main([], command.parse_args(argv))
        assert str(e.value).startswith("align_tf.search: error: ") and message in str(e.value)
        assert "\n" not in str(e.value)
    for argv, message in [(["--input=images:/nonexistent"], "no such directory"),
                          (["--input=images:ram://nonexistent/x"], "no such directory"),
                          (["--input=bogus:x"], "--input must be one of images:, captions:, webdataset:"),
                          (["--input=tfrecord:/nonexistent/*.tfrecord"], "no files match"),
                          ([f"--input=images:{tmp_path}", "--shard_siz=3"], "--shard_size")]:
        with pytest.raises(SystemExit) as e:
            _index([f"--model={savedmodel}", f"--output={tmp_path / 'o'}"] + argv)
        assert str(e.value).startswith("align_tf.index: error: ") and message in str(e.value)


def _ram_copy(local_root: str, remote_root: str) -> None:
    """The files under ``local_root`` (links skipped) written under ``remote_root`` by gfile."""
    import tensorflow as tf
    for directory, _, names in os.walk(local_root):
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                rel = os.path.relpath(path, local_root).replace(os.sep, "/")
                tf.io.gfile.makedirs(f"{remote_root}/{os.path.dirname(rel)}".rstrip("/"))
                with tf.io.gfile.GFile(f"{remote_root}/{rel}", "wb") as f:
                    f.write(open(path, "rb").read())


def test_remote_input_and_output_through_gfile(savedmodel, collection, indexed, reference,
                                               monkeypatch, capsys):
    """``--input=images:ram://...`` and ``--output=ram://...`` (tf.io.gfile's in-process
    filesystem, the code path of gs:// on Dataflow): a run stopped after one part resumes by
    what exists there; ids are the same relative paths; the stats and rows equal the local
    run's; ``Index.load("ram://...")`` (several ANN shards) answers exact search."""
    import uuid

    import tensorflow as tf

    from align_tf.search import Index, indexer
    base = f"ram://search-{uuid.uuid4().hex}"
    _ram_copy(collection[0], f"{base}/images")
    out = f"{base}/idx"
    argv = [f"--model={savedmodel}", f"--input=images:{base}/images", f"--output={out}",
            "--shard_size=16", "--budget_gb=2e-6"]
    monkeypatch.setenv(indexer.STOP_ENV, "1")
    with pytest.raises(indexer.Stopped):
        _index(argv)
    parts = json.loads(tf.io.gfile.GFile(f"{out}/plan.json").read())["parts"]
    written = [n for n in tf.io.gfile.listdir(f"{out}/parts") if n.endswith(".npz")]
    assert len(written) == 1 and len(parts) == -(-(len(collection[1]) + 4) // 16)  # no link
    done = next(p["ids"] for p in parts if p["name"] + ".npz" == written[0])
    monkeypatch.delenv(indexer.STOP_ENV)
    before = indexer.COUNTERS["images"]
    stats = _index(argv, capsys)
    embeddable = set(collection[1]) | {"truncated.jpg", "corrupt.jpg", "copy.png"}
    assert indexer.COUNTERS["images"] - before == len(embeddable - set(done))
    expected = dict(indexed[1], skipped=dict(indexed[1]["skipped"], unreadable=0))
    assert stats == expected == json.loads(tf.io.gfile.GFile(f"{out}/stats.json").read())
    index = Index.load(out)
    assert len(index.shards) == index.meta["params"]["num_shards"] > 1
    assert [r["id"] for r in index.rows] == [
        json.loads(r)["id"] for r in open(os.path.join(indexed[0], "rows.jsonl"))]
    for text in TEXTS[:3]:
        _assert_exact(index.query(text=text), reference, reference[2](text))
    image_id = "b/img 01.png"
    results = index.query(image=f"{base}/images/{image_id}", k=3)  # the query image on ram:// too
    assert results[0]["id"] == image_id and results[0]["source"] == f"{base}/images/{image_id}"
    # The SavedModel on ram:// too (--model=gs://... on Dataflow): recognised as the same model.
    _ram_copy(savedmodel, f"{base}/model")
    moved = Index.load(out, model=f"{base}/model")
    assert moved.model_path == f"{base}/model"
    assert moved.query(text=TEXTS[3]) == index.query(text=TEXTS[3])


def test_caption_parts_read_only_their_own_lines(tmp_path, monkeypatch):
    """A captions part reads its byte span, not the whole file, and finds the lines (numbers,
    stripped text; blank lines, CRLF, non-ASCII) that reading the whole file finds; locally and
    through gfile (``ram://``)."""
    import uuid

    import tensorflow as tf

    from align_tf.search import files, indexer
    content = "un café\n\n  two  \r\nthree\n€ four\n\n\nfive\nsix\n\nseven".encode()
    path = tmp_path / "captions.txt"
    path.write_bytes(content)
    with open(path, encoding="utf-8") as f:  # Python's own text reading as the reference
        truth = [(str(n), line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    remote = f"ram://captions-{uuid.uuid4().hex}/captions.txt"
    with tf.io.gfile.GFile(remote, "wb") as f:
        f.write(content)
    read = []
    real_read = files.read_bytes
    monkeypatch.setattr(files, "read_bytes", lambda p, start=0, stop=None: read.append(
        (start, stop)) or real_read(p, start, stop))
    for number, source in enumerate((str(path), remote)):
        plan = indexer.make_plan(str(tmp_path / f"idx{number}"), f"captions:{source}",
                                 {"path": "m", "hash": "h"}, shard_size=2, append=False)
        assert [len(p["ids"]) for p in plan["parts"]] == [2, 2, 2, 1]
        del read[:]
        got = []
        for part in plan["parts"]:
            lines = indexer.read_part(part)
            assert lines["ids"] == part["ids"]
            got += zip(lines["ids"], lines["captions"])
        assert got == truth
        assert sum(min(stop, len(content)) - start for start, stop in read) <= len(content)


def test_imports_and_help_do_not_load_tensorflow():
    code = ("import sys, align_tf.search, align_tf.search.command, align_tf.index; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'faiss', "
            "'keras', 'apache_beam'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    for module, flag in (("align_tf.search", "--minus"), ("align_tf.index", "--shard_size")):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                             text=True, timeout=120)
        # absl exits 1 after --help
        assert flag in out.stdout and "Traceback" not in out.stderr, out.stderr[-2000:]


@pytest.mark.slow  # two more Beam runs: the sample readers are align_tf.data's, tested there
def test_shards_with_captions_webdataset_then_append_tfrecord(savedmodel, reference, tmp_path,
                                                              capsys):
    """A webdataset tar (captions, a caption-only sample, a damaged image) on ``ram://``, named
    by a glob (tf.io.gfile's, as on gs://), then ``--append`` of our TFRecord shard: captions
    come back with the results, every sample is counted."""
    import tarfile
    import uuid

    import tensorflow as tf
    rng = np.random.default_rng(3)
    images = {f"s{i:03d}": _image(rng, "JPEG") for i in range(6)}
    tar_path = f"ram://wds-{uuid.uuid4().hex}/shard-00000.tar"
    buffer = io.BytesIO()  # ram:// files cannot tell(), which tarfile needs
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        members = [(f"{key}.{ext}", data) for key, image in images.items()
                   for ext, data in (("jpg", image), ("txt", f"caption of {key}".encode()))]
        members += [("nocap.txt", b"only a caption"), ("bad.jpg", images["s000"][:40])]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tf.io.gfile.GFile(tar_path, "wb") as f:
        f.write(buffer.getvalue())
    record_path = str(tmp_path / "pairs.tfrecord")
    extra = _image(rng, "PNG")
    with tf.io.TFRecordWriter(record_path) as writer:
        for image, caption in ((extra, "a png in a record"), (b"junk", "not an image")):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                "caption": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[caption.encode()]))})).SerializeToString())
    out = str(tmp_path / "idx")
    stats = _index([f"--model={savedmodel}", f"--input=webdataset:{tar_path[:-9]}*.tar",
                    f"--output={out}"], capsys)
    assert stats == {"embedded": 6, "skipped": {"not_an_image": 1, "corrupt": 1,
                                                "unreadable": 0}, "duplicates": 0}
    with pytest.raises(SystemExit, match="pass --append"):
        _index([f"--model={savedmodel}", f"--input=tfrecord:{record_path}", f"--output={out}"])
    stats = _index([f"--model={savedmodel}", f"--input=tfrecord:{record_path}",
                    f"--output={out}", "--append"], capsys)
    assert stats["embedded"] == 7 and stats["skipped"]["not_an_image"] == 2
    from align_tf.search import Index
    ids = sorted(images) + ["pairs.tfrecord#0"]
    vectors = np.stack([reference[3](images[k]) for k in sorted(images)] + [reference[3](extra)])
    results = Index.load(out).query(image=images["s004"], k=7)
    _assert_exact(results, (ids, vectors), vectors[4], k=7)
    assert results[0] == {"id": "s004", "score": pytest.approx(1, abs=1e-4),
                          "source": f"{tar_path}#s004", "caption": "caption of s004"}
    assert {r["caption"] for r in results} >= {"a png in a record"}


@pytest.mark.slow  # one more Beam run
def test_caption_index_answers_image_queries_with_exact_search(savedmodel, collection, reference,
                                                               tmp_path, capsys):
    """``captions:FILE``: a text index (blank lines ignored, a repeated caption a duplicate);
    an image query's top-k equals exact search over the captions' own text embeddings."""
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(TEXTS[:6] + ["", TEXTS[0]] + TEXTS[6:]) + "\n", encoding="utf-8")
    out = str(tmp_path / "idx")
    stats = _index([f"--model={savedmodel}", f"--input=captions:{path}", f"--output={out}",
                    "--shard_size=4"], capsys)
    assert stats == {"embedded": len(TEXTS), "skipped": dict.fromkeys(
        ("not_an_image", "corrupt", "unreadable"), 0), "duplicates": 1}
    with pytest.raises(SystemExit, match="is an index of texts"):
        _index([f"--model={savedmodel}", f"--input=images:{collection[0]}", f"--output={out}",
                "--append"])
    lines = {t: n for n, t in reversed(list(enumerate(path.read_text().splitlines(), 1)))}
    ids = sorted(str(lines[t]) for t in TEXTS)
    vectors = np.stack([reference[2](t) for t in sorted(TEXTS, key=lambda t: str(lines[t]))])
    from align_tf.search import Index
    image = collection[1]["b/deep/img 03.bmp"]
    results = Index.load(out).query(image=image, k=5)
    _assert_exact(results, (ids, vectors), reference[3](image), k=5)
    assert all(r["caption"] == TEXTS[[str(lines[t]) for t in TEXTS].index(r["id"])]
               for r in results)
    assert results[0]["source"] == f"{path}#{results[0]['id']}"
