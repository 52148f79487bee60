"""Fine-tuning (issue 19): classification with frozen BatchNorm statistics, LiT, retrieval, resume,
the ``classify`` export through ``hub.load`` without align_tf, TFDS sets, and bad ``--init``.

Everything starts from one tiny random "init" run directory (nano towers, 32 px, BatchNorm moving
statistics and text weights randomised so that restoring them is visible).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from align_tf import finetune, run_dir
from align_tf.configs import base, finetune_classification, finetune_lit, finetune_retrieval
from align_tf.data import synthetic
from align_tf.data.preprocessing import ImagePreprocessor
from align_tf.data.sources import synthetic as synthetic_source
from align_tf.evaluation.embed import load_encoder
from align_tf.evaluation.zero_shot import ZeroShotEvaluator, class_embeddings
from align_tf.models.dual_encoder import build_dual_encoder
from align_tf.prompts import get_templates
from align_tf.tokenizer import build_vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")


def _randomize(model):
    """test_export's weights a fresh init lacks (distinct text embeddings, BatchNorm variances),
    plus moving means and σ, so that restoring them is visible."""
    from test_export import _randomize as randomize_towers
    randomize_towers(model)
    for i, v in enumerate(model.image_encoder.non_trainable_variables):
        if v.path.endswith("moving_mean"):
            v.assign(tf.random.stateless_normal(v.shape, seed=(6, i)) * 1e-3)
    model.temperature.assign(0.07)


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("init") / "run")
    config = base.get_config()
    config.model.image_size_name = config.model.text_size_name = "nano"
    config.data.image_size = SIZE
    captions = synthetic.make_pairs(200, 16, seed=0)["caption"] + \
        [synthetic.class_name(p) for p in synthetic.CLASSES]
    vocab = build_vocabulary(captions, vocab_size=200)
    model = build_dual_encoder(config.model, len(vocab))
    _randomize(model)
    run_dir.RunDir(path).save_model(model, config, vocab)
    return path


def _config(preset, init, task, dataset=None, **fields):
    config = finetune.make_config(preset.get_config(), init, task, dataset)
    config.train.batch_size, config.train.steps_per_loop = 8, 1
    config.eval.synthetic_examples_per_class = 2  # 60 images per split
    config.eval.synthetic_retrieval_rounds = 1
    config.data.num_train_examples = 64
    for name, value in fields.items():
        section, field = name.split("__")
        config[section][field] = value
    return config


def _weights(variables):
    return {v.path: np.array(v.numpy()) for v in variables}


@pytest.fixture(scope="module")
def classification(init_dir, tmp_path_factory):
    """4 classification steps (checkpoints at 2 and 4), evaluated and exported."""
    out = str(tmp_path_factory.mktemp("cls") / "run")
    config = _config(finetune_classification, init_dir, "classification", train__steps=4,
                     train__checkpoint_every=2, train__log_every=2)
    result = finetune.finetune(config, out, verbose=0)
    return {"dir": out, "config": config, "result": result, "model": result["train"].model}


def test_classification_freezes_batchnorm_statistics_and_trains_every_weight(init_dir,
                                                                            classification):
    init, _, _ = run_dir.load_model(init_dir)
    before = _weights(init.image_encoder.weights)
    after = _weights(classification["model"].image_encoder.weights)
    assert before.keys() == after.keys()
    stats = [k for k in before if "moving_" in k]
    gamma_beta = [k for k in before if k.endswith(("gamma", "beta"))]
    assert len(stats) > 10 and len(gamma_beta) == len(stats)
    for k in stats:  # bit-equal: BatchNorm ran in inference mode in every step
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert all(not np.array_equal(after[k], before[k]) for k in gamma_beta)
    assert not np.array_equal(after["stem_conv/kernel"], before["stem_conv/kernel"])
    report = json.load(open(os.path.join(classification["dir"], "eval.json")))
    metrics = report["results"]["synthetic"]["finetune"]
    assert metrics["num_examples"] == 60 and 0 <= metrics["heldout_top1"] <= 1


def test_zero_shot_head_reproduces_zero_shot_accuracy_at_step_0(init_dir):
    config = _config(finetune_classification, init_dir, "classification")
    task = finetune.ClassificationTask(config)
    _, objective = task.build(config, 200)
    task.initialize(objective)
    classifier = objective.model
    step0 = finetune.classifier_accuracy(classifier, config)

    # Independently: the init model's zero-shot evaluator on the same test images and prompts.
    encoder = load_encoder(model_dir=init_dir)
    test = synthetic_source.synthetic_classification("test", 2, config.eval.synthetic_seed)
    templates = get_templates("auto", "synthetic")
    zero_shot = ZeroShotEvaluator(test, templates, groups=synthetic_source.synthetic_groups()).run(encoder)
    for key in ("top1", "top5", "heldout_top1", "seen_top1"):
        assert step0[key] == zero_shot[key], key
    # Logits: the zero-shot cosines / σ, from NumPy on the init model's embeddings.
    emb, _ = test.embed_images(encoder)
    classes = class_embeddings(encoder.embed_texts, list(test.classnames), templates)
    images = np.stack([ImagePreprocessor(SIZE)(im, training=False).numpy()
                       for im in synthetic_source.synthetic_arrays(
                           config.eval.synthetic_seed, 2, SIZE)["image"][:8]])
    np.testing.assert_allclose(classifier(images).numpy(), emb[:8] @ classes.T / 0.07,
                               rtol=1e-4, atol=1e-4)


def test_resume_continues_to_the_same_weights(classification, tmp_path):
    resumed = str(tmp_path / "run")
    shutil.copytree(classification["dir"], resumed)
    ckpt = os.path.join(resumed, "checkpoints")
    for name in os.listdir(ckpt):  # back to the state after step 2
        if name.startswith("ckpt-4") or name == "checkpoint":
            os.remove(os.path.join(ckpt, name))
    config = classification["config"].copy_and_resolve_references()
    config.eval.enabled = config.export.enabled = False  # what follows training is tested above
    model = finetune.finetune(config, resumed, verbose=0)["train"].model
    assert run_dir.RunDir(resumed).latest_checkpoint().endswith("ckpt-4")
    want = _weights(classification["model"].weights)
    for k, v in _weights(model.weights).items():
        np.testing.assert_allclose(v, want[k], atol=1e-6, err_msg=k)


CONSUMER = r'''
import importlib.abc, json, sys, types


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("align_tf", "keras_hub"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)


sys.meta_path.insert(0, _Block())
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401
try:
    import tensorflow_hub as hub
except ModuleNotFoundError as e:  # tensorflow/hub#934: pkg_resources gone from setuptools >= 82
    from packaging.version import parse as parse_version
    sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse_version)
    import tensorflow_hub as hub

classifier_path, align_path, in_path, out_path = sys.argv[1:5]
images = np.load(in_path)
m = hub.load(classifier_path)
out = {k: v.numpy() for k, v in m.signatures["classify"](images=tf.constant(images)).items()}
out["embeddings"] = m.image_embed(tf.constant(images))["embeddings"].numpy()
report = {"signatures": sorted(m.signatures),
          "class_names": [n.decode() for n in m.class_names.numpy()],
          "asset": open(m.class_names_file.asset_path.numpy().decode()).read().splitlines()}

# The documented consumer-side workaround for Keras 3 optimizers with slots on TFSMLayer weights.
import keras


class AdamW(keras.optimizers.AdamW):
    def add_variable(self, *args, name=None, **kwargs):
        return super().add_variable(*args, name=name and name.replace(":", "_"), **kwargs)


tower = keras.layers.TFSMLayer(align_path, call_endpoint="image_tower", trainable=True)
x = keras.Input((32, 32, 3))
model = keras.Model(x, keras.layers.Dense(3)(tower(x)))
before = [np.array(v.numpy()) for v in tower.trainable_weights]
model.compile(AdamW(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(images[:6], np.array([0, 1, 2, 0, 1, 2]), epochs=2, verbose=0)
report["tfsm_adamw"] = {
    "losses": [float(v) for v in history.history["loss"]],
    "changed": sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, tower.trainable_weights)),
    "num_trainable": len(before)}
report["modules"] = {k: k in sys.modules for k in ("align_tf", "keras_hub")}
np.savez(out_path, **out)
json.dump(report, open(out_path + ".json", "w"))
'''


def test_classify_export_loads_without_align_tf_and_tfsm_layer_trains_with_adamw(
        classification, init_dir, tmp_path):
    from align_tf.export import export_model_dir
    align_path = export_model_dir(init_dir, str(tmp_path / "align"), templates="simple")
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(6, 32, 32, 3)).astype(np.float32)
    images[:3] = np.stack([synthetic.render(p, 40, rng)[0][4:36, 4:36] / 255.0
                           for p in synthetic.CLASSES[:3]])
    in_path, out_path = str(tmp_path / "in.npy"), str(tmp_path / "out.npz")
    np.save(in_path, images)
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    proc = subprocess.run([sys.executable, "-I", str(script),
                           os.path.join(classification["dir"], "savedmodel"), align_path,
                           in_path, out_path], capture_output=True, text=True, env=ENV,
                          timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(out_path + ".json"))
    out = dict(np.load(out_path))
    names = [synthetic.class_name(p) for p in synthetic.CLASSES]
    assert report["modules"] == {"align_tf": False, "keras_hub": False}
    assert report["signatures"] == ["classify", "image_embed"]
    assert report["class_names"] == names and report["asset"] == names

    classifier = classification["model"]
    want = classifier(images).numpy()  # already 32 px: the evaluation preprocessing is identity
    np.testing.assert_allclose(out["logits"], want, atol=1e-4)
    e = np.exp(want - want.max(1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], e / e.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(out["embeddings"], classifier.embed_image(images).numpy(),
                               atol=1e-5)
    tfsm = report["tfsm_adamw"]
    assert all(np.isfinite(tfsm["losses"])) and tfsm["changed"] == tfsm["num_trainable"] > 10


def test_lit_locks_the_image_tower_and_trains_a_fresh_text_tower(init_dir, tmp_path):
    config = _config(finetune_lit, init_dir, "lit", train__steps=3, eval__enabled=False,
                     export__enabled=False)
    result = finetune.finetune(config, str(tmp_path / "lit"), verbose=0)["train"]
    init, _, _ = run_dir.load_model(init_dir)
    model = result.model
    before, after = _weights(init.image_encoder.weights), _weights(model.image_encoder.weights)
    for k in before:  # every weight and statistic of the locked tower, bit for bit
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    # The optimizer holds no slot for the locked tower.
    slots = {v.path for v in result.objective.optimizer.variables}
    assert not any("stem_conv" in s or "block1a" in s for s in slots)
    text_before = _weights(init.text_encoder.weights)
    text_after = _weights(model.text_encoder.weights)
    assert sum(not np.allclose(text_after[k], text_before[k], atol=0.05) for k in text_before) \
        > len(text_before) // 2  # fresh, not the init's (which were randomised to N(0, 0.2²))
    assert abs(float(model.temperature.numpy()) - 0.07) < 0.01  # σ from --init, then trained


def _mock_captions(self, split, **kwargs):
    """A TFDS caption set as the trainer reads it (images undecoded): 12 PNGs, 5 captions each."""
    pairs = synthetic.CLASSES[:12]
    images = [tf.io.encode_png(synthetic.render(p, 40, np.random.default_rng(i))[0]).numpy()
              for i, p in enumerate(pairs)]

    def gen():
        for image, pair in zip(images, pairs):
            yield {"image": image, "captions": {
                "text": [f"a {synthetic.class_name(pair)} {j}" for j in range(5)]}}

    return tf.data.Dataset.from_generator(gen, output_signature={
        "image": tf.TensorSpec((), tf.string),
        "captions": {"text": tf.TensorSpec((None,), tf.string)}})


@pytest.mark.slow
def test_retrieval_starts_from_init_with_its_objective_on_a_tfds_caption_set(init_dir, tmp_path):
    import tensorflow_datasets as tfds
    config = _config(finetune_retrieval, init_dir, "retrieval", "tfds:coco_captions",
                     train__steps=2, export__enabled=False, eval__tasks="retrieval")
    assert config.data.name == "tfds:coco_captions"
    assert config.objective.to_dict() == run_dir.load_config(init_dir).objective.to_dict()
    with tfds.testing.mock_data(as_dataset_fn=_mock_captions):
        out = finetune.finetune(config, str(tmp_path / "ret"), verbose=0)
    init, _, _ = run_dir.load_model(init_dir)
    model = out["train"].model
    assert "i2t_R@1" in out["eval"]["results"]["synthetic"]["retrieval"]
    # Started from the init's weights: after 2 small steps every trained weight is still close
    # (BatchNorm's moving statistics move freely in training mode).
    before, after = _weights(init.trainable_weights), _weights(model.trainable_weights)
    diffs = [np.max(np.abs(after[k] - before[k])) for k in before]
    assert max(diffs) < 0.01 and max(diffs) > 0


def test_retrieval_with_another_objective_starts_its_towers_from_init(init_dir):
    """finetune.objective=sigmoid on a softmax --init (as for converted align-base): the sigmoid
    objective and model, both towers restored from --init, t′ and b at their inits."""
    from align_tf import trainer
    preset = finetune_retrieval.get_config()
    preset.finetune.objective = "sigmoid"
    config = finetune.make_config(preset, init_dir, "retrieval")
    assert (config.objective.name, config.model.similarity) == ("sigmoid", "sigmoid")
    finetune.validate(config)
    init_model, preprocessor, _ = run_dir.load_model(init_dir)
    model, objective = trainer.build(config, preprocessor.vocabulary_size)
    finetune.DualEncoderTask(config).initialize(objective)
    for tower in ("image_encoder", "text_encoder"):
        for a, b in zip(getattr(model, tower).weights, getattr(init_model, tower).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert float(tf.exp(model.log_logit_scale)) == pytest.approx(10.0)
    assert float(model.logit_bias) == -10.0
    preset.finetune.task = "lit"
    with pytest.raises(trainer.ConfigError, match="applies to --task=retrieval only"):
        finetune.validate(finetune.make_config(preset, init_dir, "lit"))


def test_tfds_classification_set_through_mock_data(init_dir, tmp_path):
    import tensorflow_datasets as tfds
    config = _config(finetune_classification, init_dir, "classification", train__steps=2,
                     export__enabled=False, finetune__dataset="tfds:cifar10",
                     eval__max_train_examples=16, eval__max_examples=12)
    with tfds.testing.mock_data(num_examples=20):
        out = finetune.finetune(config, str(tmp_path / "cifar"), verbose=0)
    assert out["train"].model.num_classes == 10
    metrics = out["eval"]["results"]["cifar10"]["finetune"]
    assert metrics["num_examples"] == 12 and 0 <= metrics["top1"] <= 1


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "align_tf.finetune", *args],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    return proc.returncode, proc.stderr.strip().splitlines()


def test_bad_init_is_a_one_line_error(init_dir, classification, tmp_path):
    preset = finetune_classification.get_config()
    with pytest.raises(finetune.InitError, match="does not exist"):
        finetune.make_config(preset, str(tmp_path / "missing"), "classification")
    with pytest.raises(finetune.InitError, match="is a SavedModel; fine-tuning starts from a run"):
        finetune.make_config(preset, os.path.join(classification["dir"], "savedmodel"),
                             "classification")
    # A config.json that names another architecture than its checkpoint holds.
    wrong = str(tmp_path / "wrong")
    shutil.copytree(init_dir, wrong)
    config = json.load(open(os.path.join(wrong, "config.json")))
    config["model"]["image_size_name"] = "tiny"
    json.dump(config, open(os.path.join(wrong, "config.json"), "w"))
    code, err = _cli(f"--init={wrong}", "--task=classification",
                     f"--model_dir={tmp_path / 'out'}", "--config.train.steps=1")
    # The only lines of ours: TensorFlow's C++ start-up lines come before absl initialises.
    ours = [line for line in err if not line.startswith(("I0000", "W0000", "E0000", "WARNING: All"))]
    assert code != 0 and len(ours) == 1 and ours[0].startswith(
        "align_tf.finetune: error: cannot restore the model from"), ours
    # Resuming a model_dir fine-tuned from another architecture.
    with pytest.raises(Exception, match="another architecture"):
        finetune.check_model_dir(finetune.make_config(preset, wrong, "classification"),
                                 classification["dir"])


@pytest.mark.slow
def test_classification_on_two_replicas_equals_one_device(init_dir, tmp_path):
    """MirroredStrategy over 2 CPU devices: the same global batch, gradients all-reduced, so plain
    SGD reaches the one-device weights."""
    config = _config(finetune_classification, init_dir, "classification", train__steps=2,
                     eval__enabled=False, export__enabled=False, optim__name="sgd",
                     optim__learning_rate=0.5, optim__warmup_steps=0)
    one = finetune.finetune(config, str(tmp_path / "one"), verbose=0)["train"].model
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    two = finetune.finetune(config, str(tmp_path / "two"), strategy, verbose=0)["train"].model
    init, _, _ = run_dir.load_model(init_dir)
    moved = _weights(init.image_encoder.trainable_weights)
    want = _weights(one.weights)
    for k, v in _weights(two.weights).items():
        np.testing.assert_allclose(v, want[k], atol=1e-5, err_msg=k)
    assert not np.array_equal(want["stem_conv/kernel"], moved["stem_conv/kernel"])


def test_cosine_schedule_of_the_vtab_preset():
    from align_tf import optim, trainer
    from align_tf.configs import finetune_vtab
    schedule = optim.WarmupCosineDecay(1e-3, 10, 110)
    steps = np.arange(0, 120)
    want = 1e-3 * np.where(steps < 10, steps / 10,
                           0.5 * (1 + np.cos(np.pi * np.clip((steps - 10) / 100, 0, 1))))
    np.testing.assert_allclose([float(schedule(k)) for k in steps], want, rtol=1e-5, atol=1e-10)
    config = finetune_vtab.get_config()
    optimizer = optim.build_optimizer(config.optim, config.train.steps)
    assert isinstance(optimizer._learning_rate, optim.WarmupCosineDecay)  # noqa: SLF001
    assert (config.finetune.image_size, config.finetune.eval_image_size) == (289, 360)
    config.optim.schedule = "step"
    with pytest.raises(trainer.ConfigError, match="unknown optim.schedule 'step'"):
        trainer.validate_config(config)
