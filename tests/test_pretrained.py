"""Pretrained ALIGN by name (issue [api]): ``align_tf.load("kakaobrain/align-base")`` and
``python -m align_tf.convert --from=...`` on a Hugging Face hub cache built here from a small random
``AlignModel`` (``HF_HUB_OFFLINE=1``: no network), compared with HF's own embeddings; and the
converter's one-line errors (empty config.json, a missing safetensors, stray arguments, offline).
"""

import json
import os
import shutil
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

import align_tf  # noqa: E402
from align_tf import cli, pretrained  # noqa: E402
from align_tf.convert import hf_align  # noqa: E402

REPO, SHA = "kakaobrain/align-base", "0123456789abcdef0123456789abcdef01234567"
SIZE = 33  # the processor's crop and resize: images of this size reach the tower unchanged
WORDS = ["a", "photo", "of", "the", "cat", "dog", "red", "circle", "two", "in", "snow", "at",
         "night", "blue", "square", "playing"]
TEXTS = ["a photo of a cat", "Two dogs playing in the snow.", "a red circle at night!", "",
         "blue square, zzz 42"]


def _vocabulary():
    """A small BERT-uncased WordPiece vocabulary: specials, punctuation, letters, digits, pieces."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return list(dict.fromkeys(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(".,!?'-") + letters
        + [str(d) for d in range(10)] + ["##" + c for c in letters + list("0123456789")] + WORDS))


def _random_align(vocab_size, seed=3):
    """A random ``AlignModel`` with fan-in scaled weights and BatchNorm statistics measured on a
    batch (HF's own init leaves BN at 0/1 with tiny weights, where features hardly depend on the
    input)."""
    torch.manual_seed(seed)
    config = transformers.AlignConfig(
        vision_config=dict(width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=48,
                           image_size=SIZE, depthwise_padding=[2]),
        text_config=dict(vocab_size=vocab_size, hidden_size=24, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=40, max_position_embeddings=64),
        projection_dim=80, temperature_init_value=1.0)
    model = transformers.AlignModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, float(np.prod(p.shape[1:])) ** -0.5)
            else:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
        model.temperature.fill_(0.21)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # one batch sets the statistics
        model.train()
        model.vision_model(pixel_values=torch.rand(8, 3, SIZE, SIZE) * 2 - 1)
    return model.eval()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """``{"cache": HF hub cache, "hf": AlignModel, "tokenizer": BertTokenizer}``: the cache in
    Hugging Face's layout, ``models--kakaobrain--align-base/refs/main`` naming
    ``snapshots/<sha>/``, whose tokenizer is ``tokenizer.json`` only (as transformers 5 saves)."""
    root = tmp_path_factory.mktemp("hub")
    vocab = root / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in _vocabulary()))
    tokenizer = transformers.BertTokenizer(str(vocab))
    hf = _random_align(len(_vocabulary()))
    repo = root / "cache" / "models--kakaobrain--align-base"
    snapshot = repo / "snapshots" / SHA
    hf.save_pretrained(str(snapshot))
    tokenizer.save_pretrained(str(snapshot))
    (snapshot / "vocab.txt").unlink(missing_ok=True)
    with open(snapshot / "preprocessor_config.json", "w") as f:
        json.dump({"image_processor_type": "EfficientNetImageProcessor", "do_normalize": False,
                   "rescale_offset": True, "rescale_factor": 1 / 127.5,
                   "crop_size": {"height": SIZE, "width": SIZE},
                   "size": {"height": SIZE, "width": SIZE}}, f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    assert "tokenizer.json" in os.listdir(snapshot) and "vocab.txt" not in os.listdir(snapshot)
    return {"cache": str(root / "cache"), "hf": hf, "tokenizer": tokenizer}


@pytest.fixture
def offline(hub, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1, the hub cache above, a fresh align_tf cache; counts conversions."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", hub["cache"])
    monkeypatch.setenv("ALIGN_TF_CACHE", str(tmp_path / "align_cache"))
    calls = []
    convert = hf_align.convert

    def counting(*args, **kwargs):
        calls.append(args[0])
        return convert(*args, **kwargs)

    monkeypatch.setattr(hf_align, "convert", counting)
    return calls


def _hf_embeddings(hub, pixels, texts):
    enc = hub["tokenizer"](texts, padding="max_length", truncation=True, max_length=64,
                           return_tensors="pt")
    with torch.no_grad():
        out = hub["hf"](input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                        pixel_values=torch.from_numpy(2.0 * pixels - 1.0).permute(0, 3, 1, 2))
    return out.image_embeds.numpy(), out.text_embeds.numpy()


def test_load_by_name_converts_once_caches_and_matches_hf(hub, offline, tmp_path):
    # Two concurrent first calls: the lock lets one convert; the other then finds it converted.
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(pretrained.fetch(REPO, verbose=False)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(offline) == 1 and len(paths) == 2 and paths[0] == paths[1]
    assert paths[0] == os.path.join(str(tmp_path / "align_cache"),
                                    "models--kakaobrain--align-base", SHA)

    model = align_tf.load(REPO)
    assert len(offline) == 1 and model.path == paths[0]
    assert (model.image_size, model.embedding_dim, model.similarity) == (SIZE, 80, "softmax")
    pixels = np.random.default_rng(0).uniform(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    ref_image, ref_text = _hf_embeddings(hub, pixels, TEXTS)
    image, text = model.embed_images(pixels), model.embed_texts(TEXTS)
    print("max abs diff vs HF: image", np.abs(image - ref_image).max(), "text",
          np.abs(text - ref_text).max())
    np.testing.assert_allclose(image, ref_image, atol=1e-5)
    np.testing.assert_allclose(text, ref_text, atol=1e-5)
    cos = image @ image.T  # the comparison means something only if embeddings differ
    assert cos[~np.eye(3, dtype=bool)].max() < 0.999

    # Later calls need neither a conversion nor the HF cache.
    moved = os.path.join(os.path.dirname(hub["cache"]), "moved")
    os.rename(hub["cache"], moved)
    try:
        again = align_tf.load(REPO)
        np.testing.assert_allclose(again.embed_texts(TEXTS), text, atol=1e-6)
        # revision=: a commit is found by name; an unknown branch offline is one line.
        assert pretrained.fetch(REPO, revision=SHA, verbose=False) == paths[0]
        with pytest.raises(align_tf.PretrainedError, match="at revision v2 .* HF_HUB_OFFLINE"):
            align_tf.load(REPO, revision="v2")
        with pytest.raises(align_tf.PretrainedError, match="cannot download .* HF_HUB_OFFLINE"):
            align_tf.load("kakaobrain/other-model")
    finally:
        os.rename(moved, hub["cache"])
    assert len(offline) == 1


def _convert_cli(args):
    """``python -m align_tf.convert ARGS`` in process: parse as the command does, then main."""
    flag_values = cli.parse_args(hf_align.PROG, args, hf_align._define_flags,
                                 required=("output",))
    hf_align.main([hf_align.PROG], flag_values)


def test_convert_from_repo_id(hub, offline, tmp_path):
    out = tmp_path / "out"
    _convert_cli([f"--from={REPO}", f"--output={out}", "--noexport"])
    assert offline == [os.path.join(hub["cache"], "models--kakaobrain--align-base", "snapshots",
                                    SHA)]
    with open(out / "conversion.json") as f:
        assert json.load(f)["temperature"] == pytest.approx(0.21)
    assert (out / "checkpoints" / "checkpoint").exists() and not (out / "savedmodel").exists()


@pytest.mark.parametrize("args, message", [
    (["--output=OUT"], "give either --hf_dir=DIR or --from=REPO_ID"),
    (["--hf_dir=EMPTY", "--output=OUT"], "config.json is not valid JSON"),
    (["--from=kakaobrain/no-such-model", "--output=OUT"],
     "cannot download kakaobrain/no-such-model (no network, or HF_HUB_OFFLINE=1)"),
    (["--hf_dir=EMPTY", "--output=OUT", "stray"], "unexpected arguments ['stray']"),
    (["--hf_dir=NOSAFETENSORS", "--output=OUT"],
     'reading model.safetensors needs safetensors: pip install "align_tf[pretrained]"'),
    (["--hf_dir=NOTORCH", "--output=OUT"], "reading pytorch_model.bin needs torch: pip install torch"),
])
def test_converter_mistakes_are_one_line(args, message, hub, offline, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("")
    snapshot = os.path.join(hub["cache"], "models--kakaobrain--align-base", "snapshots", SHA)
    if any("NOSAFETENSORS" in a for a in args):
        monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    bin_only = tmp_path / "bin_only"  # a checkpoint with nothing but pytorch_model.bin
    if any("NOTORCH" in a for a in args):
        shutil.copytree(snapshot, bin_only, ignore=shutil.ignore_patterns("*.safetensors"))
        (bin_only / "pytorch_model.bin").write_bytes(b"")
        monkeypatch.setitem(sys.modules, "torch", None)
    args = [a.replace("EMPTY", str(empty)).replace("NOSAFETENSORS", snapshot)
            .replace("NOTORCH", str(bin_only))
            .replace("OUT", str(tmp_path / "out")) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        _convert_cli(args)
    text = str(exit_info.value.code)
    assert text.startswith("align_tf.convert.hf_align: error: ") and "\n" not in text, text
    assert message in text, text
