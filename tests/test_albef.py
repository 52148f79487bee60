"""ALBEF: fusion model, hard negatives, MLM masking, ALBEF-exact ITC-MoD, ITM re-ranking, export."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from align_tf import losses, objectives, trainer
from align_tf.configs import base
from align_tf.evaluation.rerank import rerank_ranks
from align_tf.models.dual_encoder import build_dual_encoder
from align_tf.objectives import albef
from align_tf.run_dir import RunDir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, SEQ, IMAGE = 50, 8, 32
SPECIAL = {"pad": 0, "cls": 2, "sep": 3, "mask": 4}  # tokenizer.RESERVED_TOKENS' layout


def _config(negatives="local", alpha=0.4, queue=0, momentum=0.995):
    c = base.get_config()
    c.model.image_size_name = "nano"
    c.model.text_architecture = {"num_layers": 2, "hidden_dim": 32, "num_heads": 2}
    c.model.fusion_layers = 1
    c.model.max_sequence_length = SEQ
    c.model.drop_connect_rate = 0.0
    c.data.max_tokens = SEQ
    c.objective.name = "albef"
    o = c.objective.albef
    o.itm_negatives, o.alpha, o.alpha_ramp_steps, o.queue_size, o.momentum = (
        negatives, alpha, 0, queue, momentum)
    return c


def _objective(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    config = _config(**kwargs)
    model = build_dual_encoder(config.model, VOCAB)
    return objectives.build_objective(config.objective, model,
                                      keras.optimizers.SGD(learning_rate=0.5))


def _batch(size, seed=0, captions=None, pair_ids=None):
    """Random images and token rows ``[CLS] w… [SEP] [PAD]…``; ``captions[i]`` picks row i's
    caption among ``max(captions) + 1`` distinct ones (repeats = the same caption text)."""
    rng = np.random.default_rng(seed)
    captions = np.arange(size) if captions is None else np.asarray(captions)
    distinct = captions.max() + 1
    lengths = rng.integers(3, SEQ - 1, distinct)
    words = rng.integers(5, VOCAB, (distinct, SEQ))
    ids = np.zeros((distinct, SEQ), np.int32)
    for c in range(distinct):
        ids[c, 0], ids[c, 1:lengths[c] + 1], ids[c, lengths[c] + 1] = 2, words[c, :lengths[c]], 3
    ids = ids[captions]
    batch = {"image": rng.uniform(size=(size, IMAGE, IMAGE, 3)).astype(np.float32),
             "text": {"token_ids": ids, "padding_mask": (ids != 0).astype(np.int32),
                      "segment_ids": np.zeros((size, SEQ), np.int32)}}
    if pair_ids is not None:
        batch["pair_id"] = np.asarray(pair_ids, np.int64)
    return tf.nest.map_structure(tf.constant, batch)


# ------------------------------------------------------------------------------ hard negatives

def test_exclusions_cover_positive_same_caption_and_pair_id():
    tokens = tf.constant([[2, 7, 3], [2, 8, 3], [2, 7, 3], [2, 9, 3]])
    excluded = albef.negative_exclusions(tokens, tokens, tf.range(4),
                                         tf.constant([0, 1, 2, 1]), tf.constant([0, 1, 2, 1]))
    expected = np.array([[1, 0, 1, 0],    # row 2 has row 0's caption
                         [0, 1, 0, 1],    # row 3 has row 1's pair id
                         [1, 0, 1, 0],
                         [0, 1, 0, 1]], bool)
    np.testing.assert_array_equal(excluded.numpy(), expected)


def test_sampling_follows_the_renormalised_softmax():
    """Chi-square goodness of fit of 40,000 draws against softmax over the allowed candidates
    (p > 1e-3), while the uniform distribution over them, and the softmax ignoring the exclusion,
    are rejected on the same draws."""
    logits = np.array([1.5, 0.2, -0.7, 2.5, 0.9, -2.0], np.float32)
    excluded_row = np.array([False, False, False, True, False, False])
    n = 40_000
    index, valid = albef.sample_hard_negatives(
        tf.constant(np.tile(logits, (n, 1))), tf.constant(np.tile(excluded_row, (n, 1))),
        tf.constant([7, 11], tf.int32))
    assert valid.numpy().all()
    counts = np.bincount(index.numpy(), minlength=len(logits))
    assert counts[3] == 0  # never an excluded candidate
    allowed = ~excluded_row
    p = np.exp(logits.astype(np.float64)) * allowed
    p /= p.sum()
    observed = counts[allowed]
    assert stats.chisquare(observed, n * p[allowed]).pvalue > 1e-3
    uniform = np.full(allowed.sum(), n / allowed.sum())
    assert stats.chisquare(observed, uniform).pvalue < 1e-6
    # The full softmax puts ~48% on the excluded candidate: its renormalised rest is different
    # only in scale, so compare the probability of the excluded column instead.
    assert counts[3] == 0 < n * np.exp(logits[3]) / np.exp(logits).sum()


def test_a_query_without_candidates_gets_no_negative():
    index, valid = albef.sample_hard_negatives(tf.zeros([2, 3]), tf.constant(
        [[True, True, True], [True, False, True]]), tf.constant([1, 2], tf.int32))
    assert valid.numpy().tolist() == [False, True]
    assert int(index[1]) == 1


def _check_negatives(negatives, captions, pair_ids, offset, pool_size):
    """Every drawn negative is in the pool, not the positive, not the same caption or pair."""
    for key in ("text", "image"):
        idx, ok = negatives[key].numpy(), negatives[f"{key}_valid"].numpy()
        for i, (j, v) in enumerate(zip(idx, ok)):
            q = offset + i
            if not v:
                continue
            assert 0 <= j < pool_size
            assert j != q and captions[j] != captions[q] and pair_ids[j] != pair_ids[q]


def test_local_negatives_on_one_replica_respect_exclusions():
    objective = _objective()
    # Rows 0/1 share a caption, 2/3 a pair id; row 4's caption appears nowhere else.
    captions = [0, 0, 1, 2, 3, 4, 5, 6]
    pair_ids = [10, 11, 12, 12, 14, 15, 16, 17]
    batch = _batch(8, captions=captions, pair_ids=pair_ids)
    draw = tf.function(lambda b: objective.compute_loss(b, training=False)["itm_negatives"])
    seen = set()
    for step in range(20):
        objective.optimizer.iterations.assign(step)
        negatives = draw(batch)
        _check_negatives(negatives, captions, pair_ids, 0, 8)
        assert negatives["text_valid"].numpy().all()
        seen.update(negatives["text"].numpy().tolist())
    assert len(seen) >= 6  # the draws do vary with the step


@pytest.mark.parametrize("negatives", ["local", "global"])
def test_negative_pool_on_two_replicas(negatives):
    """MirroredStrategy over 2 CPUs, 4 rows each: local negatives come from the replica's own 4
    rows, global ones from all 8 (both replicas' rows are drawn), and none is ever the positive,
    its caption (row 5 repeats row 0's, across replicas) or its pair id (rows 3 and 6)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        objective = _objective(negatives=negatives)
    captions = [0, 1, 2, 3, 4, 0, 6, 7]
    pair_ids = [0, 1, 2, 3, 4, 5, 3, 7]
    batch = _batch(8, captions=captions, pair_ids=pair_ids)

    @tf.function
    def draw(batch):
        data = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.nest.map_structure(
                lambda x: x[ctx.replica_id_in_sync_group * 4:][:4], batch))
        out = strategy.run(lambda b: objective.compute_loss(b, training=False)["itm_negatives"],
                           args=(data,))
        return [strategy.experimental_local_results(out[k]) for k in
                ("text", "text_valid", "image", "image_valid")]

    drawn = {0: set(), 1: set()}
    for step in range(12):
        objective.optimizer.iterations.assign(step)
        results = draw(batch)
        for replica in (0, 1):
            neg = {k: results[i][replica] for i, k in
                   enumerate(("text", "text_valid", "image", "image_valid"))}
            if negatives == "local":
                # Indices into the replica's own batch: shift to global rows to check exclusions.
                shifted = {k: (v + 4 * replica if not k.endswith("valid") else v)
                           for k, v in neg.items()}
                assert np.all(neg["text"].numpy() < 4) and np.all(neg["image"].numpy() < 4)
                _check_negatives(shifted, captions, pair_ids, 4 * replica, 8)
                drawn[replica].update((neg["text"].numpy() + 4 * replica).tolist())
            else:
                _check_negatives(neg, captions, pair_ids, 4 * replica, 8)
                drawn[replica].update(neg["text"].numpy().tolist())
    for replica in (0, 1):
        own = set(range(4 * replica, 4 * replica + 4))
        if negatives == "local":
            assert drawn[replica] <= own
        else:
            assert drawn[replica] - own, "global negatives never came from the other replica"
            assert drawn[replica] & own, "global negatives never came from the replica itself"


def test_global_negatives_from_other_replicas_carry_no_gradient():
    """A gathered candidate row enters the ITM pair as a constant; the replica's own rows keep
    their gradient (``_pick``)."""
    local = tf.constant([[1.0], [2.0]])
    pool = tf.constant([[5.0], [6.0], [1.0], [2.0]])  # replica 1 of 2: offset 2
    with tf.GradientTape() as tape:
        tape.watch(local)
        picked = albef.AlbefObjective._pick(local, tf.stop_gradient(pool),  # noqa: SLF001
                                            tf.constant([0, 3, 1, 2]), 2)
        total = tf.reduce_sum(picked * tf.constant([[1.0], [10.0], [100.0], [1000.0]]))
    np.testing.assert_array_equal(picked.numpy().ravel(), [5, 2, 6, 1])
    np.testing.assert_array_equal(tf.convert_to_tensor(tape.gradient(total, local)).numpy().ravel(),
                                  [1000, 10])


# ------------------------------------------------------------------------------------- MLM

def test_mlm_masking_proportions():
    rng = np.random.default_rng(0)
    n, length, vocab = 3000, 24, 1000
    lengths = rng.integers(2, length - 1, n)
    ids = rng.integers(5, vocab, (n, length)).astype(np.int32)
    positions = np.arange(length)[None, :]
    ids[:, 0] = SPECIAL["cls"]
    ids[positions == lengths[:, None] + 1] = SPECIAL["sep"]
    ids[positions > lengths[:, None] + 1] = SPECIAL["pad"]
    padding = (positions <= lengths[:, None] + 1).astype(np.int32)
    seeds = [tf.constant([s, 0], tf.int32) for s in (1, 2, 3)]
    masked, selected = albef.mask_tokens(ids, padding, seeds, SPECIAL, vocab, 0.15)
    masked, selected = masked.numpy(), selected.numpy()
    words = (ids >= 5) & (padding == 1)
    assert not selected[~words].any()  # never [CLS], [SEP] or padding
    np.testing.assert_array_equal(masked[~selected], ids[~selected])
    rate = selected.sum() / words.sum()
    assert abs(rate - 0.15) < 0.01, rate
    chosen, original = masked[selected], ids[selected]
    as_mask = np.mean(chosen == SPECIAL["mask"])
    kept = np.mean(chosen == original)
    other = np.mean((chosen != original) & (chosen != SPECIAL["mask"]))
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1 - 0.1 / vocab) < 0.015 \
        and abs(other - 0.1) < 0.015, (as_mask, kept, other)
    # Random replacements cover the vocabulary uniformly (not just special ids).
    replaced = chosen[(chosen != original) & (chosen != SPECIAL["mask"])]
    assert replaced.min() < vocab // 10 and replaced.max() > vocab * 9 // 10


def test_special_token_ids_from_a_vocabulary_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["[PAD]"] + [f"[unused{i}]" for i in range(99)]
                              + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    # BERT-base uncased's layout: [PAD] 0, [unused0-98], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103
    assert albef.special_token_ids(str(path)) == {"pad": 0, "cls": 101, "sep": 102, "mask": 103}
    assert albef.special_token_ids("") == SPECIAL
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n")
    with pytest.raises(ValueError, match=r"has no \[MASK\] token"):
        albef.special_token_ids(str(path))


# ------------------------------------------------------------------------------- ITC-MoD

def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("keys", ["momentum", "online"])
def test_itc_mod_keys_and_targets_match_numpy(keys):
    """ALBEF-exact ITC: online queries against the momentum features of the replica's batch plus
    the queue; targets α·softmax(momentum similarities) + (1-α)·one-hot; no label smoothing;
    directions averaged. The momentum towers are moved away from the online ones first, so the
    wrong keys would fail. ``itc_keys="online"``: the logits' keys are the online embeddings
    (+ queue), the targets unchanged."""
    config = _config(alpha=0.4, queue=16)
    config.objective.albef.itc_keys = keys
    keras.utils.set_random_seed(0)
    objective = objectives.build_objective(
        config.objective, build_dual_encoder(config.model, VOCAB), keras.optimizers.SGD(0.5))
    for i, (ema, online) in enumerate(objective.towers.pairs):  # momentum towers ≠ online ones
        if online.trainable:
            ema.assign(online + tf.random.stateless_normal(online.shape, (i, 1)) * 0.05)
    batch = _batch(8, seed=2)
    model = objective.model
    image = model.embed_image(batch["image"]).numpy()
    text = model.embed_text(batch["text"]).numpy()
    image_m, text_m = (x.numpy() for x in objective.towers.embed(batch))
    assert not np.allclose(image_m, image, atol=1e-3)
    iq, tq = objective.state.image_queue.numpy(), objective.state.text_queue.numpy()
    sigma = float(model.clipped_temperature())

    def direction(q, q_m, keys_m, keys_online, queue):
        keys_m = np.concatenate([keys_m, queue])
        logit_keys = keys_m if keys == "momentum" else np.concatenate([keys_online, queue])
        logits = q @ logit_keys.T / sigma
        one_hot = np.eye(keys_m.shape[0])[np.arange(len(q))]
        targets = 0.4 * _softmax(q_m @ keys_m.T / sigma) + 0.6 * one_hot
        return -(targets * np.log(_softmax(logits))).sum(1).mean()

    expected = (direction(image, image_m, text_m, text, tq)
                + direction(text, text_m, image_m, image, iq)) / 2
    out = objective.compute_loss(batch, training=False)
    np.testing.assert_allclose(float(out["loss_itc"]), expected, rtol=2e-5)


# ------------------------------------------------------------------------------ training

def test_train_step_trains_every_part_and_fills_the_queue():
    objective = _objective(queue=16)
    head = [v.numpy() for v in objective.mlm_head.trainable_variables]
    fusion = [v.numpy() for v in objective.model.fusion.trainable_variables]
    step = tf.function(objective.train_step)
    out = step(_batch(8, seed=3))
    for key in ("loss", "loss_itc", "loss_itm", "loss_mlm"):
        assert np.isfinite(float(out[key])), key
    np.testing.assert_allclose(float(out["loss"]),
                               float(out["loss_itc"] + out["loss_itm"] + out["loss_mlm"]),
                               rtol=1e-5)
    assert any(not np.allclose(a, b.numpy()) for a, b in
               zip(head, objective.mlm_head.trainable_variables))
    assert any(not np.allclose(a, b.numpy()) for a, b in
               zip(fusion, objective.model.fusion.trainable_variables))
    assert int(objective.state.queue_pointer.numpy()) == 8
    # The MLM head belongs to the objective: in its checkpointed state, not in the model.
    assert "mlm_head" in objective.state._trackable_children()  # noqa: SLF001
    model_vars = {id(v) for v in objective.model.trainable_variables}
    assert not any(id(v) in model_vars for v in objective.mlm_head.trainable_variables)


def test_itc_alone_trains_only_the_towers():
    config = _config()
    config.objective.albef.itm_weight = config.objective.albef.mlm_weight = 0.0
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config.model, VOCAB)
    objective = objectives.build_objective(config.objective, model, keras.optimizers.SGD(0.1))
    trained = {id(v) for v in objective.trainable_variables}
    towers = model.image_encoder.trainable_variables + model.text_encoder.trainable_variables
    assert all(id(v) in trained for v in towers + [model.temperature])
    assert not any(id(v) in trained for v in model.fusion.trainable_variables
                   + objective.mlm_head.trainable_variables)


def test_config_errors_are_one_line():
    c = _config()
    trainer.validate_config(c)
    for field, value, message in (
            ("objective.albef.itm_negatives", "everywhere", "objective.albef.itm_negatives"),
            ("model.fusion_layers", 2, "model.fusion_layers=2 must be in \\[1, 1\\]"),
            ("model.fusion_layers", 0, "go together"),
            ("objective.albef.mlm_probability", 1.5, "objective.albef.mlm_probability")):
        bad = _config()
        *sections, name = field.split(".")
        node = bad
        for section in sections:
            node = node[section]
        node[name] = value
        with pytest.raises(trainer.ConfigError, match=message):
            trainer.validate_config(bad)


# ------------------------------------------------------------------------------ re-ranking

def test_rerank_on_hand_made_scores():
    """Top-3 by ITC re-ordered by ITM; candidates outside the top 3 keep their ITC place."""
    itc = np.array([[0.9, 0.8, 0.7, 0.6, 0.5],
                    [0.1, 0.2, 0.3, 0.4, 0.5],
                    [0.5, 0.5, 0.1, 0.9, 0.0]])
    itm = np.array([[0.1, 0.2, 0.9, 0.99, 0.0],   # ITM loves 3, but 3 is outside the ITC top 3
                    [0.0, 0.0, 0.9, 0.1, 0.2],
                    [0.3, 0.3, 0.0, 0.1, 0.0]])   # tie 0/1 in ITM: ITC order (index 0 first)
    positives = np.zeros_like(itc, bool)
    positives[0, 3] = True   # ITC rank 3 → stays 3
    positives[1, 2] = True   # ITC rank 2 (order 4,3,2) → ITM puts it first
    positives[2, 1] = True   # ITC order 3,0,1 → ITM order 0,1,3 → rank 1
    calls = []

    def match(q, c):
        calls.append(len(q))
        return itm[q, c]

    ranks = rerank_ranks(itc, positives, 3, match)
    np.testing.assert_array_equal(ranks, [3, 0, 1])
    assert calls == [9]  # only the 3 × top-3 pairs are scored
    np.testing.assert_array_equal(rerank_ranks(itc, positives, 0, match), [3, 2, 2])
    with pytest.raises(ValueError, match="positive"):
        rerank_ranks(itc, np.zeros_like(positives), 3, match)


def test_rerank_ranks_by_the_match_logit_as_albef():
    """ALBEF's Retrieval.py ranks by the raw ITM logit ``itm_head(...)[:, 1]``: logits (0, 2)
    rank above (-5, 1), although softmax ranks them the other way (p = 0.881 vs 0.9975). Through
    ``MatchScorer`` with a stand-in fusion part whose ITM logits are the text states' first two
    entries."""
    import types

    from align_tf.evaluation.embed import KerasEncoder
    from align_tf.evaluation.rerank import MatchScorer
    fusion = types.SimpleNamespace(match_logits=lambda states, masks, tokens: states[:, 0, :2])
    encoder = KerasEncoder(types.SimpleNamespace(fusion=fusion), preprocessor=None, image_size=8)
    states = np.array([[[0.0, 2.0]], [[-5.0, 1.0]]], np.float32)  # candidates 0 and 1
    itc = np.array([[0.1, 0.9]])  # ITC puts candidate 1 first; candidate 0 is the positive
    positives = np.array([[True, False]])

    def ranks(scorer):
        def match(q, c):
            return scorer.match(np.zeros((len(c), 1, 1), np.float32), states[c], np.ones(
                (len(c), 1), bool))
        return rerank_ranks(itc, positives, 2, match)

    np.testing.assert_array_equal(ranks(MatchScorer(encoder)), [0])
    np.testing.assert_array_equal(ranks(MatchScorer(encoder, match_score="probability")), [1])
    with pytest.raises(ValueError, match="match_score"):
        MatchScorer(encoder, match_score="prob")


# --------------------------------------------------------------------- run dir, evaluate, export

@pytest.fixture(scope="module")
def albef_run(tmp_path_factory):
    """A model-only run directory of a random tiny ALBEF model."""
    from align_tf.tokenizer import build_vocabulary
    root = tmp_path_factory.mktemp("albef")
    config = _config()
    config.data.image_size = IMAGE
    config.data.max_tokens = SEQ
    config.eval.synthetic_retrieval_rounds = 1
    config.eval.synthetic_examples_per_class = 2
    config.eval.captions_per_image = 2
    config.eval.batch_size = 64
    config.export.templates = "simple"
    vocab = build_vocabulary(["a red circle", "a blue star", "green square", "junk text"],
                             vocab_size=60)
    keras.utils.set_random_seed(3)
    model = build_dual_encoder(config.model, len(vocab))
    # A visibly non-trivial ITM head, so the probabilities differ across pairs.
    model.fusion.itm_head.kernel.assign(tf.random.stateless_normal(
        model.fusion.itm_head.kernel.shape, seed=(1, 2)) * 3.0)
    run = str(root / "run")
    RunDir(run).save_model(model, config, vocab)
    return run, config


def test_evaluate_reports_itc_and_reranked_metrics(albef_run):
    from align_tf.evaluation import runner
    from align_tf.evaluation.embed import load_encoder
    run, config = albef_run
    encoder = load_encoder(run)
    plans = runner.plans_from_config(config, tasks="retrieval,zeroshot", rerank_k=4)
    results = runner.run_plans(encoder, plans)["synthetic"]
    plain = runner.run_plans(encoder, runner.plans_from_config(config, tasks="retrieval"))
    for key, value in plain["synthetic"]["retrieval"].items():  # same ITC numbers as `retrieval`
        assert results["retrieval"][key] == pytest.approx(value, abs=1e-6), key
    for key in ("rerank_i2t_R@1", "rerank_t2i_R@5", "rerank_heldout_top1", "heldout_top1"):
        task = "retrieval" if "R@" in key else "zeroshot"
        assert 0.0 <= results[task][key] <= 1.0


def test_evaluate_cli_refuses_rerank_with_a_savedmodel(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "align_tf.evaluate", f"--savedmodel={tmp_path}",
                           "--rerank_k=8"], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "align_tf.evaluate: error: --rerank_k needs --model_dir")


CONSUMER = r'''
import importlib.abc, json, sys, types


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("align_tf", "keras_hub"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _Block())
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401
try:
    import tensorflow_hub as hub
except ModuleNotFoundError as e:  # tensorflow_hub 0.16.1 needs pkg_resources (tensorflow/hub#934)
    from packaging.version import parse as parse_version
    sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse_version)
    import tensorflow_hub as hub

path, in_path, out_path = sys.argv[1:4]
images = np.load(in_path)["images"]
texts = json.load(open(in_path + ".json"))
m = hub.load(path)
sig = m.signatures["image_text_match"](images=tf.constant(images), texts=tf.constant(texts))
attr = m.image_text_match(tf.constant(images), tf.constant(texts))
errors = {}
for name, args in (("mismatch", (images, texts[:1])), ("range", (images * 255, texts))):
    try:
        m.image_text_match(tf.constant(args[0]), tf.constant(args[1]))
        errors[name] = ""
    except tf.errors.InvalidArgumentError as e:
        errors[name] = e.message
empty = m.image_text_match(tf.zeros([0, 20, 20, 3]), tf.constant([], tf.string))
json.dump({"signatures": sorted(m.signatures), "sig": sig["match_probability"].numpy().tolist(),
           "attr": attr["match_probability"].numpy().tolist(), "errors": errors,
           "empty": list(empty["match_probability"].shape),
           "align_tf": "align_tf" in sys.modules}, open(out_path, "w"))
'''


@pytest.mark.slow  # export + a fresh interpreter: ~35 s quiet, 135 s on the loaded machine
def test_image_text_match_through_hub_load_without_align_tf(albef_run, tmp_path):
    from align_tf import export, run_dir
    from align_tf.data.preprocessing import ImagePreprocessor
    run, config = albef_run
    out = export.export_model_dir(run, str(tmp_path / "savedmodel"))
    model, preprocessor, _ = run_dir.load_model(run)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 40, 50, 3)).astype(np.float32)
    texts = ["a red circle", "a blue star", "junk"]
    np.savez(tmp_path / "in.npz", images=images)
    (tmp_path / "in.npz.json").write_text(json.dumps(texts))
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    proc = subprocess.run([sys.executable, "-I", str(script), out, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.json")], capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    assert not report["align_tf"]
    assert report["signatures"] == ["image_embed", "image_embed_encoded", "image_text_match",
                                    "text_embed", "zero_shot_classify"]
    pixels = tf.stack([ImagePreprocessor(IMAGE)(im, training=False) for im in images])
    expected = model.fusion.match_probability(pixels, preprocessor(tf.constant(texts))).numpy()
    np.testing.assert_allclose(report["sig"], expected, atol=1e-5)
    np.testing.assert_allclose(report["attr"], expected, atol=1e-5)
    assert np.ptp(expected) > 1e-3  # the comparison means something
    assert "one text per image" in report["errors"]["mismatch"]
    assert "pixels in [0, 1]" in report["errors"]["range"]
    assert report["empty"] == [0]


def test_itm_weight_zero_trains_on_two_replicas():
    """``itm_weight=0, mlm_weight=1`` on 2 replicas (MirroredStrategy): the ITM head gets no
    gradient, so it is not trained (before, its ``None`` gradients reached the all-reduce and the
    step failed), the MLM head is; σ above ALBEF's 0.5 comes back to it after the update, on
    every replica. All three weights 0 is a one-line ConfigError."""
    config = _config()
    config.objective.albef.itm_weight, config.objective.albef.mlm_weight = 0.0, 1.0
    config.model.temperature_init, config.model.max_temperature = 0.07, 0.5
    # A two-block image tower and 16-pixel images: the step on two replicas is the test's time.
    config.model.image_architecture = dict(
        width=0.25, depth=1.0, drop_connect_rate=0.0, kernel_sizes=[3, 3], in_channels=[32, 16],
        out_channels=[16, 24], strides=[1, 2], repeats=[1, 1], expand_ratios=[1, 6])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_dual_encoder(config.model, VOCAB)
        objective = objectives.build_objective(config.objective, model,
                                               keras.optimizers.SGD(learning_rate=0.5))
    trained = {id(v) for v in objective.trainable_variables}
    assert not any(id(v) in trained for v in model.fusion.itm_head.trainable_variables)
    model.temperature.assign(0.9)
    head = [v.numpy() for v in objective.mlm_head.trainable_variables]
    batch = dict(_batch(8, seed=3))
    batch["image"] = batch["image"][:, :16, :16]
    data = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.nest.map_structure(
            lambda x: x[ctx.replica_id_in_sync_group * 4:][:4], batch))
    # Eager (tracing ALBEF on two replicas costs ~8 s); the None reached the all-reduce either way.
    out = strategy.run(objective.train_step, args=(data,))
    assert np.isfinite(float(strategy.reduce("MEAN", out["loss"], axis=None)))
    assert int(objective.optimizer.iterations.numpy()) == 1  # applied, not skipped
    assert any(not np.allclose(a, b.numpy()) for a, b in
               zip(head, objective.mlm_head.trainable_variables))
    for copy in strategy.experimental_local_results(model.temperature.value):
        assert float(copy) == 0.5

    config.objective.albef.mlm_weight = config.objective.albef.itc_weight = 0.0
    with pytest.raises(trainer.ConfigError, match="all 0: no loss, so no gradient"):
        trainer.validate_config(config)
