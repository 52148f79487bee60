"""[interop] The data users already have: img2dataset's webdataset tars and TFRecords, and TFDS
caption sets, through the builder, the vocabulary CLI, the trainer and the evaluator.

Tars are written by the real ``webdataset`` package's ``TarWriter``, laid out as img2dataset
writes them (``{key}.jpg|png|webp`` + ``.txt`` + ``.json`` with the url, a ``{shard}_stats.json``
and a parquet beside each tar); TFRecords with img2dataset's feature layout. Every count below is
derived by hand from the fixtures.
"""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf import tokenizer, trainer
from align_tf.configs import base
from align_tf.corpus import build, filters, vocab
from align_tf.data import sampling, sources, tfrecord, webdataset

wds = pytest.importorskip("webdataset")


def image_bytes(width, height, fmt="JPEG", mode="RGB", seed=0):
    """An image with some structure, in ``fmt``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (max(height // 8, 1), max(width // 8, 1), 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((width, height), Image.BILINEAR)
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _meta(key, url, width, height):
    """img2dataset's per-sample json."""
    return {"url": url, "key": key, "status": "success", "error_message": None,
            "width": width, "height": height, "original_width": width, "original_height": height}


def _write_tar(path, samples):
    with open(path, "wb") as stream:
        writer = wds.TarWriter(stream)
        for sample in samples:
            writer.write(sample)
        writer.close()


# ----------------------------------------------------------------------------- fixtures

# Captions of kept samples use only these words, so the rare-token filter (min count 2) keeps them.
KEPT = {  # key -> (caption, width, height, stored bytes equal the source?)
    "000000000": ("a red car on the street", 320, 240, True),        # jpg
    "000000001": ("a blue dog in the park", 256, 256, True),         # png RGBA
    "000000002": ("a small red dog on the street", 300, 260, False),  # webp: re-encoded as JPEG
    "000000009": ("a small blue car in the park", 240, 230, True),   # png grayscale
    "000010000": ("the red dog in the park", 260, 250, True),
    "000010001": ("the blue car on the street", 250, 260, True),
    "000020000": ("a red car in the park", 230, 240, True),          # before the truncation
    "000020001": ("a blue dog on the street", 240, 240, True),
}
EXPECTED_DROPPED = dict.fromkeys(filters.DROP_REASONS, 0) | {
    "no_caption": 2,         # 000000003 (no .txt), 000000004 (empty .txt: img2dataset's None)
    "no_image": 1,           # 000000005 (.txt and .json only)
    "corrupt_member": 2,     # 000010003 (caption not UTF-8), 000020002 (cut inside its jpg)
    "undecodable_image": 1,  # 000000006
    "too_small": 1,          # 000000007
    "too_few_words": 1,      # 000000008
}


@pytest.fixture(scope="module")
def tars(tmp_path_factory):
    """Three img2dataset-style shards: 00000.tar, 00001.tar and a truncated 00002.tar."""
    root = tmp_path_factory.mktemp("img2dataset")
    sources_ = {}

    def sample(key, data, ext, caption=None, size=None, url=None):
        out = {"__key__": key, ext: data}
        if caption is not None:
            out["txt"] = caption
        w, h = size or (0, 0)
        out["json"] = _meta(key, url or f"https://example.com/{key}.{ext}", w, h)
        sources_[key] = data
        return out

    def kept(key, fmt, ext, mode="RGB", seed=0):
        caption, w, h, _ = KEPT[key]
        return sample(key, image_bytes(w, h, fmt, mode, seed), ext, caption, (w, h))

    shard0 = [
        kept("000000000", "JPEG", "jpg", seed=1),
        kept("000000001", "PNG", "png", "RGBA", seed=2),
        kept("000000002", "WEBP", "webp", seed=3),
        sample("000000003", image_bytes(240, 240, seed=4), "jpg"),  # no caption member
        sample("000000004", image_bytes(240, 240, seed=5), "jpg", ""),
        {"__key__": "000000005", "txt": "a red dog in the park", "json": _meta("5", "u5", 0, 0)},
        sample("000000006", b"\xff\xd8 this is not a jpeg", "jpg", "a blue car in the park"),
        sample("000000007", image_bytes(150, 150, seed=7), "jpg", "a red car in the park"),
        sample("000000008", image_bytes(240, 240, seed=8), "jpg", "car"),
        kept("000000009", "PNG", "png", "L", seed=9),
    ]
    shard1 = [
        kept("000010000", "JPEG", "jpg", seed=10),
        kept("000010001", "JPEG", "jpg", seed=11),
        sample("000010003", image_bytes(240, 240, seed=13), "jpg", b"\xff\xfe not utf-8"),
    ]
    shard2 = [
        kept("000020000", "JPEG", "jpg", seed=20),
        kept("000020001", "JPEG", "jpg", seed=21),
        sample("000020002", image_bytes(300, 300, seed=22), "jpg", "a red car on the street"),
    ]
    for name, samples in (("00000", shard0), ("00001", shard1), ("00002", shard2)):
        _write_tar(root / f"{name}.tar", samples)
        # img2dataset's side files: must not be read as shards.
        (root / f"{name}_stats.json").write_text(json.dumps({"count": len(samples)}))
        (root / f"{name}.parquet").write_bytes(b"PAR1")
    # Truncate 00002.tar inside the last sample's jpg (as an interrupted download would).
    data = (root / "00002.tar").read_bytes()
    with open(root / "00002.tar", "rb") as f:
        import tarfile
        members = tarfile.open(fileobj=f).getmembers()
    cut = next(m for m in members if m.name == "000020002.jpg")
    (root / "00002.tar").write_bytes(data[:cut.offset_data + 100])
    return {"root": root, "sources": sources_}


@pytest.fixture(scope="module")
def built_tars(tars, tmp_path_factory):
    out = tmp_path_factory.mktemp("built_tars")
    stats = build.build(str(tars["root"] / "{00000..00002}.tar"), str(out),
                        build.BuildConfig(num_shards=2, min_ngram_count=2, format="webdataset"))
    return out, stats


def read_shards(directory):
    out = {}
    for path in sorted(directory.glob("pairs-*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(path)):
            ex = tf.train.Example.FromString(record.numpy()).features.feature
            out[ex["id"].bytes_list.value[0].decode()] = (
                ex["caption"].bytes_list.value[0].decode(), ex["image/encoded"].bytes_list.value[0],
                ex["image/width"].int64_list.value[0], ex["image/height"].int64_list.value[0])
    return out


# ----------------------------------------------------------------------------- webdataset


def test_expand_brace_ranges_lists_and_globs(tmp_path):
    assert webdataset.expand_braces("s/{008..011}.tar") == [
        "s/008.tar", "s/009.tar", "s/010.tar", "s/011.tar"]
    assert webdataset.expand_braces("{a,b}/{1..2}") == ["a/1", "a/2", "b/1", "b/2"]
    for name in ("00000.tar", "00001.tar", "00002.tar", "00000_stats.json"):
        (tmp_path / name).write_bytes(b"")
    tars = [str(tmp_path / f"0000{i}.tar") for i in range(3)]
    assert webdataset.expand(str(tmp_path / "{00000..00002}.tar")) == tars
    assert webdataset.expand(str(tmp_path / "*.tar")) == tars
    assert webdataset.expand(f"{tmp_path}/{{00000..00001}}.tar,{tmp_path}/0000[2].tar") == tars
    with pytest.raises(FileNotFoundError, match="00003.tar"):  # a gap in a range is a mistake
        webdataset.expand(str(tmp_path / "{00000..00003}.tar"))
    with pytest.raises(FileNotFoundError, match="no files match"):
        webdataset.expand(str(tmp_path / "*.zip"))


def test_read_samples_groups_members_and_reports_damage(tars):
    root = tars["root"]
    samples = list(webdataset.read_samples(str(root / "00000.tar")))
    assert [s.key for s in samples] == [f"00000000{i}" for i in range(10)]
    assert samples[0].caption == KEPT["000000000"][0] and samples[0].image == \
        tars["sources"]["000000000"]
    assert samples[0].url == "https://example.com/000000000.jpg"
    assert samples[2].image == tars["sources"]["000000002"]  # the webp member
    assert samples[3].caption is None and samples[4].caption == ""
    assert samples[5].image is None and samples[5].caption == "a red dog in the park"
    truncated = list(webdataset.read_samples(str(root / "00002.tar")))
    assert [s and (s.key, s.error) for s in truncated] == [
        ("000020000", None), ("000020001", None), ("000020002", "corrupt_member"), None]
    # Cut exactly at a member boundary (no end-of-archive blocks): the samples before the cut are
    # read, the shard is reported damaged.
    import tarfile
    with open(root / "00001.tar", "rb") as f:
        members = tarfile.open(fileobj=f).getmembers()
    assert [m.name for m in members[:4]] == [
        "000010000.jpg", "000010000.json", "000010000.txt", "000010001.jpg"]
    cut = root.parent / "cut.tar"
    cut.write_bytes((root / "00001.tar").read_bytes()[:members[3].offset])
    read = list(webdataset.read_samples(str(cut)))
    assert [s and s.key for s in read] == ["000010000", None]
    assert read[0].caption == KEPT["000010000"][0]
    # A corrupt header (bad checksum) mid-shard: what precedes it is read, the shard is damaged.
    data = bytearray((root / "00001.tar").read_bytes())
    data[members[3].offset + 100:members[3].offset + 108] = b"garbage!"
    cut.write_bytes(bytes(data))
    assert [s and s.key for s in webdataset.read_samples(str(cut))] == ["000010000", None]


# ----------------------------------------------------------------------------- builder


def test_build_webdataset_exact_stats_and_shards(built_tars, tars):
    out, stats = built_tars
    assert json.loads((out / "stats.json").read_text()) == stats
    assert stats["dropped"] == EXPECTED_DROPPED
    assert stats["rows"] == 10 + 3 + 3 == stats["kept"] + sum(stats["dropped"].values())
    assert stats["kept"] == len(KEPT) == sum(stats["shard_examples"])
    assert stats["damaged_files"] == [str(tars["root"] / "00002.tar")]
    got = read_shards(out)
    assert sorted(got) == sorted(KEPT)  # the sample key is the id
    for key, (caption, width, height, same) in KEPT.items():
        text, encoded, w, h = got[key]
        assert (text, w, h) == (caption, width, height)
        assert tf.io.decode_image(encoded, channels=3).shape == (height, width, 3)
        if same:
            assert encoded == tars["sources"][key]
        else:  # WebP: re-encoded as JPEG, the same picture
            source = tars["sources"][key]
            assert source[:4] == b"RIFF" and source[8:12] == b"WEBP" and encoded[:2] == b"\xff\xd8"
            original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"), np.float32)
            assert np.abs(tf.io.decode_jpeg(encoded).numpy() - original).mean() < 4.0


def test_build_cli_glob_input_byte_identical_across_processes(tars, built_tars, tmp_path):
    """The CLI with a glob (``.tar``: webdataset without --format), in another process and on
    Beam's multi-threading runner, reproduces the API's in-memory brace-range build byte for byte
    (shards used to differ across processes: a plain ``SerializeToString`` orders the Example's
    feature map by a per-process hash seed). Beam's multi-processing runner is the same case
    (one process per worker) at +35 s, so it is not run here."""
    from tests.test_data import _cli
    out, stats = built_tars
    proc = _cli("build", f"--input={tars['root']}/*.tar", f"--output_dir={tmp_path / 'cli'}",
                "--num_shards=2", "--min_ngram_count=2", "--direct_num_workers=2",
                "--direct_running_mode=multi_threading")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "cli" / "stats.json").read_text())["dropped"] == EXPECTED_DROPPED
    for path in sorted(out.glob("pairs-*.tfrecord")):
        assert (tmp_path / "cli" / path.name).read_bytes() == path.read_bytes()


def _img2dataset_record(key, jpg, txt, url, width=0, height=0):
    """A record as img2dataset's TFRecordSampleWriter writes it (metadata as features)."""
    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
    feature = {"key": b(key.encode()), "jpg": b(jpg), "url": b(url.encode()), "width": i(width),
               "height": i(height), "status": b(b"success"), "error_message": b(b"")}
    if txt is not None:
        feature["txt"] = b(txt.encode() if isinstance(txt, str) else txt)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def img2dataset_records(tmp_path_factory):
    """Two img2dataset TFRecord shards; the second is cut short inside its last record."""
    root = tmp_path_factory.mktemp("img2dataset_tfrecord")
    pairs = {f"{i:09d}": (KEPT[k][0], image_bytes(KEPT[k][1], KEPT[k][2], seed=i))
             for i, k in enumerate(sorted(KEPT))}
    keys = sorted(pairs)
    with tf.io.TFRecordWriter(str(root / "00000.tfrecord")) as w:
        for key in keys[:5]:
            w.write(_img2dataset_record(key, pairs[key][1], pairs[key][0], f"https://x/{key}"))
        w.write(_img2dataset_record("no_caption", image_bytes(240, 240), None, "https://x/n"))
        w.write(b"not an Example")
    with tf.io.TFRecordWriter(str(root / "00001.tfrecord")) as w:
        for key in keys[5:]:
            w.write(_img2dataset_record(key, pairs[key][1], pairs[key][0], f"https://x/{key}"))
        w.write(_img2dataset_record("lost", image_bytes(240, 240), "a red car", "https://x/l"))
    data = (root / "00001.tfrecord").read_bytes()
    (root / "00001.tfrecord").write_bytes(data[:-50])
    return root, pairs


def test_build_img2dataset_tfrecord_exact_stats(img2dataset_records, tmp_path):
    root, pairs = img2dataset_records
    stats = build.build(str(root / "{00000..00001}.tfrecord"), str(tmp_path),
                        build.BuildConfig(num_shards=1, min_ngram_count=2,
                                          format="img2dataset_tfrecord"))
    assert stats["dropped"] == dict.fromkeys(filters.DROP_REASONS, 0) | {
        "no_caption": 1, "corrupt_member": 1}
    assert stats["kept"] == len(pairs) and stats["rows"] == len(pairs) + 2
    assert stats["damaged_files"] == [str(root / "00001.tfrecord")]
    got = read_shards(tmp_path)
    assert {k: (v[0], v[1]) for k, v in got.items()} == {k: (c, i) for k, (c, i) in pairs.items()}


# ----------------------------------------------------------------------------- vocab


def test_vocab_reads_webdataset_and_img2dataset_tfrecord(tars, img2dataset_records):
    texts = [t.decode() for t in vocab.read_texts(
        str(tars["root"] / "{00000..00002}.tar"), progress_every=0).as_numpy_iterator()]
    # Every non-empty UTF-8 caption in shard order, filters not applied (the builder's job).
    expected = [KEPT[k][0] for k in ("000000000", "000000001", "000000002")] + [
        "a red dog in the park", "a blue car in the park", "a red car in the park", "car"] + [
        KEPT[k][0] for k in ("000000009", "000010000", "000010001", "000020000", "000020001")]
    assert texts == expected
    root, pairs = img2dataset_records
    texts = [t.decode() for t in vocab.read_texts(
        str(root / "*.tfrecord"), fmt="img2dataset_tfrecord", progress_every=0).as_numpy_iterator()]
    assert sorted(texts) == sorted(c for c, _ in pairs.values())
    flag_values = vocab.parse_args([f"--input={root}/*.tfrecord", "--output=v.txt",
                                    "--format=img2dataset_tfrecord"])
    assert flag_values.format == "img2dataset_tfrecord"


# ----------------------------------------------------------------------------- training


def _tiny_config(tmp_path, captions, **data):
    """A tiny model on ``data`` (the test_data training test's sizes)."""
    vocab_path = tokenizer.save_vocabulary(tokenizer.build_vocabulary(captions, vocab_size=60),
                                           str(tmp_path / "vocab.txt"))
    config = base.get_config()
    config.model.text_size_name = "nano"
    config.data.vocab_path = vocab_path
    config.data.image_size, config.data.max_tokens, config.data.shuffle_buffer = 32, 8, 16
    config.train.batch_size, config.train.log_every = 4, 5
    config.train.steps_per_loop, config.eval.enabled, config.export.enabled = 5, False, False
    for name, value in data.items():
        config.data[name] = value
    return config


def _trainer_batches(config, tmp_path, steps):
    """``steps`` per-replica batches from ``trainer.train_dataset_fn``: the trainer's data path
    (vocabulary, ``sources.training_stream``, decoding, crops, tokens) without a model."""
    from align_tf.run_dir import RunDir
    run = RunDir(str(tmp_path / "run")).makedirs()
    pairs, preprocessor = trainer.prepare_inputs(config, run, chief=True, resuming=False)
    stats = tfrecord.ReadStats()
    strategy = tf.distribute.get_strategy()
    dataset = strategy.distribute_datasets_from_function(
        trainer.train_dataset_fn(config, preprocessor, pairs, stats))
    batches = [b for b, _ in zip(dataset, range(steps))]
    return batches, preprocessor, stats


def _stream(config, batches, first_batch=0, global_batch=4, per_pipeline=4, pipeline_id=0):
    layout = sampling.Layout(global_batch, per_pipeline, pipeline_id)
    ds = sources.training_stream(config, layout, first_batch, stats=tfrecord.ReadStats())
    return list(ds.take(batches * per_pipeline).as_numpy_iterator())


def test_trainer_reads_img2dataset_tfrecord_shards(img2dataset_records, tmp_path):
    """``data.name=img2dataset_tfrecord``: img2dataset's shards (``jpg``/``txt``) as they are;
    one epoch holds every readable record once, positions follow the stream layout, a resumed
    stream equals the uninterrupted one's tail, and the trainer runs on it."""
    root, pairs = img2dataset_records
    captions = [c for c, _ in pairs.values()]
    config = _tiny_config(tmp_path, captions, name="img2dataset_tfrecord",
                          train_pattern=str(root / "*.tfrecord"))
    trainer.validate_config(config)
    # 8 pairs + the caption-less record (no txt: skipped as corrupt) + "not an Example" (skipped);
    # the cut record is lost with the file's framing.
    # Positions count records as written (10 per epoch: 7 + 3 intact), so skipped ones leave gaps.
    stream = _stream(config, 4)
    positions = [int(e["position"]) for e in stream]
    assert positions == sorted(positions) and positions[-1] < 20
    first_epoch = sorted(e["caption"].decode() for e in stream if e["position"] < 10)
    assert first_epoch == sorted(captions)
    by_caption = {c: image for c, image in pairs.values()}
    assert all(e["image/encoded"] == by_caption[e["caption"].decode()] for e in stream)
    # Resuming at batch 2 starts at position 8: the uninterrupted stream from there on.
    resumed = _stream(config, 2, first_batch=2)
    assert resumed == [e for e in stream if e["position"] >= 8][:8]
    batches, preprocessor, stats = _trainer_batches(config, tmp_path, 3)
    assert [b["image"].shape for b in batches] == [(4, 32, 32, 3)] * 3
    assert [b["text"]["token_ids"].shape for b in batches] == [(4, 8)] * 3
    # No txt, not an Example: both met in the first epoch (read-ahead may meet them again).
    assert stats.as_dict()["corrupt_record"] >= 2 and stats.as_dict()["corrupt_image"] == 0


def _fake_coco(self, split, decoders=None, **kwargs):
    """``coco_captions`` as TFDS gives it with ``SkipDecoding`` on the image (JPEG bytes): five
    images with 5, 6, 7, 5 and 0 captions."""
    import tensorflow_datasets as tfds
    assert isinstance(decoders["image"], tfds.decode.SkipDecoding)
    counts = [5, 6, 7, 5, 0]
    images = [image_bytes(40 + i, 36, seed=i) for i in range(len(counts))]

    def gen():
        for i, n in enumerate(counts):
            yield {"image": images[i], "captions": {"text": [f"image {i} caption {j}"
                                                             for j in range(n)]}}

    return tf.data.Dataset.from_generator(gen, output_signature={
        "image": tf.TensorSpec((), tf.string), "captions": {"text": tf.TensorSpec((None,), tf.string)}})


def test_tfds_caption_set_stream_and_training(tmp_path):
    """``data.name=tfds:coco_captions`` (``tfds.testing.mock_data``): each epoch has every image
    once with one of its captions, drawn per (seed, epoch); reruns and resumed streams (at any
    batch, on any number of input pipelines) are exact; the trainer runs on it."""
    import tensorflow_datasets as tfds
    captions = [f"image {i} caption {j}" for i in range(4) for j in range(7)]
    config = _tiny_config(tmp_path, captions, name="tfds:coco_captions",
                          tfds_split="train+restval", shuffle_buffer=3)
    with tfds.testing.mock_data(as_dataset_fn=_fake_coco):
        trainer.validate_config(config)
        stream = _stream(config, 10)  # 40 positions: 8 epochs of 5 images
        epochs = [stream[i:i + 5] for i in range(0, 40, 5)]
        for epoch in epochs:
            images = sorted(int(e["caption"].decode().split()[1]) for e in epoch if e["caption"])
            assert images == [0, 1, 2, 3] and sum(e["caption"] == b"" for e in epoch) == 1
        picks = {(e["caption"].decode().split()[1], e["caption"]) for e in stream if e["caption"]}
        assert len(picks) > 12  # captions differ across epochs (4 images, 23 captions)
        assert _stream(config, 10) == stream  # deterministic per seed
        config.seed = 1
        assert [e["caption"] for e in _stream(config, 10)] != [e["caption"] for e in stream]
        config.seed = 0
        for first in (3, 7):  # inside a window / an epoch
            assert _stream(config, 10 - first, first_batch=first) == stream[4 * first:]
        halves = [_stream(config, 10, global_batch=4, per_pipeline=2, pipeline_id=p)
                  for p in (0, 1)]
        assert [e["position"] for e in halves[1][:4]] == [2, 3, 6, 7]
        merged = [e for b in range(10) for p in (0, 1) for e in halves[p][2 * b:2 * b + 2]]
        assert merged == stream
        batches, preprocessor, _ = _trainer_batches(config, tmp_path, 2)
    assert [b["image"].shape for b in batches] == [(4, 32, 32, 3)] * 2
    expected = preprocessor(tf.constant([e["caption"] for e in stream[:8]]))["token_ids"]
    assert np.array_equal(tf.concat([b["text"]["token_ids"] for b in batches], 0), expected)


def test_twenty_steps_on_a_built_webdataset_corpus(built_tars, tars, tmp_path):
    """From img2dataset tars to a trained model: build (fixture), vocabulary, 20 steps."""
    from align_tf.evaluation import runner
    out, stats = built_tars
    vocab.main([vocab.PROG], vocab.parse_args([f"--input={out}/pairs-*.tfrecord",
                                               f"--output={tmp_path}/vocab.txt",
                                               "--vocab_size=80"]))
    config = _tiny_config(tmp_path, ["unused"], name="tfrecord",
                          train_pattern=str(out / "pairs-*.tfrecord"))
    config.data.vocab_path = str(tmp_path / "vocab.txt")
    config.train.steps, config.train.checkpoint_every = 20, 10
    # ... and evaluate: retrieval on the built shards (the evaluate CLI's --dataset spelling).
    spec = f"tfrecord:{out}/pairs-*.tfrecord"
    config.eval.enabled, config.eval.evaluators = True, runner.evaluators_for(spec, "retrieval")
    result = trainer.train(config, str(tmp_path / "run"), verbose=0)
    assert int(result.objective.optimizer.iterations.numpy()) == 20
    assert np.isfinite(result.metrics["loss"]) and result.metrics["skipped_records"] == 0
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.index")) == [
        "ckpt-10.index", "ckpt-20.index"]
    trainer.evaluate(result, config, str(tmp_path / "run"))  # what the train CLI runs last
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["sources"] == {"tfrecord": spec}  # results are keyed by the source's name
    retrieval = report["results"]["tfrecord"]["retrieval"]
    assert retrieval["num_images"] == len(KEPT) and 0 <= retrieval["i2t_R@1"] <= 1


