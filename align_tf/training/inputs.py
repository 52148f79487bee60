"""Input preparation: the synthetic corpus, the text preprocessor (vocabulary) and the training
stream that ``strategy.distribute_datasets_from_function`` distributes.

Which example comes at which position of the stream is a function of ``(config.seed, position)``
(``align_tf.data.sampling``), so a resumed run continues where the checkpoint left off.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from align_tf import distribute
from align_tf.data import pipeline, sampling, sources, tfrecord
from align_tf.run_dir import RunDir
from align_tf.tokenizer import TextPreprocessor, build_vocabulary, mode_settings


def make_preprocessor(config, run: RunDir, synthetic_captions=None, write: bool = True,
                      read_saved: bool = True) -> TextPreprocessor:
    """The vocabulary is the config's file, else the run's saved one, else learned.

    ``write``: save it as the run's vocab.txt (the chief only). A non-chief worker passes
    ``read_saved=False`` unless resuming, because in a fresh run the chief may be writing
    vocab.txt at that very moment (the learned vocabulary is deterministic, so every worker
    derives the same one).
    """
    if config.data.vocab_path:
        vocabulary = config.data.vocab_path
    elif read_saved and run.has_vocabulary():
        vocabulary = run.vocab_path  # resuming: keep the vocabulary the checkpoint was trained with
    else:
        vocabulary = build_vocabulary(synthetic_captions, vocab_size=config.data.vocab_size,
                                      **mode_settings(config.data.tokenizer))
    if write:
        vocabulary = run.save_vocabulary(vocabulary)
    return TextPreprocessor.for_data(vocabulary, config.data)


# The model fields that decide its variables (names and shapes): a resumed run keeps them. The
# others (remat, BatchNorm grouping, dropout, temperature bounds and initial values) may change.
ARCHITECTURE_FIELDS = ("image_size_name", "text_size_name", "image_architecture",
                       "text_architecture", "max_sequence_length", "similarity", "fusion_layers")


def check_resumable(config, run: RunDir) -> None:
    """``ConfigError`` naming the model fields (``ARCHITECTURE_FIELDS``) in which ``config``
    differs from the run's ``config.json``: its checkpoints hold another architecture. Checked
    before anything is built or restored (a failed restore leaves a warning per variable)."""
    from align_tf.errors import ConfigError
    if not tf.io.gfile.exists(run.config_path):
        return
    try:
        saved = run.load_config().model
    except ValueError:  # an unreadable config.json: the restore says what does not match
        return

    def plain(value):
        return value.to_dict() if hasattr(value, "to_dict") else value

    differ = [f"model.{k}={plain(config.model[k])!r} (the run has {plain(saved.get(k))!r})"
              for k in ARCHITECTURE_FIELDS
              if plain(config.model[k]) != plain(saved.get(k))]
    if differ:
        raise ConfigError(f"{run.path} holds another model than this config: {'; '.join(differ)}. "
                          f"Resume with the run's own config (--config={run.config_path}) or "
                          "train in a new --model_dir")


def prepare_inputs(config, run: RunDir, chief: bool, resuming: bool):
    """``(synthetic pairs or None, text preprocessor)``; the chief also writes config.json.
    Resuming, the config's model must be the run's (``check_resumable``)."""
    if resuming:
        check_resumable(config, run)
    pairs = None
    if config.data.name == "synthetic":  # English, or data.synthetic_languages' mix
        pairs = sources.synthetic.training_pairs(config)
    preprocessor = make_preprocessor(config, run, pairs["caption"] if pairs else None,
                                     write=chief, read_saved=chief or resuming)
    if chief:
        run.save_config(config)
    return pairs, preprocessor


def train_dataset_fn(config, preprocessor, pairs, read_stats: tfrecord.ReadStats,
                     batches_done: int = 0, wrap_inputs: Callable | None = None):
    """A ``distribute_datasets_from_function`` callable yielding per-replica batches.

    The global batch is split by ``distribute.batch_sizes``. Each input pipeline (one per host)
    reads its slice of every global batch (``sampling.Layout``) and, per step, supplies one
    per-replica batch to each of its replicas. The stream starts at global batch
    ``batches_done``: which example comes at which position, and its crop and flip, are functions
    of ``(config.seed, position)``, so a resumed run neither repeats nor misses a pair and draws
    the same augmentation. Synthetic pairs are sampled by index: the start costs nothing and the
    stream does not depend on the number of hosts; TFRecord shards skip at most one group of
    shards (``tfrecord.read_training_pairs``); other sources: ``align_tf.data.sources``.
    ``wrap_inputs(dataset, input_context, first_batch)`` may wrap each pipeline's dataset of
    per-replica batches (``first_batch``: the pipeline-local index of its first element); tests
    use it to observe or corrupt batches.
    """
    def dataset_fn(input_context: tf.distribute.InputContext):
        sizes = distribute.batch_sizes(config.train.batch_size, input_context.num_replicas_in_sync,
                                       input_context.num_input_pipelines)
        layout = sampling.Layout(sizes.global_batch, sizes.per_pipeline,
                                 input_context.input_pipeline_id)
        if pairs is not None:
            ds = sampling.sample_arrays({"image": pairs["image"], "caption": pairs["caption"]},
                                        config.seed, layout, batches_done)
        else:  # tfrecord, img2dataset_tfrecord, tfds:NAME (align_tf.data.sources)
            ds = sources.training_stream(config, layout, batches_done, input_context, read_stats)
        ds = pipeline.batch_pairs(ds, preprocessor, sizes.per_replica, config.data.image_size,
                                  config.data.resize_size, training=True, seed=config.seed,
                                  flip=config.data.random_flip, stats=read_stats)
        if wrap_inputs is not None:
            replicas_per_pipeline = sizes.per_pipeline // sizes.per_replica
            ds = wrap_inputs(ds, input_context, batches_done * replicas_per_pipeline)
        return ds
    return dataset_fn
