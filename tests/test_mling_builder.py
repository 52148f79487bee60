"""[mling] The corpus builder on a multilingual table: captions in every script are kept byte for
byte; a line that is not UTF-8 and an empty caption are counted (``bad_row``) and skipped."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf.corpus import build

GOOD = ["ein roter Kreis auf hellem Hintergrund", "синий квадрат", "一张红色的圆形的照片",
        "دائرة حمراء", "एक लाल वृत्त", "une étoile verte", "赤い円の写真です"]
# Not UTF-8: Latin-1 and Shift-JIS bytes, as a legacy alt-text export writes them.
NOT_UTF8 = ["ein Foto: Größe".encode("latin-1"), "赤い円".encode("shift_jis")]
EMPTY = ["", "   "]


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize((320, 240)).save(out, "JPEG")
    return out.getvalue()


def _line(fmt: str, image: str, text) -> bytes:
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    if fmt == "jsonl":  # a JSON string escapes nothing above ASCII here: the bytes stay raw
        return b'{"image": "' + image.encode() + b'", "text": "' + raw + b'"}\n'
    sep = b"\t" if fmt == "tsv" else b","
    return image.encode() + sep + raw + b"\n"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_non_utf8_and_empty_captions_are_counted_and_skipped(tmp_path, fmt):
    texts = GOOD + NOT_UTF8 + EMPTY
    lines = [b"image,text\n" if fmt == "csv" else b"image\ttext\n" if fmt == "tsv" else b""]
    for i, text in enumerate(texts):
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg(i))
        lines.append(_line(fmt, f"{i}.jpg", text))
    table = tmp_path / f"pairs.{fmt}"
    table.write_bytes(b"".join(lines))

    config = build.BuildConfig(min_words=0, num_shards=1)  # zh/ja captions are one "word"
    stats = build.build(str(table), str(tmp_path / "out"), config)
    assert stats["rows"] == len(texts)
    assert stats["kept"] == len(GOOD)
    assert stats["dropped"]["bad_row"] == len(NOT_UTF8) + len(EMPTY)
    assert stats["rows"] == stats["kept"] + sum(stats["dropped"].values())
    captions = []
    for path in tf.io.gfile.glob(str(tmp_path / "out" / "pairs-*.tfrecord")):
        for record in tf.data.TFRecordDataset(path):
            ex = tf.train.Example.FromString(record.numpy()).features.feature
            captions.append(ex["caption"].bytes_list.value[0].decode("utf-8"))
    assert sorted(captions) == sorted(GOOD)
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["kept"] == len(GOOD)
