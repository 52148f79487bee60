"""Plug-in points: a new kind of thing (objective, …) is one module that registers itself, and the
package picks it up by name from the config with no edit of its own."""

import os

import numpy as np
import pytest
import tensorflow as tf

from align_tf import objectives, trainer
from align_tf.errors import check
from align_tf.objectives import registry
from align_tf.objectives.contrastive import ContrastiveObjective
from test_scale import _tiny_config

VOCAB = 200  # _tiny_config's data.vocab_size


class HalfContrastive(ContrastiveObjective):
    """A toy objective from outside the package: ALIGN's loss with the two directions averaged
    instead of summed (ALBEF's convention), and a check of its own."""

    scalars = ContrastiveObjective.scalars + ("half_loss",)
    # Its config section objective.half_contrastive, added to a config that names it and lacks it.
    defaults = {"label_smoothing": 0.0}
    built_from = None  # the section of the last from_config (the test looks at it)

    @classmethod
    def from_config(cls, section, model, optimizer, **context):
        cls.built_from = section
        return cls(model, optimizer, label_smoothing=section.label_smoothing)

    @classmethod
    def validate(cls, config):
        super().validate(config)  # contrastive's check of label_smoothing, naming this section
        o = config.objective[cls.name]
        check(o.label_smoothing <= 0.5, f"objective.{cls.name}.label_smoothing="
              f"{o.label_smoothing} must be <= 0.5 for {cls.name}")

    def loss_from_embeddings(self, batch, embeddings):
        out = super().loss_from_embeddings(batch, embeddings)
        half = 0.5 * out["loss"]
        return dict(out, loss=half, half_loss=tf.identity(half))


@pytest.fixture
def half_contrastive(monkeypatch):
    """``HalfContrastive`` registered as ``half_contrastive`` for one test (the registry is
    restored after it, so other tests see the package's objectives only)."""
    monkeypatch.setattr(registry, "_OBJECTIVES", dict(registry._OBJECTIVES))  # noqa: SLF001
    registry.register_objective("half_contrastive")(HalfContrastive)
    return "half_contrastive"


def test_objective_registered_outside_the_package_builds_validates_and_trains(half_contrastive):
    assert half_contrastive in objectives.NAMES  # NAMES is read from the registry
    assert objectives.supports_accumulation(half_contrastive)  # inherited from contrastive
    assert objectives.model_similarity(half_contrastive) == "softmax"
    config = _tiny_config(steps=10)
    config.objective.name = half_contrastive
    assert half_contrastive not in config.objective  # configs/base.py knows only the package's
    trainer.validate_config(config)  # adds its section from HalfContrastive.defaults
    assert config.objective.half_contrastive.to_dict() == {"label_smoothing": 0.0}

    # Its own check runs through validate_config, and the inherited one on its own section.
    section = config.objective.half_contrastive
    section.label_smoothing = 0.75
    with pytest.raises(trainer.ConfigError, match=r"^objective.half_contrastive.label_smoothing="
                                                  r"0.75 must be <= 0.5 for half_contrastive$"):
        trainer.validate_config(config)
    section.label_smoothing = 1.5
    with pytest.raises(trainer.ConfigError, match=r"^objective.half_contrastive.label_smoothing="
                                                  r"1.5 must be in \[0, 1\)$"):
        trainer.validate_config(config)
    section.label_smoothing = 0.0

    # What trainer.train (the train CLI's function) does with it: validate_config above, then
    # trainer.build (build_objective from the registry), then train steps. Steps run eagerly on a
    # batch of random pairs: trainer.train's traced loop takes ~20-50 s on a shared CPU.
    model, objective = trainer.build(config, VOCAB)
    assert isinstance(objective, HalfContrastive) and objective.seed == config.seed
    assert HalfContrastive.built_from is config.objective.half_contrastive  # its section only
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(size=(8, 32, 32, 3)).astype(np.float32),
             "text": {"token_ids": rng.integers(5, VOCAB, (8, 16)).astype(np.int32),
                      "padding_mask": np.ones((8, 16), np.int32),
                      "segment_ids": np.zeros((8, 16), np.int32)}}
    objective.optimizer.iterations.assign(1)  # past step 0 of the warmup (learning rate 0)
    losses = []
    for _ in range(3):
        metrics = objective.train_step(batch)
        assert set(metrics) == set(objective.scalars)
        assert float(metrics["half_loss"]) == float(metrics["loss"])
        losses.append(float(metrics["loss"]))
    assert int(objective.optimizer.iterations.numpy()) == 4
    assert float(metrics["skipped_steps"]) == 0 and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]  # it trains


def test_registry_refuses_a_second_class_under_a_taken_name(monkeypatch):
    monkeypatch.setattr(registry, "_OBJECTIVES", dict(registry._OBJECTIVES))  # noqa: SLF001
    with pytest.raises(ValueError, match="'contrastive' is already registered by "
                                         "test_plugins.HalfContrastive|already registered"):
        registry.register_objective("contrastive")(HalfContrastive)
    with pytest.raises(ValueError, match=r"unknown objective.name 'nope'; choose from "
                                         r"\['contrastive', 'momentum_distillation', 'sigmoid', "
                                         r"'albef'\]"):
        objectives.get("nope")


# ------------------------------------------------------------------- evaluator + export signature
# Both run on the run directory written before [house] (tests/fixtures/run_before_house), through
# the functions the evaluate and export CLIs call.

OLD_RUN = os.path.join(os.path.dirname(__file__), "fixtures", "run_before_house")


class PairCosine:
    """A toy evaluator from outside the package: the mean cosine between each image and its own
    captions, and the share of images whose best caption (over the gallery) is one of theirs."""

    needs = "retrieval"
    defaults = {"captions_per_image": 2}

    def __init__(self, data):
        self.data = data

    @classmethod
    def validate(cls, entry, where):
        if entry.captions_per_image < 1:
            raise ValueError(f"{where}.captions_per_image must be >= 1")

    @classmethod
    def from_config(cls, entry, data):
        return cls(data.retrieval(entry))

    def run(self, encoder):
        images, captions, text_to_image, _ = self.data.embed_images(encoder)
        texts = encoder.embed_texts(captions)
        own = np.sum(images[text_to_image] * texts, axis=1)
        best = np.argmax(images @ texts.T, axis=1)
        return {"pair_cosine": float(np.mean(own)),
                "own_caption_top1": float(np.mean(text_to_image[best] == np.arange(len(images))))}


@pytest.fixture
def pair_cosine(monkeypatch):
    from align_tf.evaluation import registry as evaluators
    monkeypatch.setattr(evaluators, "_EVALUATORS", dict(evaluators._EVALUATORS))  # noqa: SLF001
    evaluators.register_evaluator("pair_cosine")(PairCosine)
    return "pair_cosine"


def test_evaluator_registered_outside_the_package_runs_through_the_evaluate_cli(pair_cosine):
    from align_tf import evaluate
    from align_tf.evaluation.embed import load_encoder
    small = dict(synthetic_retrieval_rounds=1, synthetic_examples_per_class=1)
    report = evaluate.evaluate(model_dir=OLD_RUN, datasets="synthetic",
                               tasks=f"{pair_cosine},zeroshot", **small)
    got = report["results"]["synthetic"]
    assert list(got) == ["pair_cosine", "zeroshot"] and report["sources"] == {
        "synthetic": "synthetic"}
    # The same numbers from the model's embeddings directly (NumPy).
    from align_tf.data import sources
    from align_tf.configs import base
    options = base.get_config().eval
    options.update(small)
    options.captions_per_image = 2
    data = sources.get("synthetic").retrieval(options)
    encoder = load_encoder(OLD_RUN, None, None, None, None, 64)
    images, captions, owner, _ = data.embed_images(encoder)
    texts = encoder.embed_texts(captions)
    assert len(captions) == 2 * len(images) == 60
    np.testing.assert_allclose(got["pair_cosine"]["pair_cosine"],
                               np.mean(np.sum(images[owner] * texts, axis=1)), atol=1e-4)
    np.testing.assert_allclose(got["pair_cosine"]["own_caption_top1"],
                               np.mean(owner[np.argmax(images @ texts.T, 1)] == np.arange(30)))
    with pytest.raises(ValueError, match=r"eval\.evaluators\.synthetic_pair_cosine\."
                                         r"captions_per_image must be >= 1"):
        evaluate.evaluate(model_dir=OLD_RUN, tasks=pair_cosine, captions_per_image=0)


def _token_count(parts, texts):
    """A toy export signature from outside the package: each text's number of tokens."""
    tokens = parts.tokenize(texts)
    return {"num_tokens": tf.reduce_sum(tf.cast(tokens["padding_mask"], tf.int32), axis=1)}


def test_signature_registered_outside_the_package_is_served_through_hub_load(tmp_path,
                                                                              monkeypatch):
    import tensorflow_hub as hub

    from align_tf import export
    from align_tf.export import signatures
    monkeypatch.setattr(signatures, "_REGISTRY", dict(signatures._REGISTRY))  # noqa: SLF001
    export.register_signature("token_count", inputs=[export.TEXTS])(_token_count)
    path = export.export_model_dir(OLD_RUN, str(tmp_path / "sm"), templates="simple")
    loaded = hub.load(path)
    assert "token_count" in loaded.signatures
    # The run was written before [house]: its export still embeds (unit-norm text embeddings).
    embedding = loaded.signatures["text_embed"](texts=tf.constant(["a red circle"]))[
        "embeddings"].numpy()
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=-1), 1.0, rtol=1e-5)
    texts = tf.constant(["a red circle", "a blue star on a green background", ""])
    counts = loaded.signatures["token_count"](texts=texts)["num_tokens"].numpy()
    # [CLS] + one token per word + [SEP]: every word is in the run's vocabulary (no word pieces).
    vocab = set(open(os.path.join(OLD_RUN, "vocab.txt")).read().split())
    words = [t.decode().split() for t in texts.numpy()]
    assert all(w in vocab for ws in words for w in ws)
    np.testing.assert_array_equal(counts, [len(ws) + 2 for ws in words])


# ------------------------------------------------------------------------------------ data source


def _toy_source_class():
    """A toy data source from outside the package, spelt ``toy:N``: N captioned images made here
    (image i a flat grey ``10 + 20 * (i % 12)``, captioned ``"item{i} ..."``), as training pairs
    and as a retrieval set."""
    from align_tf.data import sampling, sources

    def images(n, size):
        return np.stack([np.full((size, size, 3), 10 + 20 * (i % 12), np.uint8) for i in range(n)])

    def captions(n):
        return np.array([f"item{i} a grey square number {i}" for i in range(n)], object)

    class Toy(sources.Source):
        takes_argument, argument_name = True, "N"

        @property
        def size(self) -> int:
            return int(self.argument) if self.argument.isdigit() else 0

        def kinds(self, options=None):
            return {sources.PAIRS, sources.RETRIEVAL}

        def validate(self, data):
            super().validate(data)  # data.vocab_path
            if self.size < 1:
                raise ValueError(f"data.name={self.spec!r}: N must be a positive integer")

        def training_stream(self, config, layout, first_batch, input_context=None, stats=None):
            pairs = {"image": images(self.size, config.data.image_size),
                     "caption": captions(self.size)}
            return sampling.sample_arrays(pairs, config.seed, layout, first_batch)

        def retrieval(self, options, download=False):
            def make(image_size):
                return tf.data.Dataset.from_tensor_slices({
                    "image": images(self.size, image_size or 16),
                    "captions": captions(self.size)[:, None]})
            return sources.RetrievalData(f"toy/{self.size}", make, captions_per_image=1)

    return Toy


@pytest.fixture
def toy_source(monkeypatch):
    """``toy`` registered for one test (the registry is restored after it)."""
    from align_tf.data.sources import registry as source_registry
    monkeypatch.setattr(source_registry, "_SOURCES", dict(source_registry._SOURCES))  # noqa: SLF001
    source_registry.register_source("toy")(_toy_source_class())
    return "toy"


def test_data_source_registered_outside_the_package_trains_and_evaluates(toy_source, tmp_path):
    from align_tf.data import sources
    from align_tf.evaluation import runner
    from align_tf.evaluation.embed import encoder_for_model
    from align_tf.tokenizer import build_vocabulary, save_vocabulary
    source = sources.get("toy:8")
    assert (source.name, source.spec, source.argument) == ("toy", "toy:8", "8")
    assert "toy:N" in sources.spellings()
    config = _tiny_config(steps=2)
    config.data.name = "toy:8"
    config.eval.enabled = config.export.enabled = False
    with pytest.raises(trainer.ConfigError, match=r"^data.vocab_path is required for "
                                                  r"data.name='toy:8'"):
        trainer.validate_config(config)
    captions = [f"item{i} a grey square number {i}" for i in range(8)]
    config.data.vocab_path = save_vocabulary(build_vocabulary(captions, vocab_size=VOCAB),
                                             str(tmp_path / "vocab.txt"))
    config.data.name = "toy:x"
    with pytest.raises(trainer.ConfigError, match=r"^data.name='toy:x': N must be a positive"):
        trainer.validate_config(config)
    # (a) Training: the train CLI's function, on the source's stream.
    config.data.name = "toy:8"
    result = trainer.train(config, str(tmp_path / "run"), verbose=0)
    assert int(result.objective.optimizer.iterations.numpy()) == 2
    assert np.isfinite(result.metrics["loss"])
    # (b) Evaluation: the evaluate CLI's functions; the report keys the source by its name.
    plans = runner.plans_from_config(config, datasets="toy:8", tasks="retrieval")
    results = runner.run_plans(encoder_for_model(result.model, result.preprocessor, config),
                               plans)
    retrieval = results["toy"]["retrieval"]
    assert retrieval["num_images"] == 8 and 0 <= retrieval["i2t_R@1"] <= 1
    assert runner.make_report(results, {}, 0.0)["sources"] == {"toy": "toy:8"}
