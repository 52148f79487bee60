"""The task hooks of ``align_tf.finetune``: what ``trainer.train`` runs instead of its own steps
(``trainer.TrainHooks``) for each ``--task``.

* ``ClassificationTask``: an ``ImageClassifier`` on the ``--init`` image tower, trained on the
  labelled images of ``finetune.dataset`` (a data source, ``align_tf.data.sources``: the same
  ``ClassificationData`` the evaluators read), scored on its test split (``classifier_accuracy``).
* ``DualEncoderTask``: LiT (a locked image tower) and retrieval (both towers) on the trainer's
  own data (``data.name``).
"""

from __future__ import annotations

import time

TOPK = (1, 5)  # the classifier's top-k accuracies (as the zero-shot evaluator's)


def _init_checkpoint(config) -> str:
    from align_tf.run_dir import RunDir
    return RunDir(config.finetune.init).latest_checkpoint()


def finetune_source(config):
    """The data source of ``finetune.dataset`` (``align_tf.data.sources``)."""
    from align_tf.data import sources
    return sources.get(config.finetune.dataset, field="finetune.dataset")


def _classification_data(config, train: bool):
    """``finetune.dataset``'s labelled images: its fit split (synthetic: the linear probe's
    images) or its test split (synthetic: the zero-shot test images), as evaluation reads them."""
    return finetune_source(config).classification(config.eval, train, download=False)


def _optimizer(config, model):
    """The config's optimizer, built for ``model``'s trainable variables (as ``trainer.build``)."""
    from align_tf import optim
    optimizer = optim.build_optimizer(config.optim, config.train.steps)
    optimizer.build(model.trainable_variables)
    return optimizer


def _eval_sizes(config) -> tuple:
    f = config.finetune
    if f.eval_image_size:
        return f.eval_image_size, f.eval_resize_size
    return config.data.image_size, config.data.resize_size


class ClassificationTask:
    """Hooks of ``trainer.train`` for ``--task=classification``."""

    def __init__(self, config):
        self.config = config
        try:
            self.train_data = _classification_data(config, True)
        except ValueError as e:
            from align_tf.trainer import ConfigError
            raise ConfigError(f"finetune.dataset: {e}") from None
        self.class_names = self.train_data.classnames

    def hooks(self):
        from align_tf import trainer
        return trainer.TrainHooks(prepare_inputs=self.prepare_inputs, build=self.build,
                                  dataset_fn=self.dataset_fn, initialize=self.initialize)

    def prepare_inputs(self, config, run, chief, resuming):
        from align_tf import trainer
        preprocessor = trainer.make_preprocessor(config, run, write=chief)
        if chief:
            run.save_config(config)
        return None, preprocessor

    def build(self, config, vocabulary_size):
        from align_tf.models.classifier import ImageClassifier
        from align_tf.models.dual_encoder import build_dual_encoder
        from align_tf.objectives.classification import ClassificationObjective
        # The tower exactly as the init run built it (sizes, BatchNorm groups, fused kernels).
        tower = build_dual_encoder(config.model, vocabulary_size).image_encoder
        model = ImageClassifier(tower, len(self.class_names), name="classifier")
        objective = ClassificationObjective(model, _optimizer(config, model),
                                            config.finetune.label_smoothing)
        objective.seed = int(config.seed)
        return model, objective

    def initialize(self, objective):
        """The init run's image tower; the head from its zero-shot classifier (or zeros)."""
        import keras

        from align_tf import prompts, run_dir
        from align_tf.evaluation.embed import encoder_for_model
        from align_tf.evaluation.zero_shot import class_embeddings
        classifier, config = objective.model, self.config
        run_dir.restore_model(classifier, _init_checkpoint(config), parts=("image_encoder",))
        if config.finetune.head_init == "zeros":
            for v in classifier.head.weights:
                v.assign(keras.ops.zeros(v.shape, v.dtype))
            return
        policy = keras.config.dtype_policy()
        dual, preprocessor, init_config = run_dir.load_model(config.finetune.init)
        keras.config.set_dtype_policy(policy)  # load_model builds in float32
        encoder = encoder_for_model(dual, preprocessor, init_config)
        templates = prompts.get_templates(config.finetune.templates,
                                         finetune_source(config).prompt_name)
        emb = class_embeddings(encoder.embed_texts, list(self.class_names), templates)
        bias = float(dual.logit_bias) if dual.similarity == "sigmoid" else 0.0
        classifier.initialize_head(emb, float(dual.logit_scale()), bias)

    def dataset_fn(self, config, preprocessor, pairs, read_stats, batches_done, wrap_inputs=None):
        """Streamed if the source streams labelled examples (TFDS), else read by index from
        memory (the synthetic classes, rendered at ``data.image_size``)."""
        from align_tf.data import labelled
        examples = finetune_source(config).labelled_examples(config.eval)
        source = {"examples": examples} if examples is not None else \
            {"arrays": self.train_data.arrays(config.data.image_size)}
        return labelled.train_dataset_fn(
            config.train.batch_size, config.seed, config.data.image_size, config.data.resize_size,
            batches_done, shuffle_buffer=config.finetune.shuffle_buffer,
            flip=config.data.random_flip, **source)

    def evaluate(self, classifier, model_dir: str) -> dict:
        """Top-1/top-5 of the classifier on the test split (synthetic: also over the held-out
        and the seen pairs) → ``{model_dir}/eval.json``; returns the report."""
        from align_tf.evaluation import runner
        from align_tf.run_dir import RunDir
        start = time.time()
        metrics = classifier_accuracy(classifier, self.config)
        info = {"model_dir": model_dir, "task": "classification",
                "init": self.config.finetune.init, "train_steps": self.config.train.steps}
        source = finetune_source(self.config)
        report = runner.make_report({source.results_key: {"finetune": metrics}}, info,
                                    time.time() - start)
        report["sources"] = {source.results_key: source.spec}  # the full spelling beside it
        RunDir(model_dir).write_eval(report)
        return report

    def export(self, classifier, path: str) -> str:
        from align_tf.export import export_classifier
        image_size, resize_size = _eval_sizes(self.config)
        return export_classifier(classifier, self.class_names, path, image_size=image_size,
                                 resize_size=resize_size, config=self.config)


def classifier_logits(classifier, data, image_size: int, resize_size: int | None,
                      batch_size: int) -> tuple:
    """``(logits (N, C), labels (N,))`` of ``classifier`` on a ``ClassificationData``, its images
    preprocessed as the evaluators' (centre crop at ``image_size`` after ``resize_size``)."""
    import numpy as np
    import tensorflow as tf

    from align_tf.data.preprocessing import ImagePreprocessor
    images = ImagePreprocessor(image_size, resize_size)
    predict = tf.function(lambda x: classifier(x, training=False), input_signature=[
        tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
    ds = data.examples(image_size).map(
        lambda ex: {"image": images(ex["image"], training=False), "label": ex["label"]},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size).prefetch(2)
    logits, labels = [], []
    for batch in ds:
        logits.append(predict(batch["image"]).numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(logits).astype(np.float32), np.concatenate(labels).astype(np.int64)


def classifier_accuracy(classifier, config) -> dict:
    """Top-k accuracy of ``classifier`` on ``finetune.dataset``'s test split, images at the
    evaluation preprocessing (``finetune.eval_image_size``, else ``data.image_size``), as the
    zero-shot evaluator scores them; plus the source's label groups (synthetic:
    ``heldout_top*`` / ``seen_top*``)."""
    import numpy as np

    from align_tf.evaluation.zero_shot import label_ranks
    image_size, resize_size = _eval_sizes(config)
    logits, labels = classifier_logits(classifier, _classification_data(config, False),
                                       image_size, resize_size, config.eval.batch_size)
    ranks = label_ranks(logits, labels)
    out = {f"top{k}": float(np.mean(ranks < k)) for k in TOPK if k <= logits.shape[1]}
    for group, ids in (finetune_source(config).groups() or {}).items():
        mask = np.isin(labels, ids)
        out.update({f"{group}_top{k}": float(np.mean(ranks[mask] < k)) for k in TOPK})
    out["num_examples"] = float(len(labels))
    return out


class DualEncoderTask:
    """Hooks of ``trainer.train`` for ``--task=lit`` and ``--task=retrieval``: the trainer's
    data, the init run's weights (LiT: a locked image tower and, by default, a fresh text one)."""

    def __init__(self, config):
        self.config = config

    def hooks(self):
        from align_tf import trainer
        build = self.build_lit if self.config.finetune.task == "lit" else trainer.build
        return trainer.TrainHooks(build=build, initialize=self.initialize)

    def build_lit(self, config, vocabulary_size):
        from align_tf.models.dual_encoder import build_dual_encoder
        from align_tf.objectives.lit import LockedImageObjective, lock_image_tower
        model = build_dual_encoder(config.model, vocabulary_size)
        lock_image_tower(model)  # before the optimizer is built: no slots for the locked tower
        objective = LockedImageObjective(model, _optimizer(config, model),
                                         config.objective.contrastive.label_smoothing)
        objective.seed = int(config.seed)
        return model, objective

    def initialize(self, objective):
        from align_tf import run_dir
        f = self.config.finetune
        parts = None
        if f.task == "lit" and f.text_tower == "fresh":
            parts = ("image_encoder", "temperature")  # σ starts from the init run's
        elif objective.model.similarity != run_dir.load_config(f.init).model.similarity:
            # finetune.objective changed the loss: σ, or t′ and b, start from the model.* inits.
            parts = ("image_encoder", "text_encoder")
        run_dir.restore_model(objective.model, _init_checkpoint(self.config), parts=parts)
