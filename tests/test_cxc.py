"""Tests of the benchmark sources in their public layouts (``coco_karpathy:DIR``,
``flickr30k_karpathy:DIR``, ``cxc:DIR``) and of their evaluators (Karpathy retrieval, CxC
retrieval with extended positives, SITS/STS/SIS correlation), plus the synthetic default's
intra-modal retrieval and similarity set.

Fixtures are written here in the exact public layouts: ``dataset_coco.json`` with COCO ids and
sentids, ``val2014/COCO_val2014_000000391895.jpg``-named JPEGs, the CxC CSVs with their real
headers and id spelling (and a ``*_raw.csv`` that must be ignored). Every metric is recomputed
here independently from the same embeddings: ranks by a stable sort of each query's row, positives
straight from the CSV rows, Spearman's R by ``scipy.stats.spearmanr`` (the bootstrap too, one
resample at a time with the documented seed).
"""

import csv
import json
import os
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import stats

from align_tf.configs import base
from align_tf.data import sampling, synthetic, synthetic_similarity
from align_tf.data.sources import cxc as cxc_source
from align_tf.data.sources import karpathy
from align_tf.evaluation import correlation, cxc, intra_modal, runner
from align_tf.evaluation.embed import Encoder, load_encoder
from test_evaluation import tiny_run  # noqa: F401  the randomly initialised nano run

TEST_IDS = (391895, 522418, 184613, 318219, 554625, 397133, 37777, 252219)
VAL_IDS = (174482, 403013, 483108)
TRAIN = (("train2014", 57870, "train"), ("val2014", 384029, "restval"))
WORDS = ("man riding a horse", "plate of food", "red bus", "cat on a sofa", "kite in the sky",
         "kitchen", "two dogs", "train station", "surfer", "clock tower", "pizza", "giraffe",
         "bicycle")


def _colour(k):  # image k's flat colour: the fake encoder reads k back from it
    return (10 + 20 * (k % 12), 10 + 20 * (k // 12), 128)


def _write_jpeg(path, k):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (24, 20), _colour(k)).save(path, "JPEG", quality=95)


def write_coco(root) -> dict:
    """``dataset_coco.json``, ``val2014/``, ``train2014/`` under ``root``; returns per split the
    image file names and per image its sentences and sentids, in JSON order."""
    images, layout, sentid, k = [], {}, 770337, 0
    entries = [("val2014", c, "test") for c in TEST_IDS] + [("val2014", c, "val") for c in VAL_IDS]
    for folder, cocoid, split in entries + list(TRAIN):
        filename = f"COCO_{folder}_{cocoid:012d}.jpg"
        count = 6 if k == 1 else 5  # some COCO images have 6 or 7 sentences
        sentences = [{"raw": f"A {WORDS[k]} seen from view {j}.", "sentid": sentid + j,
                      "tokens": ["a"], "imgid": k} for j in range(count)]
        images.append({"filepath": folder, "filename": filename, "cocoid": cocoid, "imgid": k,
                       "split": split, "sentids": [s["sentid"] for s in sentences],
                       "sentences": sentences})
        _write_jpeg(os.path.join(root, folder, filename), k)
        layout.setdefault(split, []).append((filename, sentences, k))
        sentid, k = sentid + count + 3, k + 1
    with open(os.path.join(root, "dataset_coco.json"), "w") as f:
        json.dump({"images": images, "dataset": "coco"}, f)
    return layout


def _cap(sentence):
    return f"COCO_val2014:sentid:{sentence['sentid']}"


def write_cxc(root, layout, split="test") -> dict:
    """``root/cxc/{sits,sts,sis}_{split}.csv`` with the real headers and ids; returns the rows."""
    imgs = layout[split]
    n = len(imgs)

    def c(i, j):  # caption j of image i (val has fewer images: indices wrap)
        sentences = imgs[i % n][1]
        return _cap(sentences[j % len(sentences)])

    name = [imgs[i % n][0] for i in range(8)]
    rows = {
        "sits": [(c(0, 0), name[1], 3.0, "c2i_intrasim"),    # threshold: positive
                 (c(0, 1), name[2], 2.9, "c2i_intrasim"),    # just below
                 (c(2, 3), name[0], 4.2, "c2i_original"),
                 (c(3, 0), name[3], 4.8, "c2i_original"),    # an original pair, rated
                 (c(4, 2), name[5], 0.4, "c2i_intrasim"),
                 (c(5, 1), name[6], 1.6, "c2i_intrasim")],
        "sts": [(c(0, 0), c(1, 2), 3.0, "c2c_isim"),     # positive both ways
                (c(0, 2), c(2, 2), 2.9, "c2c_isim"),     # just below
                (c(1, 0), c(1, 1), 4.6, "c2c_cocaption"),
                (c(3, 4), c(4, 0), 3.6, "c2c_isim"),
                (c(1, 5), c(2, 0), 4.0, "c2c_isim"),     # a 6th sentence: skipped
                (c(4, 1), c(5, 3), 1.2, "c2c_isim")],
        "sis": [(name[0], name[1], 2.5, "i2i_csim"),                 # SIS threshold: positive
                (name[2], name[3], 2.4, "i2i_csim"),                 # just below
                (name[4], name[5], 3.8, "i2i_csim"),
                (name[1], name[6], 0.8, "i2i_csim"),
                (name[3], name[0], 1.9, "i2i_csim")],
    }
    os.makedirs(os.path.join(root, "cxc"), exist_ok=True)
    for task, task_rows in rows.items():
        with open(os.path.join(root, "cxc", f"{task}_{split}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(cxc_source.HEADERS[task])
            writer.writerows(task_rows)
        with open(os.path.join(root, "cxc", f"{task}_{split}_raw.csv"), "w") as f:
            f.write("not,a,file,we,read\n1,2\n")  # the per-annotator files: ignored
    return rows


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("coco"))
    layout = write_coco(root)
    rows = {"test": write_cxc(root, layout, "test"), "val": write_cxc(root, layout, "val")}
    return root, layout, rows


class FakeEncoder(Encoder):
    """Image k (its flat colour) → a fixed random unit vector; a caption → the vector of the
    image its words name, plus a caption-specific random part."""

    image_size, resize_size, batch_size, dim = 8, None, 4, 16
    table = np.random.default_rng(0).normal(size=(len(WORDS), dim))

    def embed_image_batch(self, pixels):
        mean = np.asarray(pixels).mean(axis=(1, 2)) * 255
        ks = np.rint((mean[:, 0] - 10) / 20).astype(int) + 12 * np.rint(
            (mean[:, 1] - 10) / 20).astype(int)
        out = self.table[ks]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_text_batch(self, texts):
        out = []
        for text in (t.decode() for t in texts.numpy()):
            k = next(i for i, w in enumerate(WORDS) if f" {w} " in f" {text} ")
            noise = np.random.default_rng(zlib.crc32(text.encode())).normal(size=self.dim)
            vec = self.table[k] + 1.2 * noise
            out.append(vec / np.linalg.norm(vec))
        return np.stack(out)


def _run(dataset, **overrides):
    plans = runner.plans_from_config(base.get_config(), datasets=dataset, **overrides)
    return runner.run_plans(FakeEncoder(), plans)


# ------------------------------------------------------------------------------ references

def reference_embeddings(encoder, root, layout, split="test"):
    """``(image embeddings, caption embeddings)`` of a split's images (decoded here) and first 5
    captions, through ``encoder``'s own embedding calls."""
    images = [tf.io.decode_jpeg(tf.io.read_file(os.path.join(root, "val2014", f))).numpy()
              for f, _, _ in layout[split]]
    captions = [s["raw"] for _, sents, _ in layout[split] for s in sents[:5]]
    if isinstance(encoder, FakeEncoder):  # flat colours: any size reads the same
        image_emb = encoder.embed_image_batch(np.stack([im[:8, :8] for im in images]) / 255.0)
    else:
        image_emb = encoder.embed_images(np.stack(images))
    return image_emb, encoder.embed_texts(captions)


def reference_rank(scores, positives, exclude=None):
    """Rank of the first positive in a stable descending sort of one query's row."""
    order = [c for c in np.argsort(-scores, kind="stable") if c != exclude]
    return next(r for r, c in enumerate(order) if c in positives)


def reference_cxc(image_emb, text_emb, layout, rows, split="test"):
    """CxC R@K and counts from the CSV rows (module docstring of evaluation/cxc.py)."""
    imgs = layout[split]
    index = {f: i for i, (f, _, _) in enumerate(imgs)}
    caption = {s["sentid"]: 5 * i + j for i, (_, sents, _) in enumerate(imgs)
               for j, s in enumerate(sents[:5])}

    def cid(text):
        return caption.get(int(text.split(":")[-1]))

    pos = {d: {} for d in cxc.DIRECTIONS}
    for i in range(len(imgs)):
        for j in range(5):
            pos["i2t"].setdefault(i, set()).add(5 * i + j)
            pos["t2i"].setdefault(5 * i + j, set()).add(i)
            pos["t2t"].setdefault(5 * i + j, set()).update(5 * i + m for m in range(5) if m != j)
    for c, im, score, _ in rows["sits"]:
        if score >= 3:
            pos["i2t"].setdefault(index[im], set()).add(cid(c))
            pos["t2i"].setdefault(cid(c), set()).add(index[im])
    for a, b, score, _ in rows["sts"]:
        if score >= 3 and cid(a) is not None and cid(b) is not None:
            pos["t2t"][cid(a)].add(cid(b))
            pos["t2t"][cid(b)].add(cid(a))
    for a, b, score, _ in rows["sis"]:
        if score >= 2.5:
            pos["i2i"].setdefault(index[a], set()).add(index[b])
            pos["i2i"].setdefault(index[b], set()).add(index[a])
    emb = {"i": np.asarray(image_emb, np.float64), "t": np.asarray(text_emb, np.float64)}
    out = {}
    for d in cxc.DIRECTIONS:
        q, c = emb[d[0]], emb[d[2]]
        n = len(q)
        ranks = [reference_rank(q[k] @ c.T, pos[d][k], k if d[0] == d[2] else None)
                 for k in range(n) if pos[d].get(k)]
        for K in (1, 5, 10):
            out[f"{d}_R@{K}"] = np.mean(np.asarray(ranks) < K)
        out[f"num_{d}_dropped"] = n - len(ranks)
    return out


def reference_correlation(sim, score, samples=1000, seed=0):
    full = stats.spearmanr(sim, score).statistic
    index = np.random.default_rng(seed).integers(0, len(score), (samples, len(score)))
    with warnings.catch_warnings():  # a resample of a few pairs may be all ties: no R (NaN)
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        boot = np.array([stats.spearmanr(sim[i], score[i]).statistic for i in index])
    boot = boot[np.isfinite(boot)]
    return full, boot.mean(), boot.std()


def reference_karpathy(image_emb, text_emb, ks=(1, 5, 10)):
    """i2t / t2i R@K with 5 captions per image, all positives (ALIGN's protocol)."""
    t2i = np.repeat(np.arange(len(image_emb)), 5)
    sim = np.asarray(image_emb, np.float64) @ np.asarray(text_emb, np.float64).T
    i2t = [reference_rank(sim[i], set(np.flatnonzero(t2i == i))) for i in range(len(sim))]
    t2i_ranks = [reference_rank(sim[:, t], {t2i[t]}) for t in range(len(t2i))]
    return {**{f"i2t_R@{k}": np.mean(np.asarray(i2t) < k) for k in ks},
            **{f"t2i_R@{k}": np.mean(np.asarray(t2i_ranks) < k) for k in ks}}


def check_cxc_results(results, image_emb, text_emb, layout, rows):
    """Every CxC metric of ``results`` (results["cxc"]) against the references."""
    assert set(results) == {"retrieval", "correlation"}
    got, want = results["retrieval"], reference_cxc(image_emb, text_emb, layout, rows)
    for d in cxc.DIRECTIONS:
        for k in (1, 5, 10):
            assert got[f"{d}_R@{k}"] == pytest.approx(want[f"{d}_R@{k}"], abs=1e-9), (d, k)
        assert got[f"num_{d}_dropped"] == want[f"num_{d}_dropped"], d
    imgs = layout["test"]
    index = {f: i for i, (f, _, _) in enumerate(imgs)}
    caption = {f"COCO_val2014:sentid:{s['sentid']}": 5 * i + j
               for i, (_, sents, _) in enumerate(imgs) for j, s in enumerate(sents[:5])}
    emb = {"caption": np.asarray(text_emb, np.float64), "image": np.asarray(image_emb, np.float64)}
    kinds = {"sits": ("caption", "image"), "sts": ("caption", "caption"), "sis": ("image", "image")}
    for task, (ka, kb) in kinds.items():
        ids = {"caption": caption, "image": index}
        kept = [r for r in rows[task] if r[0] in ids[ka] and r[1] in ids[kb]]
        sim = np.array([emb[ka][ids[ka][a]] @ emb[kb][ids[kb][b]] for a, b, _, _ in kept])
        full, mean, std = reference_correlation(sim, np.array([r[2] for r in kept]))
        metrics = results["correlation"]
        assert metrics[f"{task}_spearman"] == pytest.approx(full, abs=1e-6), task
        assert metrics[f"{task}_bootstrap_mean"] == pytest.approx(mean, abs=1e-6), task
        assert metrics[f"{task}_bootstrap_std"] == pytest.approx(std, abs=1e-6), task
        assert metrics[f"num_{task}_skipped_pairs"] == len(rows[task]) - len(kept), task


# ----------------------------------------------------------------------------------- sources

def test_karpathy_layouts_read_first_five_sentences_per_split(coco, tmp_path):
    root, layout, _ = coco
    test = karpathy.CocoKarpathySource(root).read("test")
    assert test.filenames == [f for f, _, _ in layout["test"]]
    assert test.filenames[0] == "COCO_val2014_000000391895.jpg"
    assert [len(c) for c in test.captions] == [5] * len(TEST_IDS)  # image 1 has 6: first 5
    assert test.captions[1] == [s["raw"] for s in layout["test"][1][1][:5]]
    train = karpathy.CocoKarpathySource(root + ":train+restval").read("train+restval")
    assert [p.split(os.sep)[-2:] for p in train.paths] == [
        ["train2014", "COCO_train2014_000000057870.jpg"],
        ["val2014", "COCO_val2014_000000384029.jpg"]]
    # Flickr30K: dataset_flickr30k.json + flickr30k-images/, no filepath field.
    flickr = tmp_path / "flickr"
    (flickr / "flickr30k-images").mkdir(parents=True)
    entries = [{"filename": f"{1000092795 + i}.jpg", "imgid": i, "split": split,
                "sentences": [{"raw": f"A {WORDS[i]} seen from view {j}.", "sentid": 5 * i + j}
                              for j in range(5)]}
               for i, split in enumerate(("test", "test", "train"))]
    for i, entry in enumerate(entries):
        _write_jpeg(str(flickr / "flickr30k-images" / entry["filename"]), i)
    (flickr / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    results = _run(f"flickr30k_karpathy:{flickr}")["flickr30k_karpathy"]["retrieval"]
    assert results["num_images"] == 2 and results["num_captions"] == 10


def test_karpathy_retrieval_matches_numpy(coco):
    root, layout, _ = coco
    results = _run(f"coco_karpathy:{root}")
    assert list(results) == ["coco_karpathy"] and list(results["coco_karpathy"]) == ["retrieval"]
    got = results["coco_karpathy"]["retrieval"]
    assert got["num_images"] == len(TEST_IDS) and got["num_captions"] == 5 * len(TEST_IDS)
    want = reference_karpathy(*reference_embeddings(FakeEncoder(), root, layout))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    val = _run(f"coco_karpathy:{root}", split="val")["coco_karpathy"]["retrieval"]
    assert val["num_images"] == len(VAL_IDS)


def test_karpathy_training_stream_visits_every_pair_once_per_epoch(coco):
    root, layout, _ = coco
    source = karpathy.CocoKarpathySource(root)
    split = source.read("train+restval")
    config = base.get_config()
    config.seed = 3

    def stream(first_batch, pipeline_id=0, count=20):
        layout_ = sampling.Layout(global_batch=4, per_pipeline=2, pipeline_id=pipeline_id)
        ds = source.training_stream(config, layout_, first_batch).take(count)
        return [(int(ex["position"]), ex["caption"].numpy().decode(),
                 zlib.crc32(ex["image/encoded"].numpy())) for ex in ds]

    both = sorted(stream(0, 0) + stream(0, 1))
    assert [p for p, _, _ in both] == list(range(40))
    epoch = both[:10]  # 2 images × 5 captions
    assert sorted(c for _, c, _ in epoch) == sorted(c for cs in split.captions for c in cs)
    assert stream(2, 1, 4) == [x for x in stream(0, 1) if x[0] >= 8][:4]  # exact resume


# ------------------------------------------------------------------------------------- CxC

def test_positives_rule_by_hand():
    # 3 images with 2 captions each: captions 0,1 → image 0; 2,3 → 1; 4,5 → 2.
    text_to_image = np.array([0, 0, 1, 1, 2, 2])
    pairs = {"sits": (np.array([0, 2, 5]), np.array([1, 2, 0]), np.array([3.0, 2.99, 4.0])),
             "sts": (np.array([0, 1, 3]), np.array([4, 3, 3]), np.array([3.0, 2.9, 5.0])),
             "sis": (np.array([0, 1, 0]), np.array([2, 0, 0]), np.array([2.5, 2.49, 5.0]))}
    pos = {d: [sorted(p.tolist()) for p in ps]
           for d, ps in cxc.cxc_positives(text_to_image, 3, pairs).items()}
    assert pos["i2t"] == [[0, 1, 5], [0, 2, 3], [4, 5]]  # originals + SITS >= 3 (2.99 is not)
    assert pos["t2i"] == [[0, 1], [0], [1], [1], [2], [0, 2]]
    # t2t: co-captions + STS >= 3 both ways (2.9 is not); a self-pair is never a positive.
    assert pos["t2t"] == [[1, 4], [0], [3], [2], [0, 5], [4]]
    # i2i: SIS >= 2.5 both ways (2.49 is not); image 1 has none: its query is dropped.
    assert pos["i2i"] == [[2], [], [0]]
    emb = np.eye(6)[:, :6]
    image_emb, text_emb = emb[:3], emb
    out = cxc.cxc_recalls(image_emb, text_emb, text_to_image, pairs, ks=(1,))
    assert out["num_i2i_dropped"] == 1 and out["num_i2i_queries"] == 2
    assert out["num_t2t_dropped"] == 0 and out["num_t2t_queries"] == 6
    # Identical embeddings tie; ties go to the lower index and the query itself never counts:
    # every i2i query's row is [0, 0, 0] minus itself, image 0's positive 2 ranks second.
    assert out["i2i_R@1"] == 0.5  # image 2 finds image 0 first; image 0 finds image 1 first
    ranks = intra_modal.positive_ranks(image_emb, image_emb, [[2], [], [0]], exclude_self=True)
    assert ranks.tolist() == [1, -1, 0]


def test_cxc_metrics_match_numpy_and_scipy(coco, capsys):
    root, layout, rows = coco
    results = _run(f"cxc:{root}")
    assert list(results) == ["cxc"]
    check_cxc_results(results["cxc"], *reference_embeddings(FakeEncoder(), root, layout),
                      layout, rows["test"])
    retrieval = results["cxc"]["retrieval"]
    assert {f"{d}_R@{k}" for d in ("i2t", "t2i", "t2t", "i2i") for k in (1, 5, 10)} <= set(
        retrieval)
    assert {f"{t}_{m}" for t in ("sits", "sts", "sis")
            for m in ("spearman", "bootstrap_mean", "bootstrap_std")} <= set(
        results["cxc"]["correlation"])
    printed = capsys.readouterr().out
    assert "ALIGN Table 2" in printed and "ALIGN Table 3" in printed
    assert f"{100 * retrieval['i2t_R@1']:.1f}" in printed
    val = _run(f"cxc:{root}", split="val")["cxc"]
    assert val["retrieval"]["num_images"] == len(VAL_IDS)


def _break(root, what):
    """A copy of the layout with one thing wrong."""
    if what == "csv":
        os.remove(os.path.join(root, "cxc", "sis_test.csv"))
    elif what == "sentid":
        with open(os.path.join(root, "cxc", "sts_test.csv"), "a") as f:
            f.write("COCO_val2014:sentid:999999,COCO_val2014:sentid:770337,3.5,c2c_isim\n")
    elif what == "image":
        os.remove(os.path.join(root, "val2014", "COCO_val2014_000000184613.jpg"))
    elif what == "header":
        path = os.path.join(root, "cxc", "sits_test.csv")
        text = open(path).read().replace("caption,image", "caption_id,image_id", 1)
        open(path, "w").write(text)
    elif what == "json":
        os.remove(os.path.join(root, "dataset_coco.json"))


@pytest.mark.parametrize("what, message", [
    ("csv", r"sis_test\.csv does not exist"),
    ("sentid", r"sts_test\.csv line 8: caption 'COCO_val2014:sentid:999999' \(sentid 999999\) "
               r"is not in the Karpathy split"),
    ("image", r"image .*val2014/COCO_val2014_000000184613\.jpg does not exist"),
    ("header", r"sits_test\.csv: header 'caption_id,image_id,agg_score,sampling_method', "
               r"expected 'caption,image,agg_score,sampling_method'"),
    ("json", r"dataset_coco\.json does not exist"),
])
def test_bad_layouts_are_one_line_errors(coco, tmp_path, what, message):
    import shutil
    root = str(tmp_path / "copy")
    shutil.copytree(coco[0], root)
    _break(root, what)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        runner.plans_from_config(base.get_config(), datasets=f"cxc:{root}")
    assert "\n" not in str(info.value)


def _cli(*args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1")
    return subprocess.run([sys.executable, "-m", "align_tf.evaluate", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory):
    """A randomly initialised nano model saved as a run directory, without the export
    (``tiny_run``'s, in a third of its time)."""
    from align_tf.models.dual_encoder import build_dual_encoder
    from align_tf.run_dir import RunDir
    from test_evaluation import _vocabulary

    run = RunDir(str(tmp_path_factory.mktemp("checkpoint_run"))).makedirs()
    config = base.get_config()
    config.model.text_size_name = "nano"
    config.data.image_size = 32
    run.save_config(config)
    run.save_vocabulary(_vocabulary())
    model = build_dual_encoder(config.model, len(_vocabulary()))
    tf.train.Checkpoint(model=model).save(os.path.join(run.checkpoint_dir, "ckpt"))
    return run.path


def test_evaluate_model_dir_on_cxc_prints_the_tables(checkpoint_run, coco, capsys):
    """``align_tf.evaluate``'s function (the command's, before ``--output``) on a run directory:
    the tables are printed and every metric equals the one computed from the checkpoint's own
    embeddings."""
    from align_tf import evaluate
    root, layout, rows = coco
    report = evaluate.evaluate(model_dir=checkpoint_run, datasets=[f"cxc:{root}"])
    printed = capsys.readouterr().out
    assert "CxC retrieval, R@K ×100 (ALIGN Table 2)" in printed
    assert "Spearman's R ×100 (ALIGN Table 3)" in printed
    assert report["sources"] == {"cxc": f"cxc:{root}"}
    encoder = load_encoder(model_dir=checkpoint_run)
    check_cxc_results(report["results"]["cxc"], *reference_embeddings(encoder, root, layout),
                      layout, rows["test"])


@pytest.mark.slow  # two commands and an export: ~75 s on 2 loaded cores
@pytest.mark.parametrize("kind", ["model_dir", "savedmodel"])
def test_cli_prints_and_writes_the_cxc_tables(tiny_run, coco, tmp_path, kind):  # noqa: F811
    """``align_tf.evaluate --model_dir=RUN`` / ``--savedmodel=RUN/savedmodel --dataset=cxc:DIR``:
    the tables are printed and every metric equals the one computed here from the SavedModel's
    own embeddings."""
    model_dir = tiny_run[0]
    root, layout, rows = coco
    model = model_dir if kind == "model_dir" else os.path.join(model_dir, "savedmodel")
    out = tmp_path / "cxc.json"
    proc = _cli(f"--{kind}={model}", f"--dataset=cxc:{root}", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CxC retrieval, R@K ×100 (ALIGN Table 2)" in proc.stdout
    assert "Spearman's R ×100 (ALIGN Table 3)" in proc.stdout
    report = json.loads(out.read_text())
    assert report["sources"] == {"cxc": f"cxc:{root}"}
    saved = load_encoder(savedmodel=os.path.join(model_dir, "savedmodel"))
    check_cxc_results(report["results"]["cxc"], *reference_embeddings(saved, root, layout),
                      layout, rows["test"])


# ------------------------------------------------------------------------ the synthetic default

class PixelEncoder(Encoder):
    """Colour statistics of an image; a random vector per text plus its colour word's."""

    image_size, resize_size, batch_size = 16, None, 64

    def embed_image_batch(self, pixels):
        p = np.asarray(pixels, np.float64)
        centre = p[:, 4:12, 4:12].mean(axis=(1, 2))
        feats = np.concatenate([centre - p.mean(axis=(1, 2)), p.std(axis=(1, 2))], axis=1)
        feats = np.concatenate([feats, np.ones((len(p), 2))], axis=1)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True)

    def embed_text_batch(self, texts):
        out = []
        for text in (t.decode() for t in texts.numpy()):
            colour = next((w for w in text.split() if w in synthetic.COLOURS), "")
            out.append(np.random.default_rng(zlib.crc32(text.encode())).normal(size=8) +
                       2 * np.random.default_rng(zlib.crc32(colour.encode())).normal(size=8))
        return np.stack([v / np.linalg.norm(v) for v in out])


def test_synthetic_default_reports_intramodal_and_similarity_like_numpy():
    config = base.get_config()
    assert {e.type for e in config.eval.evaluators.values()} >= {"intramodal", "correlation"}
    plans = runner.plans_from_config(config, synthetic_examples_per_class=3,
                                     synthetic_retrieval_rounds=1)
    encoder = PixelEncoder()
    results = runner.run_plans(encoder, plans)["synthetic"]
    assert {"retrieval", "zeroshot", "intramodal", "correlation"} == set(results)
    evaluators = dict(plans[0][1])
    image_emb, labels = evaluators["intramodal"].data.embed_images(encoder)
    seed = config.eval.synthetic_seed
    captions, text_labels = synthetic_similarity.class_captions(8, seed + 3)
    text_emb = encoder.embed_texts(captions)
    got = results["intramodal"]
    for name, emb, lab in (("i2i", image_emb, labels), ("t2t", text_emb, text_labels)):
        sim = np.asarray(emb, np.float64) @ np.asarray(emb, np.float64).T
        ranks = np.array([reference_rank(sim[q], set(np.flatnonzero(lab == lab[q])) - {q}, q)
                          for q in range(len(lab))])
        for k in (1, 5, 10):
            assert got[f"{name}_R@{k}"] == pytest.approx(np.mean(ranks < k), abs=1e-9), name
    assert got["num_i2i_queries"] == 90 and got["num_t2t_queries"] == 240
    # The similarity set: stratified relations, ground truth 5 / 2.5 / 1.5 / 0 plus rater noise.
    pairs = synthetic_similarity.rated_pairs(labels, text_labels, 400, seed + 4)
    sides = {"sits": (text_emb, image_emb), "sts": (text_emb, text_emb),
             "sis": (image_emb, image_emb)}
    for task, (a, b) in sides.items():
        first, second, score = pairs[task]
        truth = synthetic_similarity.truth((text_labels if task != "sis" else labels)[first],
                                           (labels if task != "sts" else text_labels)[second])
        assert sorted(np.unique(truth, return_counts=True)[1]) == [100] * 4
        assert 0.2 < np.abs(score - truth).mean() < 0.6  # σ = 0.5, clipped at 0 and 5
        sim = np.sum(np.asarray(a, np.float64)[first] * np.asarray(b, np.float64)[second], axis=1)
        full, mean, std = reference_correlation(sim, score)
        assert results["correlation"][f"{task}_spearman"] == pytest.approx(full, abs=1e-6)
        assert results["correlation"][f"{task}_bootstrap_mean"] == pytest.approx(mean, abs=1e-6)
        assert results["correlation"][f"{task}_bootstrap_std"] == pytest.approx(std, abs=1e-6)
    # The CLI's --dataset=synthetic (auto) runs the same evaluators as the default config.
    auto = runner.plans_from_config(config, datasets="synthetic")
    assert sorted(t for t, _ in auto[0][1]) == sorted(results)


def test_spearman_ranks_ties_like_scipy():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, (5, 30)).astype(float)  # many ties
    y = rng.normal(size=(5, 30))
    np.testing.assert_allclose(correlation.average_ranks(x), stats.rankdata(x, axis=1))
    np.testing.assert_allclose(correlation.spearman(x, y),
                               [stats.spearmanr(a, b).statistic for a, b in zip(x, y)])
