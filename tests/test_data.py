"""Corpus builder (Beam, ALIGN filters), vocabulary CLI, tf.data pipeline and TFDS captions.

Every image is generated here with PIL — JPEG/PNG/GIF, RGB/grayscale/RGBA/palette/CMYK, sizes on
both sides of each threshold, and broken files — and every count below is derived by hand from
the corpus definition in ``corpus``.

The three command lines (``python -m align_tf.data.build|vocab|tfds_captions``) run as
subprocesses for what only a real process shows (absl's entry point, --help, exit status, stderr);
their flag parsing is also checked in-process (``parse_args``), which is much cheaper.
"""

import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf import tokenizer
from align_tf.corpus import build, filters, inputs, output, vocab
from align_tf.data import pipeline, sampling, tfds_captions, tfrecord

# ----------------------------------------------------------------------------- helpers


def image_bytes(width, height, mode="RGB", fmt="JPEG", seed=0):
    """An image with some structure (so JPEGs are not trivially small)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (max(height // 8, 1), max(width // 8, 1), 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((width, height), Image.BILINEAR)
    if mode == "P":
        image = image.quantize(16)
    elif mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _cli(module, *args, timeout=300):
    """``python -m align_tf.data.<module> ARGS`` in a subprocess (CPU only, quiet TensorFlow)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    return subprocess.run([sys.executable, "-m", f"align_tf.data.{module}", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def assert_one_line_error(proc, module, message):
    """A user mistake: non-zero exit, no traceback, and stderr ends with one ``error:`` line."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"align_tf.data.{module}: error: ") and message in last, proc.stderr


def cli_error(call, args):
    """The one-line message ``call(args)`` (a ``parse_args``, or main after it) exits with."""
    with pytest.raises(SystemExit) as exit_info:
        call(args)
    return str(exit_info.value.code)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    """A local HTTP server (the builder's URL path; no network)."""
    root = tmp_path_factory.mktemp("http")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# Expected outcome of every corpus row, by construction.
EXPECTED_DROPPED = dict.fromkeys(filters.DROP_REASONS, 0) | {
    "bad_row": 4, "too_few_words": 2, "too_many_words": 1, "shared_text": 12, "rare_token": 2,
    "missing_image": 2, "undecodable_image": 4, "too_small": 3, "aspect_ratio": 2,
}
EXPECTED_KEPT = 18
SHARED_OK_TEXT = "the red car in the park"   # exactly 10 distinct images: kept (limit is > 10)
SHARED_TEXT = "a photo of the car"           # 11 distinct images in 12 rows: dropped


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, http_root):
    """A JSONL table of 50 rows plus images; returns paths and the expected kept pairs.

    Words other than "zyzzyva"/"quokka" occur in at least two rows, so with
    ``min_ngram_count=2`` only those two texts are rare.
    """
    root = tmp_path_factory.mktemp("corpus")
    images = root / "images"
    images.mkdir()
    web_root, base_url = http_root
    rows, kept = [], {}  # kept: caption -> [(id or None, width, height, how stored, file)]

    def add(name, data, text, keep=None, row_id=None, size=None, where=images):
        (where / name).write_bytes(data)
        ref = f"images/{name}" if where == images else f"{base_url}/{name}"
        row = {"image": ref, "text": text}
        if row_id:
            row["id"] = row_id
        rows.append(row)
        if keep:
            kept.setdefault(" ".join(text.split()), []).append(
                (row_id, *size, keep, where / name))

    same = "same"  # stored bytes equal the source file
    # 8 distinct kept pairs: every mode/format the pipeline must handle, and the size boundary.
    add("rgb.jpg", image_bytes(320, 240, seed=1), "the red car on the street", same, "rgb",
        (320, 240))
    add("gray.jpg", image_bytes(300, 210, "L", seed=2), "a small dog on the street", same, "gray",
        (300, 210))
    add("rgba.png", image_bytes(256, 256, "RGBA", "PNG", 3), "a big blue car in the park", same,
        "rgba", (256, 256))
    add("pal.png", image_bytes(300, 300, "P", "PNG", 4), "a photo of a small car", same, "pal",
        (300, 300))
    add("cmyk.jpg", image_bytes(250, 250, "CMYK", seed=5), "the big dog in the park",
        "reencoded", "cmyk", (250, 250))
    add("anim.gif", image_bytes(260, 220, "P", "GIF", 6), "a blue dog in the  street",
        "reencoded", None, (260, 220))
    add("edge.jpg", image_bytes(201, 602, seed=7), "a photo of the small red dog", same, "edge",
        (201, 602))
    add("web.jpg", image_bytes(240, 240, seed=8), "a red dog in the park", same, "web",
        (240, 240), where=web_root)
    for i in range(10):
        add(f"ok{i}.jpg", image_bytes(210, 210, seed=100 + i), SHARED_OK_TEXT, same, f"ok{i}",
            (210, 210))
    # bad_row: 4
    rows += ["not json", [1, 2], {"image": "images/rgb.jpg"}, {"image": " ", "text": "red car a"}]
    # too_few_words: 2; too_many_words: 1 (21 words)
    add("few1.jpg", image_bytes(240, 240), "red car")
    add("few2.jpg", image_bytes(240, 240), "car!!")
    add("many.jpg", image_bytes(240, 240), " ".join(["the red car"] * 7))
    # shared_text: 11 distinct images (case/space variants of one text), 12 rows
    for i in range(11):
        add(f"sh{i}.jpg", image_bytes(240, 240, seed=200 + i),
            SHARED_TEXT if i % 2 else "A photo  of the Car")
    rows.append({"image": "images/sh0.jpg", "text": SHARED_TEXT})
    # rare_token: 2
    add("rare1.jpg", image_bytes(240, 240), "a zyzzyva on the street")
    add("rare2.jpg", image_bytes(240, 240), "the quokka in the park")
    # missing_image: 2 (a local file and an HTTP 404)
    rows.append({"image": "images/missing.jpg", "text": "a blue car on the street"})
    rows.append({"image": f"{base_url}/missing.jpg", "text": "a small blue car on the street"})
    # undecodable_image: 4
    add("junk.jpg", b"this is not an image", "a big red car on the street")
    add("empty.jpg", b"", "a big red dog on the street")
    add("trunc.jpg", image_bytes(320, 240)[:600], "a small red car in the park")
    add("trunc.png", image_bytes(320, 240, fmt="PNG")[:300], "a small red dog in the park")
    # too_small: 3 (shorter side exactly 200; 150; truncated but its header says 100 px)
    add("small200.jpg", image_bytes(200, 300), "a big blue dog on the street")
    add("small150.png", image_bytes(150, 150, fmt="PNG"), "the small blue dog in the park")
    add("small_trunc.jpg", image_bytes(100, 100)[:1200], "the big blue car on the street")
    # aspect_ratio: 2 (exactly 3; 4)
    add("wide.jpg", image_bytes(900, 300), "a photo of the big blue car")
    add("tall.jpg", image_bytes(250, 1000), "a photo of the big red car")

    table = root / "pairs.jsonl"
    with open(table, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return {"root": root, "table": table, "rows": rows, "kept": kept, "base_url": base_url}


CONFIG = dict(num_shards=3, min_ngram_count=2)


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    stats = build.build(str(corpus["table"]), str(out), build.BuildConfig(**CONFIG))
    return out, stats


def read_shard(path):
    out = []
    for record in tf.data.TFRecordDataset(str(path)):
        ex = tf.train.Example.FromString(record.numpy()).features.feature
        out.append({"id": ex["id"].bytes_list.value[0].decode(),
                    "caption": ex["caption"].bytes_list.value[0].decode(),
                    "image": ex["image/encoded"].bytes_list.value[0],
                    "width": ex["image/width"].int64_list.value[0],
                    "height": ex["image/height"].int64_list.value[0]})
    return out


# ----------------------------------------------------------------------------- filters


def test_filter_definitions():
    assert filters.words("A photo: don't  1920x1080, img_01.JPG!") == \
        ["a", "photo", "don't", "1920x1080", "img_01", "jpg"]
    assert filters.text_key("  A photo\tof  the Car ") == "a photo of the car"
    c = filters.FilterConfig()
    assert filters.image_reason(201, 602, c) is None                 # 2.995 < 3, 201 > 200
    assert filters.image_reason(200, 300, c) == "too_small"          # shorter side must be > 200
    assert filters.image_reason(900, 300, c) == "aspect_ratio"       # ratio must be < 3
    assert filters.image_reason(150, 1000, c) == "too_small"         # first reason wins
    assert filters.image_reason(10, 100, filters.FilterConfig(0, 0)) is None  # both disabled
    assert filters.word_count_reason("a b", c) == "too_few_words"
    assert filters.word_count_reason(" ".join("w" * 21), c) == "too_many_words"
    assert filters.word_count_reason(" ".join("w" * 20), c) is None
    assert filters.checked_ngrams("red car red", filters.FilterConfig(check_bigrams=True)) == \
        {"red", "car", "red car", "car red"}


def test_count_threshold_keeps_top_n_with_ties():
    histogram = [(10, 1), (5, 3), (2, 4), (1, 100)]  # (count, number of n-grams with it)
    assert filters.count_threshold(histogram, 1) == 10
    assert filters.count_threshold(histogram, 2) == 5   # ties at the boundary are all kept
    assert filters.count_threshold(histogram, 4) == 5
    assert filters.count_threshold(histogram, 5) == 2
    assert filters.count_threshold(histogram, 10**8) == 1  # fewer n-grams than the limit
    assert filters.count_threshold(histogram, 0, min_count=3) == 3
    assert filters.count_threshold(histogram, 1, min_count=3) == 10


# ----------------------------------------------------------------------------- builder


def test_stats_json_counts_every_drop_reason_exactly(built, corpus):
    out, stats = built
    assert json.loads((out / "stats.json").read_text()) == stats
    assert stats["rows"] == len(corpus["rows"]) == 50
    assert stats["dropped"] == EXPECTED_DROPPED
    assert list(stats["dropped"]) == list(filters.DROP_REASONS)
    assert stats["kept"] == EXPECTED_KEPT == stats["rows"] - sum(stats["dropped"].values())
    assert stats["ngram_count_threshold"] == 2
    assert stats["most_shared_texts"] == [[SHARED_TEXT, 11]]  # distinct images, not rows
    assert stats["num_shards"] == 3 and sum(stats["shard_examples"]) == EXPECTED_KEPT
    assert stats["config"]["min_ngram_count"] == 2 and stats["config"]["shorter_side_above"] == 200


def test_shards_round_trip_captions_images_and_metadata(built, corpus):
    out, stats = built
    shards = sorted(out.glob("pairs-*.tfrecord"))
    assert [p.name for p in shards] == [f"pairs-0000{i}-of-00003.tfrecord" for i in range(3)]
    examples = []
    for index, path in enumerate(shards):
        records = read_shard(path)
        assert len(records) == stats["shard_examples"][index]
        assert all(output.shard_of(r["id"], 3) == index for r in records)
        digests = [hashlib.sha1(r["id"].encode()).digest() for r in records]
        assert digests == sorted(digests)  # deterministic order within a shard
        examples += records
    by_caption = {}
    for ex in examples:
        by_caption.setdefault(ex["caption"], []).append(ex)
    assert sorted(by_caption) == sorted(corpus["kept"])
    for caption, expected in corpus["kept"].items():
        got = {e["id"]: e for e in by_caption[caption]}
        assert len(got) == len(expected)
        for row_id, width, height, stored, source in expected:
            ex = got[row_id] if row_id else next(iter(got.values()))
            assert (ex["width"], ex["height"]) == (width, height)
            decoded = tf.io.decode_image(ex["image"], channels=3, expand_animations=False)
            assert decoded.shape == (height, width, 3)
            if stored == "same":
                assert ex["image"] == source.read_bytes()
            else:  # CMYK JPEG and GIF: re-encoded as (RGB) JPEG
                assert ex["image"][:2] == b"\xff\xd8" and ex["image"] != source.read_bytes()
    # Rows without an id get a hash of the image reference as written and the (tidied) text.
    gif = by_caption["a blue dog in the street"][0]
    assert gif["id"] == inputs.row_id("images/anim.gif", "a blue dog in the street")


def test_rerun_through_cli_gives_byte_identical_shards(built, corpus, tmp_path):
    """The command line, with Beam options among ours (both ``--flag=value`` and ``--flag value``)
    and the argparse-era ``--no-`` switch spelling, reproduces the API's run byte for byte."""
    out, stats = built
    proc = _cli("build", f"--input={corpus['table']}", f"--output_dir={tmp_path}",
                "--direct_num_workers=2", "--num_shards", "3", "--no-check_bigrams",
                "--direct_running_mode", "multi_threading", "--min_ngram_count=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert printed == {k: stats[k] for k in ("rows", "kept", "dropped")}
    assert json.loads((tmp_path / "stats.json").read_text()) == stats  # config included
    for path in sorted(out.glob("pairs-*.tfrecord")):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_build_flags_switches_and_beam_pass_through():
    """Our flags become the ``BuildConfig``; every other flag goes to Beam, in order."""
    input_pattern, output_dir, config, beam_args = build.parse_args([
        "--input=t.jsonl", "--runner=DirectRunner", "--output_dir", "out", "--num_shards=7",
        "--project", "p", "--check_bigrams", "--aspect_ratio_below=2.5", "--columns=image,text",
        "--direct_num_workers=1"])
    assert (input_pattern, output_dir) == ("t.jsonl", "out")
    assert config == build.BuildConfig(num_shards=7, check_bigrams=True, aspect_ratio_below=2.5,
                                       columns="image,text")
    assert beam_args == ["--runner=DirectRunner", "--project", "p", "--direct_num_workers=1"]
    base = ["--input=t.jsonl", "--output_dir=out"]
    assert build.parse_args(base) == ("t.jsonl", "out", build.BuildConfig(), [])
    for switch, value in [("--check_bigrams", True), ("--nocheck_bigrams", False),
                          ("--no-check_bigrams", False), ("--check_bigrams=false", False)]:
        assert build.parse_args(base + [switch])[2].check_bigrams is value, switch
    for args, message in [
            (["--output_dir=out"], "--input is required"),
            (["--input=t.jsonl"], "--output_dir is required"),
            (base + ["--num_shards=0"], "0 is not a positive integer"),
            (base + ["--jpeg_quality=101"], "--jpeg_quality=101"),
            (base + ["--min_words=few"], "--min_words=few"),
            # Abbreviations (argparse took them) and typos must not reach Beam unnoticed.
            (base + ["--num_shard=3"], "unknown flag --num_shard; did you mean --num_shards?"),
            (["--input=t.jsonl", "--out=o"], "did you mean --output_dir?"),
            (base + ["stray"], "unexpected argument 'stray'")]:
        error = cli_error(build.parse_args, args)
        assert error.startswith("align_tf.corpus.build: error: ") and message in error, (args, error)


def test_build_cli_help_and_one_line_errors(corpus, tmp_path):
    helped = _cli("build", "--help")  # absl exits 1 after printing the help
    for flag in ("--input", "--output_dir", "--[no]check_bigrams", "--num_shards", "--image_root",
                 "--max_images_per_text", "Beam pipeline option"):
        assert flag in helped.stdout, flag
    out = tmp_path / "out"
    for args, message in [  # a flag mistake (caught by the parser), a bad input (caught by main)
            ((f"--output_dir={out}", "--direct_num_workers=1"), "--input is required"),
            ((f"--input={tmp_path}/nope/*.jsonl", f"--output_dir={out}"), "no input files match")]:
        assert_one_line_error(_cli("build", *args), "build", message)
    assert not out.exists()  # caught before anything is written


def test_filters_are_configurable(corpus, tmp_path):
    """Paper-off settings keep what the defaults drop; bigram checks and downscaling work."""
    config = build.BuildConfig(num_shards=1, shorter_side_above=0, aspect_ratio_below=0,
                               min_words=0, max_words=0, max_images_per_text=0,
                               ngram_vocab_size=0, min_ngram_count=1, max_shorter_side=100)
    stats = build.build(str(corpus["table"]), str(tmp_path / "open"), config)
    assert stats["dropped"] == {**dict.fromkeys(filters.DROP_REASONS, 0), "bad_row": 4,
                                "missing_image": 2, "undecodable_image": 5}  # small_trunc too
    assert stats["kept"] == 50 - 11
    records = read_shard(tmp_path / "open" / "pairs-00000-of-00001.tfrecord")
    assert min(min(r["width"], r["height"]) for r in records) == 100  # downscaled to 100
    assert all(min(r["width"], r["height"]) <= 100 for r in records)

    # With bigrams checked, a text with a bigram seen in fewer than 2 rows is rare too. The
    # expected count, recomputed here in plain Python over the same rows:
    parsed = [r for r in corpus["rows"] if isinstance(r, dict) and r.get("text") and
              r.get("image", "").strip()]
    counts = {}
    for r in parsed:
        for g in filters.ngrams(r["text"]):
            counts[g] = counts.get(g, 0) + 1
    config = build.BuildConfig(num_shards=1, min_ngram_count=2, check_bigrams=True)
    shared = {filters.text_key(SHARED_TEXT)}
    rare = [r for r in parsed if not filters.word_count_reason(r["text"], config)
            and filters.text_key(r["text"]) not in shared
            and any(counts[g] < 2 for g in filters.checked_ngrams(r["text"], config))]
    assert len(rare) > EXPECTED_DROPPED["rare_token"]
    stats = build.build(str(corpus["table"]), str(tmp_path / "bigrams"), config)
    assert stats["dropped"]["rare_token"] == len(rare)
    assert stats["dropped"]["shared_text"] == EXPECTED_DROPPED["shared_text"]


def test_csv_tsv_parquet_and_headerless_inputs_parse_alike(corpus, tmp_path):
    import apache_beam as beam
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.testing.util import assert_that, equal_to

    pairs = [("a.jpg", 'a "quoted", text'), ("sub/b.png", "tab\\free text"), ("gs://x/c.jpg", "c")]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        import csv
        writer = csv.writer(f)
        writer.writerow(["text", "image", "extra"])
        writer.writerows([(t, i, "x") for i, t in pairs])
    (tmp_path / "t.tsv").write_text("".join(f"{i}\t{t}\n" for i, t in pairs))
    pq.write_table(pa.table({"image": [i for i, _ in pairs], "text": [t for _, t in pairs],
                             "id": ["p0", "p1", "p2"]}), tmp_path / "t.parquet")
    root = str(tmp_path)
    expected = [inputs.Row(inputs.row_id(i, t), inputs.resolve_image(i, root), t, filters.text_key(t))
                for i, t in pairs]
    with beam.Pipeline() as p:
        for name, config in [("t.csv", build.BuildConfig()),
                             ("t.tsv", build.BuildConfig(columns="image,text")),
                             ("t.parquet", build.BuildConfig(id_column=""))]:
            rows = (p | f"Read {name}" >> inputs.ReadTable(str(tmp_path / name), config)
                    | f"Parse {name}" >> beam.ParDo(inputs.ParseRow(config, root)))
            assert_that(rows, equal_to(expected), label=f"Check {name}")
    assert expected[2].image == "gs://x/c.jpg"  # URIs are not joined to the root
    assert inputs.input_format("x/pairs.json.gz") == "jsonl"
    with pytest.raises(ValueError, match="--format"):
        inputs.input_format("pairs.xlsx")


# ----------------------------------------------------------------------------- vocabulary


def test_vocab_cli_from_shards_and_text_files(built, tmp_path, capsys):
    out, _ = built
    path = tmp_path / "vocab.txt"
    proc = _cli("vocab", f"--input={out}/pairs-*.tfrecord", f"--output={path}", "--vocab_size=300")
    assert proc.returncode == 0, proc.stderr[-3000:]
    learned = tokenizer.load_vocabulary(str(path))
    assert f"wrote {len(learned)} tokens to {path}" in proc.stdout
    assert learned[:5] == tokenizer.RESERVED_TOKENS
    assert {"red", "car", "park", "the"} <= set(learned)
    pre = tokenizer.TextPreprocessor(str(path), sequence_length=8)
    ids = pre.tokenize(tf.constant(["The red car in the park"])).to_list()[0]
    assert learned.index(tokenizer.UNK) not in ids

    texts = tmp_path / "texts.txt"
    texts.write_text("a zebra crossing\n\nzebra zebra stripes\n" * 50)
    assert len(list(vocab.read_texts(str(texts)))) == 100  # blank lines skipped
    assert len(list(vocab.read_texts(str(texts), max_texts=7))) == 7
    # The CLI's main in-process (parsed flags handed over; absl's global FLAGS untouched).
    path = tmp_path / "v2.txt"
    vocab.main([vocab.PROG], vocab.parse_args([f"--input={texts}", f"--output={path}",
                                               "--vocab_size=100", "--max_texts=60"]))
    learned = tokenizer.load_vocabulary(str(path))
    assert {"zebra", "crossing", "stripes"} <= set(learned)
    assert f"wrote {len(learned)} tokens to {path}" in capsys.readouterr().out


def test_vocab_cli_spellings_and_one_line_errors(tmp_path):
    """``--input`` as in the builder; the argparse-era ``--input_pattern``/``--no-lowercase``
    still work (the first with a warning); mistakes are one line."""
    parsed = vocab.parse_args(["--input=a", "--output=v.txt", "--nolowercase", "--max_texts=5"])
    expected = {"input": "a", "output": "v.txt", "vocab_size": 30522, "max_texts": 5,
                "lowercase": False, "format": "", "tokenizer": ""}
    assert parsed.flag_values_dict() == expected
    assert set(vocab.TOKENIZERS) == set(tokenizer.MODES)  # spelt twice: --help loads no TF
    old = vocab.parse_args(["--input_pattern=a", "--output=v.txt", "--no-lowercase", "--max_texts=5"])
    assert old.flag_values_dict() == expected
    assert vocab.parse_args(["--input=a", "--output=v"]).lowercase is True
    for args, message in [(["--input=a"], "--output is required"),
                          (["--input=a", "--output=v", "--vocab_size=big"], "--vocab_size=big"),
                          (["--input=a", "--output=v", "--vocab=9"], "Unknown command line flag"),
                          (["--input=a", "--output=v", "extra"], "unexpected arguments")]:
        error = cli_error(vocab.parse_args, args)
        assert error.startswith("align_tf.corpus.vocab: error: ") and message in error, (args, error)

    # main's input check (in-process: the subprocess below stops in the parser, before the slow
    # TensorFlow import; test_vocab_cli_from_shards_and_text_files runs main in a subprocess).
    error = cli_error(lambda args: vocab.main([vocab.PROG], vocab.parse_args(args)),
                      [f"--input={tmp_path}/nope-*.tfrecord", f"--output={tmp_path}/v"])
    assert error == f"align_tf.corpus.vocab: error: no files match --input={tmp_path}/nope-*.tfrecord"
    assert not (tmp_path / "v").exists()
    proc = _cli("vocab", f"--input_pattern={tmp_path}/nope-*.tfrecord", "--max_texts=-1")
    assert "--input_pattern is deprecated; use --input" in proc.stderr
    assert_one_line_error(proc, "vocab", "--max_texts=-1")


# ----------------------------------------------------------------------------- tf.data pipeline

CAPTIONS = [f"pair {i}" for i in range(24)]
MODES = [("RGB", "JPEG"), ("L", "JPEG"), ("RGBA", "PNG"), ("P", "PNG")]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """4 shards of 24 valid pairs (assorted modes/sizes) plus 2 undecodable images and 1 record
    that is not an Example; a 5th file is cut mid-record (framing damage)."""
    root = tmp_path_factory.mktemp("shards")
    pairs = [(image_bytes(40 + 3 * i, 30 + 5 * (i % 4), *MODES[i % 4], seed=i), c)
             for i, c in enumerate(CAPTIONS)]
    bad = [(b"\xff\xd8 truncated jpeg", "bad image 1"), (image_bytes(50, 50, fmt="PNG")[:60],
                                                         "bad image 2"), b"not an Example"]
    records = pairs[:10] + bad[:1] + pairs[10:17] + bad[1:] + pairs[17:]
    tfrecord.write_pairs(records, str(root / "pairs"), num_shards=4)
    whole = tfrecord.make_example(image_bytes(40, 40), "cut 1")
    with tf.io.TFRecordWriter(str(root / "cut.tfrecord")) as w:
        w.write(whole)
        w.write(tfrecord.make_example(image_bytes(40, 40), "cut 2"))
    data = (root / "cut.tfrecord").read_bytes()
    (root / "cut.tfrecord").write_bytes(data[:len(data) - 20])
    return root


def _captions(ds):
    return [c.decode() for c in ds.map(lambda e: e["caption"]).as_numpy_iterator()]


def test_read_pairs_skips_and_counts_corrupt_records(shards):
    stats = tfrecord.ReadStats()
    ds = tfrecord.read_pairs(str(shards / "pairs-*.tfrecord"), seed=0, stats=stats)
    examples = list(ds.as_numpy_iterator())
    assert sorted(e["caption"].decode() for e in examples) == sorted(CAPTIONS)
    assert all(e["image"].dtype == np.uint8 and e["image"].shape[2] == 3 for e in examples)
    assert stats.as_dict() == {"corrupt_record": 1, "corrupt_image": 2} and stats.skipped == 3
    # A shard cut mid-record: its intact records are read, the rest of it skipped (not fatal).
    stats = tfrecord.ReadStats()
    got = _captions(tfrecord.read_pairs(f"{shards}/pairs-*,{shards}/cut.tfrecord", seed=0,
                                        stats=stats))
    assert sorted(got) == sorted(CAPTIONS + ["cut 1"]) and stats.skipped == 3
    # Same seed, same order.
    again = _captions(tfrecord.read_pairs(f"{shards}/pairs-*,{shards}/cut.tfrecord", seed=0,
                                          stats=tfrecord.ReadStats()))
    assert got == again
    with pytest.raises(FileNotFoundError):
        tfrecord.read_pairs(str(shards / "nope-*"))


@pytest.mark.parametrize("decode_first", [True, False])
def test_batches_shapes_dtypes_and_ranges(shards, decode_first):
    vocab_list = tokenizer.RESERVED_TOKENS + ["pair"] + [str(i) for i in range(24)]
    pre = tokenizer.TextPreprocessor(vocab_list, sequence_length=6)
    stats = tfrecord.ReadStats()
    stream = tfrecord.read_training_pairs(str(shards / "pairs-*"), 1, sampling.Layout(5, 5),
                                          shuffle_buffer=16, stats=stats)
    if decode_first:  # decoded images keep their stream position
        stream = tfrecord.decode_images(stream, stats)
    ds = pipeline.batch_pairs(stream, pre, batch_size=5, image_size=32, resize_size=40,
                              training=True, seed=1, stats=stats)
    assert ds.element_spec["image"].shape == (5, 32, 32, 3)  # static: drop_remainder
    assert ds.element_spec["text"]["token_ids"].shape == (5, 6)
    seen = set()
    for batch in ds.take(10):  # 50 > 24: repeats across epochs
        image = batch["image"].numpy()
        assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
        assert image.std() > 0.01
        ids = batch["text"]["token_ids"].numpy()
        assert ids.dtype == np.int32 and (ids[:, 0] == vocab_list.index("[CLS]")).all()
        assert (batch["text"]["padding_mask"].numpy().sum(1) == 4).all()  # [CLS] pair N [SEP]
        seen.update(ids[:, 2].tolist())
    assert len(seen) == 24  # every valid pair, none of the corrupt ones
    assert stats.as_dict()["corrupt_image"] >= 2 and stats.as_dict()["corrupt_record"] >= 1

    evaluation = pipeline.batch_pairs(
        tfrecord.read_pairs(str(shards / "pairs-*"), shuffle_files=False, decode=decode_first,
                            stats=stats), pre, 5, 32, 40, training=False)
    sizes = [b["image"].shape[0] for b in evaluation]
    assert sum(sizes) == 24 and sizes[-1] == 4  # one pass, remainder kept
    with pytest.raises(ValueError, match="training batches need each example's stream position"):
        pipeline.batch_pairs(tfrecord.read_pairs(str(shards / "pairs-*")), pre, 5, 32)


@pytest.mark.parametrize("pattern,num_files", [("pairs-*", 4), ("pairs-00000-*", 1)])
def test_input_pipelines_read_disjoint_shards(shards, pattern, num_files):
    parts = []
    for i in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i)
        parts.append(_captions(tfrecord.read_pairs(str(shards / pattern), seed=0,
                                                   input_context=context,
                                                   stats=tfrecord.ReadStats())))
    alone = _captions(tfrecord.read_pairs(str(shards / pattern), stats=tfrecord.ReadStats()))
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(alone)


def test_distributed_dataset_with_corrupt_records(shards):
    """The trainer's path: distribute_datasets_from_function on 2 replicas (CPU devices)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    pre = tokenizer.TextPreprocessor(tokenizer.RESERVED_TOKENS + ["pair"], sequence_length=4)
    stats = tfrecord.ReadStats()

    def dataset_fn(context):
        layout = sampling.Layout(8, 8 // context.num_input_pipelines, context.input_pipeline_id)
        ds = tfrecord.read_training_pairs(str(shards / "pairs-*"), 0, layout, shuffle_buffer=8,
                                          input_context=context, stats=stats)
        return pipeline.batch_pairs(ds, pre, 4, 16, training=True, seed=0, stats=stats)

    dist = iter(strategy.distribute_datasets_from_function(dataset_fn))
    for _ in range(8):
        batch = next(dist)
        images = strategy.experimental_local_results(batch["image"])
        assert [im.shape for im in images] == [(4, 16, 16, 3)] * 2
    assert stats.skipped >= 3


def test_training_on_shards_with_corrupt_records_logs_the_skips(shards, tmp_path):
    """The trainer reads shards with corrupt records without stopping and reports how many it
    skipped as the ``skipped_records`` metric (progress bar and TensorBoard)."""
    from tensorboard.backend.event_processing import event_accumulator

    from align_tf import trainer
    from align_tf.configs import base

    vocab_path = tokenizer.save_vocabulary(tokenizer.build_vocabulary(CAPTIONS, vocab_size=60),
                                           str(tmp_path / "vocab.txt"))
    config = base.get_config()
    config.model.text_size_name = "nano"
    config.data.name = f"tfrecord:{shards}/pairs-*.tfrecord"
    config.data.vocab_path = vocab_path
    config.data.image_size, config.data.max_tokens, config.data.shuffle_buffer = 32, 8, 16
    config.train.batch_size, config.train.steps, config.train.log_every = 8, 6, 3
    config.train.steps_per_loop, config.eval.enabled, config.export.enabled = 3, False, False
    result = trainer.train(config, str(tmp_path / "run"), verbose=0)
    # 6 steps × 8 pairs = 48 > 24 valid pairs: every corrupt record was met at least once.
    assert result.metrics["skipped_records"] >= 3
    events = event_accumulator.EventAccumulator(str(tmp_path / "run" / "train"),
                                                size_guidance={"tensors": 0})
    events.Reload()
    logged = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("skipped_records")]
    assert len(logged) == 2 and logged[-1] >= 3


# ----------------------------------------------------------------------------- TFDS


def _mock_coco(self, split, **kwargs):
    counts = [5, 6, 7, 5, 3]  # the last image has too few captions for the 5-caption protocol

    def gen():
        for i, n in enumerate(counts):
            yield {"image": np.full((20 + i, 30, 3), 10 * i, np.uint8),
                   "captions": {"text": [f"image {i} caption {j}" for j in range(n)],
                                "id": list(range(n))}}

    return tf.data.Dataset.from_generator(gen, output_signature={
        "image": tf.TensorSpec((None, None, 3), tf.uint8),
        "captions": {"text": tf.TensorSpec((None,), tf.string),
                     "id": tf.TensorSpec((None,), tf.int64)}})


def test_tfds_coco_captions_pairs_groups_and_export(tmp_path):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(as_dataset_fn=_mock_coco):
        pairs = list(tfds_captions.caption_pairs("coco_captions", "train").as_numpy_iterator())
        assert len(pairs) == 5 + 6 + 7 + 5 + 3
        assert pairs[5]["caption"] == b"image 1 caption 0" and pairs[5]["image"].shape == (21, 30, 3)
        grouped = tfds_captions.grouped_captions("coco_captions", "test")
        assert grouped.element_spec["captions"].shape == (5,)
        grouped = list(grouped.as_numpy_iterator())
        assert len(grouped) == 4
        assert grouped[2]["captions"].tolist() == [f"image 2 caption {j}".encode() for j in range(5)]
        n = tfds_captions.export_pairs("coco_captions", "train", str(tmp_path / "coco"), 2)
    assert n == 26
    back = list(tfrecord.read_pairs(str(tmp_path / "coco-*"), stats=tfrecord.ReadStats())
                .as_numpy_iterator())
    assert sorted(e["caption"] for e in back) == sorted(p["caption"] for p in pairs)

    # Random mock data of the real builder's features works too (no download, no as_dataset_fn).
    with tfds.testing.mock_data(num_examples=3):
        grouped = list(tfds_captions.grouped_captions().as_numpy_iterator())  # 5-49 captions each
        assert len(grouped) == 3 and grouped[0]["image"].shape[-1] == 3


def test_tfds_captions_cli(tmp_path, capsys):
    """Flags spelt as in align_tf.evaluate/build (old ``--name``/``--no-download`` still work);
    main exports a split; a mistake (--nodownload without prepared data) is one line."""
    import tensorflow_datasets as tfds
    args = ["--split=train+restval", f"--output_dir={tmp_path}", "--num_shards=2",
            "--data_dir=/tfds", "--jpeg_quality=90"]
    parsed = tfds_captions.parse_args(["--dataset=coco_captions", "--nodownload"] + args)
    expected = {"dataset": "coco_captions", "split": "train+restval", "output_dir": str(tmp_path),
                "num_shards": 2, "jpeg_quality": 90, "data_dir": "/tfds", "download": False}
    assert parsed.flag_values_dict() == expected
    old = tfds_captions.parse_args(["--name=coco_captions", "--no-download"] + args)
    assert old.flag_values_dict() == expected
    for bad, message in [([], "--output_dir is required"),
                         (["--output_dir=o", "--num_shards=0"], "0 is not a positive integer"),
                         (["--output_dir=o", "--download=maybe"], "--download=maybe")]:
        error = cli_error(tfds_captions.parse_args, bad)
        assert error.startswith("align_tf.data.tfds_captions: error: ") and message in error, error

    with tfds.testing.mock_data(as_dataset_fn=_mock_coco):
        tfds_captions.main([tfds_captions.PROG], tfds_captions.parse_args(
            ["--split=train", f"--output_dir={tmp_path}", "--num_shards=2"]))
    assert f"exported 26 pairs of coco_captions/train to {tmp_path}/train-*" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]

    # --nodownload without prepared data: TFDS's AssertionError, as one line.
    error = cli_error(lambda args: tfds_captions.main([tfds_captions.PROG],
                                                      tfds_captions.parse_args(args)),
                      ["--nodownload", f"--data_dir={tmp_path}/tfds", f"--output_dir={tmp_path}"])
    assert error.startswith("align_tf.data.tfds_captions: error: Dataset coco_captions: could not "
                            "find data") and "\n" not in error
    # The real entry point (it stops in the parser, before TensorFlow is imported).
    assert_one_line_error(_cli("tfds_captions", "--dataset=coco_captions", "--num_shards=2"),
                          "tfds_captions", "--output_dir is required")


# ----------------------------------------------------------------------------- data sources


def test_one_spelling_names_each_source_everywhere(tmp_path):
    """``sources.get``: name, spec, argument; what each yields; one-line errors naming the
    choices; the training check (``sources.check``) names the field."""
    from align_tf.configs import base
    from align_tf.data import sources
    from align_tf.data.sources import tfds as tfds_source
    assert sources.names()[:4] == ("synthetic", "tfrecord", "img2dataset_tfrecord", "tfds")
    for spec, name, argument in [("synthetic", "synthetic", ""),
                                 ("tfrecord:/x/*.tfrecord", "tfrecord", "/x/*.tfrecord"),
                                 ("img2dataset_tfrecord:/y/*", "img2dataset_tfrecord", "/y/*"),
                                 ("tfds:coco_captions/train+restval", "tfds",
                                  "coco_captions/train+restval")]:
        source = sources.get(spec)
        assert (source.name, source.spec, source.argument) == (name, spec, argument)
    assert sources.get("synthetic").kinds() == {sources.PAIRS, sources.CLASSIFICATION,
                                                sources.RETRIEVAL}
    assert sources.get("tfrecord:/x/*").kinds() == {sources.PAIRS, sources.RETRIEVAL}
    assert set(sources.get("synthetic").groups()) == {"heldout", "seen"}
    assert sources.get("tfrecord:/x/*").groups() is None
    # TFDS: NAME[/config][:version][/split]; the results key and prompts use the bare name.
    assert tfds_source.split_argument("coco_captions/train+restval") == ("coco_captions",
                                                                        "train+restval")
    assert tfds_source.split_argument("wmt14/de-en") == ("wmt14/de-en", None)
    assert tfds_source.split_argument("wmt14/de-en/test[:10%]") == ("wmt14/de-en", "test[:10%]")
    cifar = sources.get("tfds:cifar100:3.*.*")
    assert (cifar.dataset, cifar.split, cifar.results_key, cifar.prompt_name) == (
        "cifar100:3.*.*", None, "cifar100", "cifar100")
    assert sources.spellings()[:4] == ("synthetic", "tfrecord:GLOB", "img2dataset_tfrecord:GLOB",
                                       "tfds:NAME[/split]")
    for spec, message in [("webdataset:/x", "unknown data source 'webdataset:/x'; choose from "
                                            + ", ".join(sources.spellings())),
                          ("tfds:", "data source 'tfds:' needs its argument: tfds:NAME[/split]")]:
        with pytest.raises(sources.UnknownSourceError, match="^" + message.replace("[", r"\[")
                           .replace("]", r"\]") + "$"):
            sources.get(spec)
    data = base.get_config().data
    for name, message in [
            ("webdataset", "^unknown data.name 'webdataset'; choose from synthetic, "),
            ("img2dataset_tfrecord:/x", "^data.vocab_path is required for "
                                        "data.name='img2dataset_tfrecord:/x'")]:
        data.name = name
        with pytest.raises(ValueError, match=message):
            sources.check(data)
    (tmp_path / "v.txt").write_text("[PAD]\n")
    data.vocab_path, data.name = str(tmp_path / "v.txt"), f"tfrecord:{tmp_path}/*.tfrecord"
    with pytest.raises(ValueError, match="the glob matches no files$"):
        sources.check(data)
    data.name, data.tfds_data_dir = "tfds:coco_captions", str(tmp_path)
    with pytest.raises(ValueError, match="^data.name='tfds:coco_captions', data.tfds_split="
                                         "'train', .*could not find data"):
        sources.check(data)  # not prepared: never downloaded while training


def test_old_spellings_work_with_a_one_line_notice(shards, tmp_path, capfd):
    """Before [house]: data.name="tfrecord" + data.train_pattern, "tfds:NAME" + data.tfds_split,
    and a bare TFDS name in eval.datasets; each is read as today's spelling, with one notice."""
    from align_tf import migrate
    from align_tf.configs import base
    from align_tf.data import sources
    data = base.get_config().data
    data.name, data.train_pattern = "tfrecord", str(shards / "pairs-*.tfrecord")
    data.vocab_path = str(tmp_path / "v.txt")
    (tmp_path / "v.txt").write_text("[PAD]\n")
    for _ in range(2):
        sources.check(data)
        assert sources.training_source(data).spec == f"tfrecord:{shards}/pairs-*.tfrecord"
    assert sources.parse("tfrecord") == ("tfrecord", "")  # what trainer validation asks first
    data.name, data.tfds_split = "tfds:coco_captions", "train+restval"
    assert migrate.data_source_spec(data) == "tfds:coco_captions/train+restval"
    assert sources.get("cifar10").spec == "tfds:cifar10"
    notices = [line for line in capfd.readouterr().err.splitlines() if "deprecated" in line]
    assert notices == [
        "align_tf: deprecated: data.name='tfrecord' with data.train_pattern is now spelt "
        f"'tfrecord:{shards}/pairs-*.tfrecord'",
        "align_tf: deprecated: data.name='tfds:coco_captions' with data.tfds_split is now spelt "
        "'tfds:coco_captions/train+restval'",
        "align_tf: deprecated: dataset 'cifar10' is now spelt 'tfds:cifar10'"]
    with pytest.raises(ValueError, match="^unknown data.name 'cifar10'"):
        sources.parse("cifar10")  # training never took a bare TFDS name


def test_sources_read_the_same_data_objects_as_evaluation_and_fine_tuning(shards):
    """A source's ``retrieval`` and ``classification`` objects: made at any image size, read by
    evaluators (``embed_images``) and fine-tuning (``arrays``, ``labelled_examples``) alike."""
    from align_tf.configs import base
    from align_tf.data import sources
    options = base.get_config().eval
    synthetic_source = sources.get("synthetic")
    small = options.synthetic_examples_per_class = 2
    test = synthetic_source.classification(options, train=False)
    arrays = test.arrays(16)
    assert arrays["image"].shape == (30 * small, 16, 16, 3) and len(test.classnames) == 30
    fit = synthetic_source.classification(options, train=True).arrays(16)
    assert not np.array_equal(fit["image"], arrays["image"])  # another seed
    assert synthetic_source.labelled_examples(options) is None  # in memory: read by index
    records = sources.get(f"tfrecord:{shards}/pairs-*.tfrecord").retrieval(options)
    examples = list(records.examples(None).as_numpy_iterator())
    assert examples and all(len(e["captions"]) >= 1 for e in examples)
    assert records.skipped_counts()["num_skipped_records"] >= 1  # the shards' corrupt records



def test_evaluation_reads_sources_as_training_spells_them(tmp_path):
    """``eval.datasets`` takes ``img2dataset_tfrecord:GLOB`` (img2dataset's ``jpg``/``txt``
    features, read as they are) and ``tfds:NAME``; results are keyed by the source's name."""
    import tensorflow_datasets as tfds

    from align_tf.configs import base
    from align_tf.data import img2dataset, sources
    from align_tf.evaluation import runner
    images = {f"{i:03d}": image_bytes(20 + i, 16, seed=i) for i in range(3)}
    with tf.io.TFRecordWriter(str(tmp_path / "clean.tfrecord")) as w:
        for key, jpg in images.items():
            w.write(tf.train.Example(features=tf.train.Features(feature={
                img2dataset.IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpg])),
                img2dataset.CAPTION: tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[f"image {key}".encode()])),
            })).SerializeToString())
    name = f"img2dataset_tfrecord:{tmp_path}/clean*.tfrecord"
    source = sources.get(name)
    got = {e["captions"][0].decode(): tf.io.encode_png(e["image"]).numpy()
           for e in source.retrieval(base.get_config().eval).examples(None).as_numpy_iterator()}
    assert got == {f"image {k}": tf.io.encode_png(tf.io.decode_jpeg(v)).numpy()
                   for k, v in images.items()}
    with tfds.testing.mock_data(num_examples=2):
        assert sources.get("tfds:coco_captions").kinds() == {sources.PAIRS, sources.RETRIEVAL}
        plans = runner.plans_from_config(base.get_config(), datasets=f"{name},tfds:coco_captions",
                                         tasks="auto")
        assert {key: [t for t, _ in evaluators] for key, evaluators in plans} == {
            "img2dataset_tfrecord": ["retrieval"], "coco_captions": ["retrieval"]}
    with pytest.raises(sources.UnknownSourceError, match="'tfds:NAME'"):
        sources.get("tfds:no_such_dataset_here").kinds()
