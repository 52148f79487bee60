"""WordPiece vocabulary learning and the in-graph text preprocessor."""

import numpy as np
import pytest
import tensorflow as tf

from align_tf import tokenizer


def test_vocabulary_learned_from_corpus_round_trips(tmp_path):
    texts = ["a red star on a dark background", "blue circles", "a photo of a green cross"] * 20
    vocab = tokenizer.build_vocabulary(texts, vocab_size=200)
    assert vocab[:5] == tokenizer.RESERVED_TOKENS
    assert {"red", "star", "blue", "photo"} <= set(vocab)
    path = tokenizer.save_vocabulary(vocab, str(tmp_path / "vocab.txt"))
    assert tokenizer.load_vocabulary(path) == vocab


def test_preprocessor_packs_cls_sep_and_pads():
    vocab = tokenizer.RESERVED_TOKENS + ["a", "red", "star", "##s", "blue"]
    pre = tokenizer.TextPreprocessor(vocab, sequence_length=6)
    out = pre(tf.constant(["A Red stars", "blue zebra", "a red star a red star"]))
    ids = {t: i for i, t in enumerate(vocab)}
    np.testing.assert_array_equal(out["token_ids"].numpy(), [
        [ids["[CLS]"], ids["a"], ids["red"], ids["star"], ids["##s"], ids["[SEP]"]],
        [ids["[CLS]"], ids["blue"], ids["[UNK]"], ids["[SEP]"], 0, 0],
        [ids["[CLS]"], ids["a"], ids["red"], ids["star"], ids["a"], ids["[SEP]"]],  # truncated
    ])
    np.testing.assert_array_equal(out["padding_mask"].numpy()[1], [1, 1, 1, 1, 0, 0])
    assert out["segment_ids"].numpy().sum() == 0


def test_missing_or_incomplete_vocabulary_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Vocabulary file not found"):
        tokenizer.TextPreprocessor(str(tmp_path / "nope.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(ValueError, match="lacks required tokens"):
        tokenizer.TextPreprocessor(str(bad))
