"""Momentum towers and queue (ALBEF, Li et al., NeurIPS 2021), and ALIGN's loss with ITC-MoD.

``MomentumTowers`` keeps an exponential moving average (EMA) of both towers,

    θ_m ← m · θ_m + (1 − m) · θ          after every applied optimizer step (m = 0.995),

and an optional FIFO queue of momentum features (ALBEF: 65,536). Each step all replicas gather the
global batch's momentum features (no gradient) and write them at the queue pointer, so the queue
is identical on every replica; its size must be a multiple of the global batch so that writes
never wrap mid-batch. ``MomentumDistillation`` (here) and ``albef`` (``objectives/albef.py``)
both use it.

``MomentumDistillation`` is ALIGN's loss with ALBEF's momentum distillation: as in ALBEF the
online queries are scored against the *momentum* features plus the queue, and trained towards
soft targets that mix the momentum model's similarity distribution over those keys with the
(smoothed) one-hot (``align_tf.losses.momentum_distillation_loss``). A noisy caption then is not
forced to be the *only* match of its image. α ramps linearly from 0 over ``alpha_ramp_steps``
steps because the momentum model starts as an untrained copy. Where it deliberately stays
ALIGN-like rather than ALBEF-exact (``albef`` is the exact one):

* keys: the momentum features gathered over *all* replicas (ALIGN's global batch of negatives;
  ALBEF uses the replica's own batch plus the queue);
* directions summed, ``L_i2t + L_t2i`` (ALIGN §4.1; ALBEF averages them);
* label smoothing ε = 0.1 on the one-hot part (ALIGN; ALBEF has none).

The momentum towers are not separate Keras models: they are EMA *weights* (non-trainable
variables of the objective's state, checkpointed with the queue) run through the online towers'
graph with ``stateless_call``. That keeps the architecture identical by construction. They run in
inference mode: BatchNorm uses the EMA'd moving statistics and dropout is off, so the targets are
deterministic. The model (and so evaluation and export) only ever has the online towers.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from align_tf import compat, losses
from align_tf.errors import check
from align_tf.objectives.base import GlobalBatch, ObjectiveState, replica_variable
from align_tf.objectives.contrastive import ContrastiveObjective
from align_tf.objectives.registry import register_objective

#: The section fields (``objective.<name>.*``) of the momentum towers, queue and ITC-MoD's α.
MOMENTUM_FIELDS = ("momentum", "alpha", "alpha_ramp_steps", "queue_size")


def check_momentum_arguments(momentum, alpha, alpha_ramp_steps, queue_size, section: str):
    """One-line ``ValueError`` for momentum/distillation arguments out of range (``section``:
    the config section they come from, ``objective.<name>``)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{section}.momentum must be in [0, 1], got {momentum}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{section}.alpha must be in [0, 1], got {alpha}")
    if alpha_ramp_steps < 0 or queue_size < 0:
        raise ValueError(f"{section}.alpha_ramp_steps and {section}.queue_size must be >= 0")


def check_momentum_fields(config, name: str) -> None:
    """One-line ``ConfigError`` for ``MOMENTUM_FIELDS`` of section ``objective.<name>`` out of
    range, or a queue that does not hold whole global batches of ``train.batch_size``
    (``momentum_distillation``, ``albef``)."""
    o, batch_size, prefix = config.objective[name], config.train.batch_size, f"objective.{name}"
    for field in ("momentum", "alpha"):
        check(0.0 <= o[field] <= 1.0, f"{prefix}.{field}={o[field]} must be in [0, 1]")
    for field in ("alpha_ramp_steps", "queue_size"):
        check(o[field] >= 0, f"{prefix}.{field}={o[field]} must be >= 0")
    check(o.queue_size % max(batch_size, 1) == 0,
          f"{prefix}.queue_size={o.queue_size} must be a multiple of train.batch_size="
          f"{batch_size}, so each step's momentum features fill whole queue slots")


def ramped_alpha(alpha: float, ramp_steps: int, iterations):
    """α at optimizer step ``iterations``: linear ramp from 0 over ``ramp_steps`` (0: constant)."""
    if not ramp_steps:
        return tf.constant(alpha, tf.float32)
    progress = tf.cast(iterations, tf.float32) / float(ramp_steps)
    return alpha * tf.minimum(progress, 1.0)


class MomentumTowers:
    """EMA copies of a model's two towers and the optional queue of their features.

    The variables are registered on ``state`` (the objective's checkpointed ``ObjectiveState``)
    under stable names: ``momentum_weights``, and with a queue ``image_queue``, ``text_queue``,
    ``queue_pointer``.

    Args:
      model: the ``DualEncoder`` whose ``image_encoder`` / ``text_encoder`` are averaged.
      state: the objective's ``ObjectiveState``.
      momentum: EMA momentum m.
      queue_size: queued features per modality; 0: no queue.
      section: the config section of these fields (``objective.<name>``), for messages.
    """

    def __init__(self, model, state, momentum: float, queue_size: int, section: str):
        self.momentum, self.queue_size, self.state = float(momentum), int(queue_size), state
        self.section = section
        self._image_ema = _EmaWeights(model.image_encoder, "momentum_image")
        self._text_ema = _EmaWeights(model.text_encoder, "momentum_text")
        # Held by name so checkpoints store (and resume) the momentum towers under stable keys.
        state.momentum_weights = ObjectiveState()
        for ema, _ in self.pairs:
            setattr(state.momentum_weights, ema.name, ema)
        if self.queue_size:
            dim = model.embedding_dim
            # ALBEF starts from random unit vectors: near-orthogonal to everything, so the first
            # steps see harmless negatives until real momentum features replace them.
            state.image_queue = _queue_variable("image_queue", self.queue_size, dim, seed=1)
            state.text_queue = _queue_variable("text_queue", self.queue_size, dim, seed=2)
            state.queue_pointer = replica_variable(0, "int64", "queue_pointer")

    @property
    def pairs(self) -> list:
        """``(momentum variable, online variable)`` pairs of both towers (image tower first)."""
        return self._image_ema.pairs + self._text_ema.pairs

    def embed(self, batch):
        """Momentum-tower ``(image, text)`` embeddings of ``batch`` (unit norm, no gradient)."""
        return (tf.stop_gradient(losses.l2_normalize(self._image_ema(batch["image"]))),
                tf.stop_gradient(losses.l2_normalize(self._text_ema(batch["text"]))))

    def queues(self) -> tuple:
        """``(image_queue, text_queue)`` as tensors read now, or ``(None, None)``."""
        if not self.queue_size:
            return None, None
        return tf.identity(self.state.image_queue), tf.identity(self.state.text_queue)

    def check_queue_size(self, local_rows, num_replicas: int):
        """``ValueError`` unless the queue holds whole global batches (static batch size)."""
        if not self.queue_size:
            return
        local = local_rows.shape[0]
        if local is None:
            raise ValueError("the momentum queue needs a static batch size (batch with "
                             "drop_remainder=True)")
        global_batch = local * num_replicas
        if self.queue_size % global_batch:
            raise ValueError(
                f"{self.section}.queue_size={self.queue_size} must be a multiple of the global "
                f"batch size {global_batch} ({local} per replica x {num_replicas} replicas) so that "
                f"each step's momentum features fill whole queue slots")

    def update(self, features):
        """EMA update of the momentum towers, then enqueue ``features`` (``{"image", "text"}``:
        the global batch's momentum features).

        Runs in replica context after an applied step; like Keras' optimizer, the variable writes
        go through ``strategy.extended.update`` (after one merge_call on strategies that need
        it), so every replica writes its own, identical copy.
        """
        m = self.momentum
        pairs = self.pairs

        def ema(var, online):
            return var.assign(m * var + (1.0 - m) * online)

        def update(strategy, features):
            for var, online in pairs:
                strategy.extended.update(var.value, ema, args=(online.value,), group=False)
            if self.queue_size:
                self._enqueue(strategy, features)

        compat.maybe_merge_call(
            update, tf.distribute.get_strategy(), features)

    def _enqueue(self, strategy, features):
        """Writes the features at the pointer (FIFO: overwrites the oldest entries) and advances
        the pointer."""
        pointer = tf.identity(self.state.queue_pointer.value)

        def write(queue, values, pointer):
            rows = tf.cast(pointer, tf.int32) + tf.range(tf.shape(values)[0])
            return queue.scatter_nd_update(rows[:, None], tf.cast(values, queue.dtype))

        def advance(var, values):
            return var.assign((var + tf.cast(tf.shape(values)[0], var.dtype)) % self.queue_size)

        for queue, key in ((self.state.image_queue, "image"), (self.state.text_queue, "text")):
            strategy.extended.update(queue.value, write, args=(features[key], pointer),
                                     group=False)
        strategy.extended.update(self.state.queue_pointer.value, advance,
                                 args=(features["image"],), group=False)


@register_objective("momentum_distillation")
class MomentumDistillation(ContrastiveObjective):
    """ALIGN's loss against momentum keys with distillation soft targets and an optional queue.

    Args:
      model, optimizer: as for ``Objective``.
      label_smoothing: ε of the one-hot part of the targets.
      momentum: EMA momentum m of the momentum towers.
      alpha: final distillation weight α (0: one-hot targets against the momentum keys).
      alpha_ramp_steps: α grows linearly from 0 to ``alpha`` over this many optimizer steps
        (ALBEF: the first epoch); 0 uses ``alpha`` from the start.
      queue_size: number of queued momentum embeddings per modality; 0 disables the queue. Must be
        a multiple of the global batch size (checked when the train step is traced).
    """

    config_fields = ContrastiveObjective.config_fields + MOMENTUM_FIELDS

    def __init__(self, model, optimizer, label_smoothing=0.1, momentum=0.995, alpha=0.4,
                 alpha_ramp_steps=0, queue_size=0):
        check_momentum_arguments(momentum, alpha, alpha_ramp_steps, queue_size,
                                 f"objective.{self.name}")
        super().__init__(model, optimizer, label_smoothing)
        self.momentum = float(momentum)
        self.alpha = float(alpha)
        self.alpha_ramp_steps = int(alpha_ramp_steps)
        self.queue_size = int(queue_size)
        self.towers = MomentumTowers(model, self.state, momentum, queue_size,
                                     f"objective.{self.name}")

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        check_momentum_fields(config, cls.name)

    @property
    def momentum_pairs(self) -> list:
        """``(momentum variable, online variable)`` pairs of both towers (image tower first)."""
        return self.towers.pairs

    @property
    def momentum_variables(self) -> list:
        """The momentum towers' weights (EMA copies), in the order of ``momentum_pairs``."""
        return [ema for ema, _ in self.momentum_pairs]

    def sync_momentum_towers(self):
        """Copies the online weights into the momentum towers (e.g. after loading pretrained towers
        into a freshly built model). Call in cross-replica context (outside ``strategy.run``)."""
        for ema, online in self.momentum_pairs:
            ema.assign(online)

    def current_alpha(self):
        """α at the current optimizer step: linear ramp from 0 over ``alpha_ramp_steps``."""
        return ramped_alpha(self.alpha, self.alpha_ramp_steps, self.optimizer.iterations)

    def embed_momentum(self, batch):
        """Momentum-tower ``(image, text)`` embeddings (unit norm, no gradient)."""
        return self.towers.embed(batch)

    def loss_from_embeddings(self, batch, embeddings) -> dict:
        """Soft-target loss of this replica's rows against the gathered momentum batch (+ queue).
        The momentum towers see the whole ``batch`` here (no gradient: gradient accumulation
        needs no sub-batches for them)."""
        image, text = embeddings
        rows = GlobalBatch(image)
        self.towers.check_queue_size(image, rows.num_replicas)
        image_m, text_m = self.embed_momentum(batch)
        # ALIGN-like: keys are the momentum features of the *global* batch (a gather of
        # constants); the online embeddings are not gathered at all.
        all_image_m, all_text_m = rows.gather(image_m), rows.gather(text_m)
        image_queue, text_queue = self.towers.queues()
        out = losses.momentum_distillation_loss(
            image, text, self.model.clipped_temperature(), image_m, text_m, all_image_m,
            all_text_m, self.current_alpha(), rows.offset, self.label_smoothing, image_queue,
            text_queue)
        out["after_apply"] = {"image": all_image_m, "text": all_text_m}
        return self.with_metrics(out)

    def after_apply(self, state):
        """EMA update of the momentum towers, then enqueue the global batch's momentum features."""
        self.towers.update(state)


class _EmaWeights:
    """EMA copies of one tower's float weights, and a forward pass of the tower that uses them.

    Trainable weights and BatchNorm statistics are averaged; non-float state (RNG seeds) is not
    weights, so the forward pass reads the online tower's.
    """

    def __init__(self, tower: keras.Model, prefix: str):
        self.tower = tower
        self.pairs = []  # (ema variable, online variable)

        def shadow(v):
            if not v.dtype.startswith("float"):
                return v
            # The momentum model starts as a copy of the online one.
            ema = replica_variable(tf.identity(v.value), v.dtype, f"{prefix}__{v.path.replace('/', '__')}", v.shape)
            self.pairs.append((ema, v))
            return ema

        self.trainable = [shadow(v) for v in tower.trainable_variables]
        self.non_trainable = [shadow(v) for v in tower.non_trainable_variables]

    def __call__(self, inputs):
        # Inference mode: deterministic targets, BatchNorm from the EMA'd moving statistics.
        outputs, _ = self.tower.stateless_call(self.trainable, self.non_trainable, inputs,
                                               training=False)
        return outputs


def _queue_variable(name, size, dim, seed):
    # Stateless: the initial queue is the same on every replica and in every run.
    init = tf.math.l2_normalize(tf.random.stateless_normal((size, dim), seed=[seed, 0]), axis=-1)
    return replica_variable(init, "float32", name, (size, dim))
