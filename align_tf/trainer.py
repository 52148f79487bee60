"""The training loop: config → data → model → objective → steps → checkpoints.

``train()`` is a few named steps:

* ``prepare_inputs``: the synthetic corpus (if any) and the text preprocessor (vocabulary);
* ``build``: model, optimizer and objective (``config.objective.name``) in the strategy's scope;
* ``restore``: the newest checkpoint of the run directory that reads back whole
  (``choose_checkpoint``), if any (a restarted job resumes);
* ``TrainLoop``: ``steps_per_loop`` objective steps per host call on every replica, then logging
  (progress bar, TensorBoard), periodic evaluation and checkpoints.

The run directory's layout belongs to ``align_tf.run_dir``.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from typing import Callable

import keras
import tensorflow as tf

from align_tf import compat, distribute, objectives, optim
from align_tf.data import pipeline, sampling, sources, synthetic, tfrecord
from align_tf.errors import ConfigError  # trainer.ConfigError: the same class
from align_tf.models.dual_encoder import DualEncoder, build_dual_encoder
from align_tf.run_dir import RunDir
from align_tf.tokenizer import TextPreprocessor, build_vocabulary

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    model: DualEncoder
    preprocessor: TextPreprocessor
    metrics: dict
    objective: objectives.Objective | None = None


def _check(condition: bool, message: str):
    if not condition:
        raise ConfigError(message)


def validate_config(config, num_replicas: int = 1) -> None:
    """Raises ``ConfigError`` with one line naming the field for any value that cannot run."""
    from align_tf import prompts
    from align_tf.models import batch_norm, dual_encoder, efficientnet, text_encoder
    m, o, d, t, opt = config.model, config.objective, config.data, config.train, config.optim
    if not m.image_architecture:
        _check(m.image_size_name in efficientnet.SIZES,
               f"unknown model.image_size_name {m.image_size_name!r}; choose from "
               f"{sorted(efficientnet.SIZES)}")
    if not m.text_architecture:
        _check(m.text_size_name in text_encoder.SIZES,
               f"unknown model.text_size_name {m.text_size_name!r}; choose from "
               f"{sorted(text_encoder.SIZES)}")
    for name in ("temperature_init", "min_temperature", "max_sequence_length"):
        _check(m[name] > 0, f"model.{name}={m[name]} must be positive")
    high = m.max_temperature if m.max_temperature is not None else float("inf")
    _check(m.min_temperature <= high, f"model.max_temperature={m.max_temperature} must be >= "
           f"model.min_temperature={m.min_temperature}")
    if m.similarity == "softmax":
        _check(m.min_temperature <= m.temperature_init <= high,
               f"model.temperature_init={m.temperature_init} must be within the bounds "
               f"[model.min_temperature, model.max_temperature]=[{m.min_temperature}, "
               f"{m.max_temperature}]")
    for name in ("text_dropout", "bn_momentum"):
        _check(0.0 <= m[name] < 1.0, f"model.{name}={m[name]} must be in [0, 1)")
    _check(m.drop_connect_rate is None or 0.0 <= m.drop_connect_rate < 1.0,
           f"model.drop_connect_rate={m.drop_connect_rate} must be in [0, 1)")
    try:
        batch_norm.check_group_size(m.bn_group_size, num_replicas)
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None

    _check(o.name in objectives.NAMES,
           f"unknown objective.name {o.name!r}; choose from {list(objectives.NAMES)}")
    _check(m.similarity in dual_encoder.SIMILARITIES,
           f"unknown model.similarity {m.similarity!r}; choose from {list(dual_encoder.SIMILARITIES)}")
    _check(m.logit_scale_init > 0, f"model.logit_scale_init={m.logit_scale_init} must be positive")
    if m.similarity == "sigmoid":  # t = 1/temperature: its bounds are the temperature's, inverted
        _check(1.0 / high <= m.logit_scale_init <= 1.0 / m.min_temperature,
               f"model.logit_scale_init={m.logit_scale_init} must be within [1/max_temperature, "
               f"1/min_temperature]=[{1.0 / high}, {1.0 / m.min_temperature}]")
    # What the objective needs from the model (its registry entry): the similarity whose
    # parameters it trains (sigmoid: t′ and b; softmax: σ) and whether it needs a fusion encoder.
    objective = objectives.get(o.name)
    wanted = objective.similarity
    _check(m.similarity == wanted,
           f"objective.name={o.name!r} needs model.similarity={wanted!r}, got {m.similarity!r}")
    for each in objectives.registered().values():  # the flat objective.* fields, shared by all
        each.validate_flat_fields(config)
    _check(m.fusion_layers >= 0, f"model.fusion_layers={m.fusion_layers} must be >= 0")
    fused = " or ".join(f"objective.name={name!r}"
                        for name, each in objectives.registered().items() if each.needs_fusion)
    _check(objective.needs_fusion == (m.fusion_layers > 0),
           f"objective.name={o.name!r} with model.fusion_layers={m.fusion_layers}: ALBEF's fusion "
           f"encoder and {fused} go together")
    if m.fusion_layers:
        try:
            text_encoder.split_for_fusion(m.text_architecture or m.text_size_name, m.fusion_layers)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    objective.validate(config)  # its own fields

    try:
        sources.parse(d.name)  # names the choices
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for name in ("vocab_size", "max_tokens", "image_size", "num_train_examples", "shuffle_buffer"):
        _check(d[name] > 0, f"data.{name}={d[name]} must be positive")
    _check(d.resize_size is None or d.resize_size >= d.image_size,
           f"data.resize_size={d.resize_size} must be >= data.image_size={d.image_size}")
    _check(d.max_tokens <= m.max_sequence_length,
           f"data.max_tokens={d.max_tokens} exceeds model.max_sequence_length="
           f"{m.max_sequence_length}")
    for name in ("caption_noise", "caption_partial", "synthetic_unnamed_colour",
                 "synthetic_colour_only", "synthetic_two_shapes"):
        _check(0.0 <= d[name] <= 1.0, f"data.{name}={d[name]} must be in [0, 1]")
    try:
        sources.check(d)  # vocab_path, train_pattern or the TFDS set of the source
    except ValueError as e:
        raise ConfigError(str(e)) from None

    for name in ("batch_size", "steps", "steps_per_loop", "log_every", "checkpoint_every",
                 "keep_checkpoints", "max_consecutive_skips"):
        _check(t[name] > 0, f"train.{name}={t[name]} must be positive")
    try:
        sizes = distribute.batch_sizes(t.batch_size, num_replicas)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    k = t.accumulation_steps
    _check(k >= 1, f"train.accumulation_steps={k} must be positive")
    able = ", ".join(n for n in objectives.NAMES if objectives.supports_accumulation(n))
    _check(k == 1 or objectives.supports_accumulation(o.name),
           f"train.accumulation_steps={k} needs an objective whose loss depends on the batch only "
           f"through the embeddings ({able}), not {o.name!r}")
    _check(sizes.per_replica % k == 0,
           f"train.accumulation_steps={k} must divide the per-replica batch of {sizes.per_replica} "
           f"(train.batch_size={t.batch_size} over {num_replicas} replicas)")
    _check(isinstance(m.remat, bool), f"model.remat={m.remat!r} must be true or false")

    _check(opt.name in optim.NAMES, f"unknown optim.name {opt.name!r}; choose from "
                                    f"{list(optim.NAMES)}")
    _check(opt.learning_rate > 0, f"optim.learning_rate={opt.learning_rate} must be positive")
    _check(opt.warmup_steps >= 0, f"optim.warmup_steps={opt.warmup_steps} must be >= 0")
    _check(opt.get("schedule", "linear") in optim.SCHEDULES,
           f"unknown optim.schedule {opt.get('schedule')!r}; choose from {list(optim.SCHEDULES)}")
    _check(opt.weight_decay >= 0, f"optim.weight_decay={opt.weight_decay} must be >= 0")

    try:
        prompts.get_templates(config.export.templates)
    except ValueError as e:
        raise ConfigError(f"export.templates: {e}") from None
    if config.eval.enabled:
        from align_tf.evaluation import runner
        try:
            runner.plans_from_config(config)  # checks the fields; renders and embeds nothing
        except ValueError as e:
            raise ConfigError(str(e)) from None


def check_jit_compile(config, strategy: tf.distribute.Strategy) -> None:
    """Raises ``ConfigError`` if ``train.jit_compile`` cannot work with ``strategy``.

    Mirrored and multi-worker strategies drop their cross-replica ``merge_call`` inside an XLA
    function only when every device is a GPU; on CPU replicas the step's all-gather and
    optimizer update would call ``merge_call`` inside the nested jit function, which TF refuses.
    """
    if not config.train.jit_compile or strategy.num_replicas_in_sync == 1 or \
            isinstance(strategy, tf.distribute.TPUStrategy):
        return
    devices = strategy.extended.worker_devices
    if not all((tf.DeviceSpec.from_string(d).device_type or "").upper() == "GPU" for d in devices):
        raise ConfigError("train.jit_compile with several replicas needs GPUs or a TPU "
                          f"(replicas here: {', '.join(devices)})")


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
        vocabulary = build_vocabulary(synthetic_captions, vocab_size=config.data.vocab_size)
    if write:
        vocabulary = run.save_vocabulary(vocabulary)
    return TextPreprocessor(vocabulary, sequence_length=config.data.max_tokens)


def prepare_inputs(config, run: RunDir, chief: bool, resuming: bool):
    """``(synthetic pairs or None, text preprocessor)``; the chief also writes config.json."""
    pairs = None
    if config.data.name == "synthetic":
        d = config.data
        pairs = synthetic.make_pairs(d.num_train_examples, d.image_size, noise=d.caption_noise,
                                     partial=d.caption_partial, seed=config.seed,
                                     unnamed=d.synthetic_unnamed_colour,
                                     colour_only=d.synthetic_colour_only, two=d.synthetic_two_shapes)
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


def build(config, vocabulary_size: int):
    """``(model, objective)``: the plain model, the optimizer and the configured objective, with
    every variable created. Call in the strategy's scope."""
    model = build_dual_encoder(config.model, vocabulary_size)
    optimizer = optim.build_optimizer(config.optim, config.train.steps)
    # The objective builds the optimizer for what it trains (the model, plus ALBEF's MLM head).
    objective = objectives.build_objective(config.objective, model, optimizer, seed=config.seed,
                                           vocab_path=config.data.vocab_path)
    objective.accumulation_steps = config.train.accumulation_steps
    return model, objective


def checkpoint_for(objective: objectives.Objective) -> tf.train.Checkpoint:
    """What a training checkpoint holds: model, optimizer and the objective's state."""
    return tf.train.Checkpoint(model=objective.model, optimizer=objective.optimizer,
                               objective=objective.state)


def restore(objective: objectives.Objective, path: str,
            strategy: tf.distribute.Strategy | None = None) -> None:
    """Restores a training checkpoint, also one written before the objectives split (the skip
    counters, momentum towers and queue were then variables of the model).

    Pass the checkpoint ``choose_checkpoint`` verified. Any failure is a one-line ``ConfigError``;
    with ``strategy``, every worker calls this together and all of them raise if any one fails
    (the file changed since it was verified, or this host reads other bytes than the chief): no
    worker trains on half-restored variables or waits in a collective for one that stopped.
    """
    problem = None
    try:
        _restore(objective, path)
    except ConfigError as e:
        problem = str(e)
    except _CHECKPOINT_DAMAGE as e:
        problem = f"cannot restore {path}: {_first_line(e)}"
    if strategy is not None and distribute.any_worker(strategy, problem is not None):
        problem = problem or f"restoring {path} failed on another worker (see its log)"
    if problem:
        raise ConfigError(problem)


def _restore(objective, path):
    """Restores ``path`` into ``objective``, checking both directions: every variable of the
    objective gets a value, and every value in the checkpoint goes to a variable.

    The second direction matters because Keras 3 keys optimizer slots by position
    (``optimizer/_variables/N``): with a variable gone from the middle of the model, its Adam
    moments would load onto the next variable without a shape error. No entry is exempt: resuming
    a run of each objective (contrastive, momentum distillation, sigmoid, ALBEF) and checkpoints
    written before the objectives split (``legacy_checkpoint_view``, by the old trainer) uses every
    entry; ``save_counter`` is matched by the restore itself and ``_CHECKPOINTABLE_OBJECT_GRAPH``
    is metadata, not an entry of any object.
    """
    keys = {name for name, _ in tf.train.list_variables(path)}
    if not any(k.startswith("optimizer/") for k in keys):
        raise ConfigError(f"{path} holds model weights only (a converted checkpoint?), not a "
                          "training state to resume; train in a new --model_dir")
    legacy = any(k.startswith("model/skipped_steps") for k in keys)
    checkpoint = tf.train.Checkpoint(model=objective.legacy_checkpoint_view(),
                                     optimizer=objective.optimizer) if legacy \
        else checkpoint_for(objective)
    written = "was written before align_tf's objectives split and " if legacy else ""
    mismatch = f"{path} {written}does not match this config (objective.name=" \
        f"{objective.__class__.__name__}): "
    try:
        status = checkpoint.restore(path)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:  # ValueError: a variable of another shape
        raise ConfigError(mismatch + _first_line(e)) from None
    unused = _unused_checkpoint_entries(checkpoint, path)
    if unused:
        status.expect_partial()  # the error says it; no "unrestored values" warnings at exit
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise ConfigError(f"{mismatch}checkpoint entry {unused[0]}{more} is not used by any "
                          "variable of this config")


def _unused_checkpoint_entries(checkpoint: tf.train.Checkpoint, path: str) -> list:
    """The keys of checkpoint ``path`` that no object of ``checkpoint`` takes, sorted (so a model
    variable is named before the optimizer slots that shifted with it).

    Objects are matched by name along any path of the object graph, as ``restore`` matches them.
    So an entry can also land on another variable: were ``model/b`` gone, the checkpoint's
    ``b`` would reach ``c`` through the optimizer's list of variables, and two entries would
    restore into ``c``. Of two entries that share an object, the one whose key is not the
    object's own path (its first path, as a save names it) is counted as unused.
    """
    matched = tf.train.CheckpointView(path).match(checkpoint)
    graph = compat.trackable_object_graph(
        tf.train.load_checkpoint(path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    nodes_of = {}  # id(object) -> the checkpoint nodes with values matched to it
    for node_id, obj in matched.items():
        if graph.nodes[node_id].attributes:
            nodes_of.setdefault(id(obj), []).append(node_id)
    shared = {node_id for ids in nodes_of.values() if len(ids) > 1 for node_id in ids}
    own_path = _object_paths(checkpoint) if shared else {}
    unused = []
    for node_id, node in enumerate(graph.nodes):
        keys = [attribute.checkpoint_key for attribute in node.attributes]
        if node_id not in matched:
            unused += keys
        elif node_id in shared and own_path.get(id(matched[node_id])) != \
                keys[0].split("/.ATTRIBUTES/")[0]:
            unused += keys
    return sorted(unused)


def _object_paths(root) -> dict:
    """``{id(object): path}``: each object's first path from ``root`` breadth first, escaped as
    checkpoint keys spell it (the prefix of its ``/.ATTRIBUTES/...`` keys)."""
    view = tf.train.TrackableView(root)
    paths, queue = {id(root): ""}, [root]
    for obj in queue:  # grows while it is read: a breadth-first walk
        for name, child in view.children(obj).items():
            if id(child) not in paths:
                name = name.replace(".", "..").replace("/", ".S")  # TF's escape_local_name
                paths[id(child)] = f"{paths[id(obj)]}/{name}" if paths[id(obj)] else name
                queue.append(child)
    return paths


# What a damaged checkpoint raises when read: truncated data files give IndexError, checksum
# mismatches DataLossError, missing or mangled files NotFoundError / other OpErrors.
_CHECKPOINT_DAMAGE = (tf.errors.OpError, IndexError, OSError)
# choose_checkpoint's broadcast codes besides a checkpoint number: a fresh run, nothing readable.
_NO_CHECKPOINT, _NONE_READABLE = -1, -2


def _first_line(error: BaseException) -> str:
    """An exception's first line, without TF's ``{{function_node ...}}`` prefix, cut at 200."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    if line.startswith("{{") and "}}" in line:
        line = line.split("}}", 1)[1].strip()
    return line[:200]


def _checkpoint_number(path: str) -> int:
    """The N of a ``CheckpointManager`` checkpoint ``.../ckpt-N``; -1 for other names."""
    suffix = path.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def checkpoint_candidates(run: RunDir) -> list:
    """The run's checkpoints, newest first: those its ``checkpoint`` state file lists and any other
    ``ckpt-N.index`` in the directory, so that a lost or damaged state file does not look like a
    fresh run."""
    try:
        state = tf.train.get_checkpoint_state(run.checkpoint_dir)
    except ValueError:  # a state file without model_checkpoint_path
        state = None
    paths = list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path] if state else []
    paths += [p[:-len(".index")] for p in tf.io.gfile.glob(f"{run.checkpoint_dir}/*.index")]
    return sorted({p for p in paths if _checkpoint_number(p) >= 0}, key=_checkpoint_number,
                  reverse=True)


def verify_checkpoint(path: str) -> str | None:
    """``None`` if every tensor of checkpoint ``path`` reads back (the reader checks each one's
    CRC32C), else the first line of what went wrong. Touches no variable."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except _CHECKPOINT_DAMAGE as e:
        return _first_line(e)
    return None


def choose_checkpoint(run: RunDir, strategy: tf.distribute.Strategy) -> str | None:
    """The checkpoint to resume from: the newest one of ``run`` that reads back whole, the same on
    every worker; ``None`` for a fresh run. Every worker calls this at the same point.

    A damaged checkpoint (truncated, checksum mismatch, missing file) is skipped with a warning
    naming it. With several workers the chief alone reads the candidates and broadcasts its
    choice: were each worker to walk the list itself, a file damaged only as one host sees it
    (a stale cache, a partial copy) would send that worker to an older checkpoint than the others,
    and the workers would train on from different weights and batches without an error. A worker
    that then cannot read the chief's choice stops all of them in ``restore``.

    Raises:
      ConfigError: checkpoints exist but none reads back; starting afresh would overwrite them.
    """
    candidates = checkpoint_candidates(run)
    chosen = _NO_CHECKPOINT
    if distribute.is_chief(strategy):
        for path in candidates:
            problem = verify_checkpoint(path)
            if problem is None:
                chosen = _checkpoint_number(path)
                break
            log.warning("Checkpoint %s is damaged (%s); trying an older one.", path, problem)
        else:
            chosen = _NONE_READABLE if candidates else _NO_CHECKPOINT
    chosen = distribute.chief_value(strategy, chosen)
    if chosen == _NONE_READABLE:
        raise ConfigError(f"no checkpoint in {run.checkpoint_dir} can be read (newest: "
                          f"{candidates[0] if candidates else '?'}; see the warnings); restore "
                          "the files, or move them away to train from scratch")
    if chosen == _NO_CHECKPOINT:
        return None
    # A worker that lacks the file gets a path that fails in restore(), which stops every worker.
    return next((p for p in candidates if _checkpoint_number(p) == chosen),
                f"{run.checkpoint_dir}/ckpt-{chosen}")


@dataclasses.dataclass
class TrainHooks:
    """The steps of ``train`` a variant of training replaces (``align_tf.finetune``: a classifier
    or a locked image tower, other data, weights from ``--init``); the defaults train ALIGN.

    Attributes:
      prepare_inputs: ``f(config, run, chief, resuming) -> (pairs or None, text preprocessor)``.
      build: ``f(config, vocabulary_size) -> (model, objective)``, called in the strategy's scope.
      dataset_fn: ``f(config, preprocessor, pairs, read_stats, batches_done, wrap_inputs)`` →
        a ``distribute_datasets_from_function`` callable (``train_dataset_fn``'s arguments).
      initialize: ``f(objective)`` on a fresh run only (nothing to resume), after ``build``.
    """
    prepare_inputs: Callable = prepare_inputs
    build: Callable = build
    dataset_fn: Callable = train_dataset_fn
    initialize: Callable | None = None


def train(config, model_dir: str, strategy: tf.distribute.Strategy | None = None,
          verbose: int = 1, wrap_inputs: Callable | None = None,
          hooks: TrainHooks | None = None) -> TrainResult:
    """Trains (or resumes) the model described by ``config``; returns the model and last metrics.

    Multi-worker: every worker runs this with the same ``model_dir`` (a shared file system such as
    GCS); all restore from ``model_dir/checkpoints``, only the chief writes there and to
    TensorBoard, the others save into a temp dir that is deleted at the end.

    Args:
      wrap_inputs: optional ``f(dataset, input_context, first_batch) -> dataset`` applied to each
        input pipeline's per-replica batches (see ``train_dataset_fn``).
      hooks: replaced steps (``TrainHooks``); default: ALIGN's own.

    Raises:
      ConfigError: the config cannot run, or ``model_dir`` has checkpoints but none restores.
      Preempted: SIGTERM arrived (on any worker); a checkpoint was written first.
      FloatingPointError: ``train.max_consecutive_skips`` non-finite steps in a row; nothing is
        saved, so the newest checkpoint is the last good one.
    """
    strategy = strategy or tf.distribute.get_strategy()
    validate_config(config, strategy.num_replicas_in_sync)
    check_jit_compile(config, strategy)
    run = RunDir(model_dir).makedirs()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if config.train.mixed_precision else "float32")
    chief = distribute.is_chief(strategy)
    write_dir = distribute.worker_write_dir(model_dir, strategy)
    try:
        latest = choose_checkpoint(run, strategy)
        hooks = hooks or TrainHooks()
        pairs, preprocessor = hooks.prepare_inputs(config, run, chief,
                                                   resuming=latest is not None)
        with strategy.scope():
            model, objective = hooks.build(config, preprocessor.vocabulary_size)
        if latest:
            restore(objective, latest, strategy)
            if verbose and chief:
                print(f"Resumed from {latest}")
        elif hooks.initialize is not None:
            hooks.initialize(objective)
        loop = TrainLoop(config, objective, strategy, run, RunDir(write_dir), preprocessor,
                         verbose=verbose if chief else 0)
        # Every train step (applied or skipped as non-finite) consumed one global batch.
        batches_done = int(objective.optimizer.iterations.numpy()) + \
            int(objective.skipped_steps.numpy())
        dataset = strategy.distribute_datasets_from_function(hooks.dataset_fn(
            config, preprocessor, pairs, loop.read_stats, batches_done, wrap_inputs))
        metrics = loop.run(iter(dataset), resumed=latest is not None)
        return TrainResult(model, preprocessor, metrics, objective)
    finally:
        if write_dir != model_dir:
            tf.io.gfile.rmtree(write_dir)


class TrainLoop:
    """Runs the objective's steps in host loops and does the host-side work between them.

    Each host loop is one ``tf.function`` call of up to ``train.steps_per_loop`` steps; loops end
    on log, evaluation and checkpoint boundaries, so those happen at exact multiples.
    """

    def __init__(self, config, objective, strategy, run: RunDir, write_run: RunDir, preprocessor,
                 verbose: int = 1):
        self.config, self.objective, self.strategy = config, objective, strategy
        self.run_dir, self.preprocessor, self.verbose = run, preprocessor, verbose
        self.chief = write_run.path == run.path
        self.read_stats = tfrecord.ReadStats()
        self.checkpoint = checkpoint_for(objective)
        # Non-chief workers keep one throw-away checkpoint; see distribute.worker_write_dir.
        self.manager = write_run.checkpoint_manager(
            self.checkpoint, config.train.keep_checkpoints if self.chief else 1)
        self.writer = tf.summary.create_file_writer(run.train_log_dir) if self.chief \
            else tf.summary.create_noop_writer()
        self.scalars = tuple(objective.scalars)
        self.evaluator = PeriodicEvaluator(config, objective.model, preprocessor) \
            if self.chief and config.eval.enabled and config.eval.every_steps else None
        self._step_fn = self._make_step_fn()

    def _make_step_fn(self):
        strategy, objective = self.strategy, self.objective
        replica_step = objective.train_step
        if self.config.train.jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy):
            # TPUStrategy compiles the replica function with XLA anyway; elsewhere the whole step
            # (towers, gather, loss, optimizer update) becomes one XLA cluster with static shapes.
            replica_step = tf.function(replica_step, jit_compile=True)
        max_skips = float(self.config.train.max_consecutive_skips)
        scalars = self.scalars

        def run_step(iterator):
            out = strategy.run(replica_step, args=(next(iterator),))
            # Gradients are all-reduced, so every replica (and worker) has the same skip count.
            return out, strategy.experimental_local_results(out["consecutive_skips"])[0]

        @tf.function
        def train_loop(iterator, num_steps):
            """Up to ``num_steps`` steps in one host call (steps_per_execution); stops early once
            ``max_consecutive_skips`` non-finite steps came in a row, so no further batch is used."""
            out, worst = run_step(iterator)
            done = tf.constant(1)
            while done < num_steps and worst < max_skips:
                out, skips = run_step(iterator)
                worst = tf.maximum(worst, skips)
                done += 1
            metrics = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, out[k], axis=None)
                       for k in scalars}
            metrics["max_consecutive_skips"] = worst
            return metrics, done
        return train_loop

    def run(self, iterator, resumed: bool) -> dict:
        """Trains to ``train.steps``; returns the last loop's metrics."""
        cfg = self.config.train
        optimizer = self.objective.optimizer
        step = int(optimizer.iterations.numpy())
        self.last_saved = step if resumed else None
        progbar = keras.utils.Progbar(cfg.steps, verbose=self.verbose, unit_name="step",
                                      stateful_metrics=self.scalars + ("lr", "pairs/s",
                                                                       "skipped_records"))
        metrics = {}
        self.last_log = (step, time.time())
        skipped = int(self.objective.skipped_steps.numpy())
        preempted = _PreemptionFlag()
        try:
            while step < cfg.steps:
                if distribute.any_worker(self.strategy, bool(preempted)):
                    self.save(step)
                    raise Preempted(f"SIGTERM at step {step}; saved {self.manager.latest_checkpoint}")
                n = min(cfg.steps_per_loop, cfg.steps - step, *(
                    every - step % every for every in self._boundaries()))
                loop_metrics, _ = self._step_fn(iterator, tf.constant(n))
                metrics = {k: float(v) for k, v in loop_metrics.items()}
                step = int(optimizer.iterations.numpy())
                metrics["lr"] = float(optimizer.learning_rate)
                if self.config.data.name != "synthetic":
                    # Corrupt records/images the input pipeline skipped so far.
                    metrics["skipped_records"] = float(self.read_stats.skipped)
                progbar.update(step, [(k, metrics[k]) for k in progbar.stateful_metrics
                                      if k in metrics])
                new_skips = int(metrics["skipped_steps"]) > skipped
                skipped = int(metrics["skipped_steps"])
                failed = metrics["max_consecutive_skips"] >= cfg.max_consecutive_skips
                # Skipped steps are logged at once: a run that then stops would otherwise never
                # show them.
                if step % cfg.log_every == 0 or step == cfg.steps or new_skips or failed:
                    self.log(step, metrics)
                if failed:
                    # Not saving keeps the last good checkpoint as the newest one.
                    raise FloatingPointError(
                        f"{int(metrics['max_consecutive_skips'])} consecutive steps had non-finite "
                        f"loss or gradients (train.max_consecutive_skips="
                        f"{cfg.max_consecutive_skips}) at step {step}; stopping. Last good "
                        f"checkpoint: {self.run_dir.latest_checkpoint()}")
                if step % cfg.checkpoint_every == 0:
                    self.save(step)
                if self.evaluator is not None and step % self.config.eval.every_steps == 0:
                    self.log(step, self.evaluator(), prefix="eval/")
            self.save(step)
        finally:
            preempted.restore()
            self.writer.flush()
        return metrics

    def _boundaries(self):
        cfg = self.config.train
        every = [cfg.log_every, cfg.checkpoint_every]
        if self.evaluator is not None:
            every.append(self.config.eval.every_steps)
        return every

    def log(self, step: int, metrics: dict, prefix: str = ""):
        """TensorBoard scalars at ``step`` (pairs/s since the previous log)."""
        if not prefix:
            last_step, last_time = self.last_log
            now = time.time()
            metrics["pairs/s"] = self.config.train.batch_size * (step - last_step) / \
                max(now - last_time, 1e-9)
            self.last_log = (step, now)
        with self.writer.as_default(step=step):
            for k, v in metrics.items():
                if k != "max_consecutive_skips":
                    tf.summary.scalar(prefix + k.replace("pairs/s", "pairs_per_sec"), v)
        self.writer.flush()

    def save(self, step: int):
        if step != self.last_saved:
            self.manager.save(checkpoint_number=step)
            self.last_saved = step


class PeriodicEvaluator:
    """The config's evaluators (``config.eval``) on the model being trained: ``() -> {name: value}``
    for TensorBoard. The evaluation data is built once."""

    def __init__(self, config, model, preprocessor):
        from align_tf.evaluation import runner
        from align_tf.evaluation.embed import encoder_for_model
        self._runner = runner
        self.plans = runner.plans_from_config(config)
        self.encoder = encoder_for_model(model, preprocessor, config)

    def __call__(self) -> dict:
        return self._runner.flatten(self._runner.run_plans(self.encoder, self.plans))


class Preempted(RuntimeError):
    """Raised after the checkpoint that a SIGTERM (TPU/VM preemption) triggered has been written."""


class _PreemptionFlag:
    """Truthy once SIGTERM arrived; the loop then saves a checkpoint and stops cleanly."""

    def __init__(self):
        self._set = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self._set = True

    def __bool__(self):
        return self._set

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def evaluate(result: TrainResult, config, model_dir: str) -> dict:
    """Runs the config's evaluators (``config.eval``) on the trained model and writes
    ``{model_dir}/eval.json``: the report ``python -m align_tf.evaluate --model_dir`` writes."""
    from align_tf.evaluation import runner
    from align_tf.evaluation.embed import encoder_for_model
    encoder = encoder_for_model(result.model, result.preprocessor, config)
    plans = runner.plans_from_config(config)
    start = time.time()  # the span the evaluate CLI reports too
    results = runner.run_plans(encoder, plans)
    run = RunDir(model_dir)
    encoder.checkpoint = run.latest_checkpoint()
    info = dict(encoder.info(), model_dir=model_dir, train_steps=config.train.steps)
    report = runner.make_report(results, info, time.time() - start)
    run.write_eval(report)
    return report
