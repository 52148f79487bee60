"""The multilingual tokenizer modes: in-graph ids equal HF's BertTokenizer with the same rules and
vocabulary on every script the multilingual corpus uses, and the vocabulary learner sees the
words inference produces."""

import numpy as np
import pytest
import tensorflow as tf
import transformers

from align_tf import tokenizer

SAMPLE = [
    "Größe STRASSE ﬁne Ärger über Öl", "Café DÉJÀ vu, naïve façade; Crème brûlée à l'été",
    "Žlutý kůň úpěl ďábelské ódy; ČERVENÝ čtverec", "¿Dónde está el CORAZÓN rojo? ¡Sí, señor!",
    "Красный КРУГ на белом фоне. Жёлтая звезда", "ΠΑΣ ΚΟΣΜΟΣ σοφίας",
    "红色的圆形在白色背景上。蓝色方块", "赤い円の写真です。ガードレールとカタカナ、ひらがな",
    "دائرة حمراء على خلفية بيضاء، نجمة صفراء ئ", "लाल वृत्त की तस्वीर। नीला वर्ग और हरा त्रिभुज",
    "mixed東京text Москваcity दिल्ली2024 القاهرةcairo 한국어 문장입니다",
    "emoji 🙂 test 👍🏽 family 👨\u200d👩\u200d👧 flag 🇯🇵 ❤️ 😀!",
    "zero\u200bwidth soft\u00adhyphen nbsp\u00a0here ideographic\u3000space\ttab",
    "İstanbul ﬃ ｆｕｌｌｗｉｄｔｈ ＡＢＣ … “quotes” «guillemets»", "д" * 101, "", "   ",
]
# Invalid UTF-8: HF gets the text decoded with errors="replace" (U+FFFD, which BERT deletes).
INVALID = [b"red\xff circle \xe4\xb8 ok", b"\xc3(gr\xc3\xb6\xc3\x9fe)\x80 \xf0\x9f\x99"]


def _hf(vocab, mode):
    settings = tokenizer.mode_settings(mode)
    return transformers.BertTokenizer(
        vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=settings["lowercase"],
        strip_accents=settings["strip_accents"], tokenize_chinese_chars=True)


@pytest.mark.parametrize("mode", ["multilingual", "cased"])
def test_ids_equal_hf_bert_tokenizer_on_every_script(mode):
    """A vocabulary learned from the sample (small, so words also split into pieces and [UNK])
    gives the same ids in-graph as HF's BertTokenizer with ``strip_accents=False``."""
    settings = tokenizer.mode_settings(mode)
    vocab = tokenizer.build_vocabulary(SAMPLE * 3, vocab_size=400, **settings)
    texts = [t.encode() for t in SAMPLE] + INVALID
    ours = tokenizer.TextPreprocessor(vocab, sequence_length=48, **settings)(tf.constant(texts))
    ref = _hf(vocab, mode)([t.decode("utf-8", "replace") for t in texts], padding="max_length",
                            truncation=True, max_length=48, return_tensors="np")
    ids = ours["token_ids"].numpy()
    pieces = set()
    for i, text in enumerate(texts):
        assert ids[i].tolist() == ref["input_ids"][i].tolist(), (
            text.decode("utf-8", "replace"), [vocab[j] for j in ids[i]],
            [vocab[j] for j in ref["input_ids"][i]])
        pieces.update(vocab[j] for j in ids[i])
    np.testing.assert_array_equal(ours["padding_mask"].numpy(), ref["attention_mask"])
    # The sample exercises whole words, word pieces and unknown words.
    assert tokenizer.UNK in pieces and any(p.startswith("##") for p in pieces)


def test_multilingual_mode_keeps_scripts_and_splits_only_ideographs():
    words = tokenizer.bert_pretokenize(
        tf.constant(["Größe वृत्त ئ です 東京タワー 한국어 ΟΔΟΣ"]),
        **tokenizer.mode_settings("multilingual")).to_list()[0]
    assert [w.decode() for w in words] == [
        "größe", "वृत्त", "ئ", "です", "東", "京", "タワー", "한국어", "οδοσ"]
    uncased = tokenizer.bert_pretokenize(tf.constant(["वृत्त ئ です"])).to_list()[0]
    assert [w.decode() for w in uncased] == ["वतत", "ي", "てす"]  # why uncased is not for mling


def test_learner_sees_the_words_inference_produces():
    vocab = tokenizer.build_vocabulary(["Größe ﬁne Größe ﬁne"] * 5, vocab_size=60,
                                       **tokenizer.mode_settings("multilingual"))
    assert {"größe", "ﬁne"} <= set(vocab) and "grosse" not in vocab and "fine" not in vocab
    uncased = tokenizer.build_vocabulary(["Größe ﬁne Größe ﬁne"] * 5, vocab_size=60)
    assert "große" in uncased  # inference's uncased word too: accents stripped, ß kept


def test_unknown_mode_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown tokenizer 'klingon'"):
        tokenizer.mode_settings("klingon")


def test_config_mode_reaches_the_preprocessor():
    from align_tf.configs import base

    data = base.get_config().data
    assert data.tokenizer == "uncased"
    assert tokenizer.TextPreprocessor.for_data(["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
                                               data).strip_accents is True
    data.tokenizer = "multilingual"
    layer = tokenizer.TextPreprocessor.for_data(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], data)
    assert (layer.lowercase, layer.strip_accents, layer.sequence_length) == (True, False, 16)
    assert tokenizer.TextPreprocessor.from_config(layer.get_config()).strip_accents is False
