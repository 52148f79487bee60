"""What every objective shares: one train step from a replica's batch to an applied update.

An objective owns how a batch becomes gradients; the model (``align_tf.models``) only embeds.
``Objective.train_step`` runs once per replica (inside ``strategy.run``):

1. ``compute_loss`` (the subclass) embeds the local batch and evaluates its loss against the
   global batch, gathered once per step by ``GlobalBatch``; with ``accumulation_steps = K > 1``
   the same loss and gradients come from K sub-batches (``accumulation.py``), which needs the
   loss split into ``embed`` and ``loss_from_embeddings``;
2. gradients of ``loss / num_replicas`` are all-reduced once (the optimizer is told not to reduce
   again, so the logged gradient norm and the finiteness check see the global gradient);
3. the update is applied only if loss and gradients are finite; otherwise the step is counted in
   ``skipped_steps`` / ``consecutive_skips`` and the weights stay untouched, BatchNorm's moving
   statistics included (the forward pass updated them; they are put back, ``_keep_if_finite``);
4. ``after_apply`` (the subclass, e.g. EMA towers and queues) runs after an applied update.

Variables without a gradient (``None``: no loss reaches them) are left out of the all-reduce and
the update; every replica traces the same graph, so each leaves out the same ones.

Objective state that must survive a restart (the skip counters, momentum towers, queues) lives in
``objective.state``, a trackable that the trainer checkpoints next to the model and optimizer.
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from align_tf import compat
from align_tf.models import batch_norm, random_streams
import align_tf.objectives.accumulation as accumulation


class GlobalBatch:
    """This replica's place in the global batch, computed once per step and shared by every loss.

    The local loss scores this replica's ``N_local`` rows against all ``N_global`` gathered rows;
    row ``i`` of this replica is column ``offset + i`` of the gathered batch.
    """

    def __init__(self, local_rows):
        self.context = tf.distribute.get_replica_context()
        self.num_replicas = self.context.num_replicas_in_sync if self.context is not None else 1
        self.offset = 0
        if self.num_replicas > 1:
            self.offset = self.context.replica_id_in_sync_group * tf.shape(local_rows)[0]

    def gather(self, x):
        """Concatenates every replica's ``x`` along axis 0 (differentiable: gradients flow back to
        the replica that produced each row)."""
        return self.context.all_gather(x, axis=0) if self.num_replicas > 1 else x


class ObjectiveState(compat.AutoTrackable):
    """The checkpointed state of an objective (variables are attributes, found by name)."""


def replica_variable(value, dtype, name, shape=()):
    """A non-trainable variable that every replica updates identically (gradients and decisions
    are all-reduced first), so reading any replica's copy is right; checkpointed from the first."""
    return keras.Variable(value, shape=shape, dtype=dtype, trainable=False,
                          aggregation="only_first_replica", name=name)


class Objective:
    """Base class: the distributed train step around a subclass's ``compute_loss``.

    Args:
      model: the ``DualEncoder`` (or another plain model) whose trainable variables are trained.
      optimizer: a built or unbuilt Keras optimizer; it is built for the model's variables here.

    Subclasses implement ``compute_loss`` (or, to support gradient accumulation, ``embed`` and
    ``loss_from_embeddings`` with ``supports_accumulation = True``) and may extend ``scalars``,
    ``after_apply`` and ``state``.

    Attributes:
      seed: keys the model's dropout and stochastic-depth draws in ``train_step``
        (``align_tf.models.random_streams``); ``build_objective`` sets ``config.seed``.
      accumulation_steps: K sub-batches per replica and step (``train.accumulation_steps``);
        1 runs the whole batch at once.
    """

    #: Metrics every train step returns (the trainer logs them; all are float scalars).
    scalars = ("loss", "grad_norm", "skipped_steps", "consecutive_skips")
    #: Whether the loss depends on the batch only through ``embed``'s outputs, so that
    #: ``accumulation_steps > 1`` gives the same loss and gradients (``accumulation.py``).
    supports_accumulation = False

    # What the objective registry (``registry.py``) reads; ``@register_objective(name)`` sets
    # ``name``, and ``config.objective.name`` picks the class by it.
    name = ""
    #: The ``model.similarity`` whose parameters the loss trains (σ: "softmax"; t′ and b:
    #: "sigmoid"); a config naming this objective needs that model.
    similarity = "softmax"
    #: Whether the loss needs ALBEF's fusion encoder (``model.fusion_layers > 0``); an objective
    #: that does not need one is refused a model that has one.
    needs_fusion = False
    #: The fields of this objective's config section ``config.objective.<name>`` that
    #: ``from_config`` reads: by default each is passed to ``__init__`` as the keyword of its name.
    #: ``configs/base.py`` spells the package's objectives' sections with exactly these fields.
    config_fields = ()
    #: A plug-in objective's section defaults (``{field: value}``): added to a config that names
    #: it as ``objective.<name>`` when the config lacks that section (``registry.ensure_section``).
    #: The package's own objectives spell theirs in ``configs/base.py`` instead.
    defaults: dict = {}

    @classmethod
    def from_config(cls, section, model, optimizer, **context) -> "Objective":
        """The objective built from its own config section ``section`` (``config.objective.<name>``;
        it reads no other). ``context`` holds what else the config says (``seed``,
        ``vocab_path``: ``config.data.vocab_path``); take what you need."""
        del context
        return cls(model, optimizer, **cls.config_kwargs(section))

    @classmethod
    def config_kwargs(cls, section) -> dict:
        """``{field: section.field}`` for each of ``config_fields``."""
        return {field: section[field] for field in cls.config_fields}

    @classmethod
    def validate(cls, config) -> None:
        """Raises ``ConfigError`` (``align_tf.errors``), one line naming the field (spelt
        ``objective.<name>.FIELD``), for a value of this objective's own section
        ``config.objective[cls.name]`` that cannot run. ``config``: the whole config (a check may
        relate a field to another section's, e.g. the queue to ``train.batch_size``); called when
        ``config.objective.name`` names this objective, after the model checks (similarity,
        fusion encoder) passed."""

    def __init__(self, model, optimizer):
        self.model = model
        self.optimizer = optimizer
        self.seed = 0
        self.accumulation_steps = 1
        skip_optimizer_all_reduce(optimizer)
        self.state = ObjectiveState()
        # Steps whose loss or gradients were not finite: skipped (weights untouched), counted.
        self.state.skipped_steps = replica_variable(0, "int64", "skipped_steps")
        self.state.consecutive_skips = replica_variable(0, "int64", "consecutive_skips")
        if not optimizer.built:
            optimizer.build(self.trainable_variables)

    @property
    def trainable_variables(self) -> list:
        """What the optimizer trains: the model's weights; a subclass adds trainable parts of its
        own (ALBEF's MLM head, created before ``Objective.__init__`` builds the optimizer)."""
        return self.model.trainable_variables

    @property
    def skipped_steps(self):
        return self.state.skipped_steps

    @property
    def consecutive_skips(self):
        return self.state.consecutive_skips

    def compute_loss(self, batch, training=True) -> dict:
        """This replica's loss on ``batch``: a dict with ``"loss"`` (mean over the local rows), any
        further scalars named in ``scalars``, and optionally ``"after_apply"`` (a nest handed to
        ``after_apply`` once the update is applied). By default ``loss_from_embeddings`` of
        ``embed``."""
        return self.loss_from_embeddings(batch, self.embed(batch, training))

    def embed(self, batch, training=True):
        """This replica's ``(image, text)`` embeddings of ``batch``, unit norm: the towers' part
        of the loss (what gradient accumulation runs one sub-batch at a time)."""
        return (self.model.embed_image(batch["image"], training=training),
                self.model.embed_text(batch["text"], training=training))

    def loss_from_embeddings(self, batch, embeddings) -> dict:
        """``compute_loss``'s dict from ``embed``'s ``embeddings`` of this replica's whole
        ``batch``; may read the batch only where no gradient flows (e.g. momentum towers)."""
        raise NotImplementedError

    def after_apply(self, state):
        """Runs in replica context right after an applied update (never on a skipped step)."""
        del state

    def train_step(self, batch) -> dict:
        """One optimizer step on this replica's share of the global batch."""
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        # The forward pass (every path: accumulation, remat, replicas) updates BatchNorm's moving
        # statistics in place; a skipped step must leave them as they were.
        moving = batch_norm.moving_statistics(self.model, updated_only=True)
        moving_before = [tf.identity(v.value) for v in moving]
        # Each replica's loss is a mean over its local rows; the global loss is their mean.
        if self.accumulation_steps > 1:
            if not self.supports_accumulation:
                raise ValueError(f"{type(self).__name__} cannot accumulate gradients "
                                 "(train.accumulation_steps must be 1)")
            out, scaled_loss, grads = accumulation.accumulated_gradients(
                self, batch, self.accumulation_steps, variables, 1.0 / num_replicas)
        else:
            # Dropout and stochastic depth draw from (seed, replica, step): their own masks on
            # each replica, the same ones on a rerun or a resume.
            with tf.GradientTape() as tape, random_streams.stateless_seeds(
                    self.model, self.seed, self.optimizer.iterations):
                out = self.compute_loss(batch, training=True)
                scaled_loss = out["loss"] / num_replicas
            grads = tape.gradient(scaled_loss, variables)
        # No loss reaches a None gradient's variable (e.g. an unused head): nothing to reduce or
        # apply. Decided while tracing, from the same graph on every replica.
        kept = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if not kept:
            raise ValueError(f"{type(self).__name__}: no trainable variable gets a gradient "
                             "(are all loss weights zero?)")
        if len(kept) < len(variables):  # as Keras' optimizer warns, which now never sees them
            missing = [v.path for g, v in zip(grads, variables) if g is None]
            warnings.warn(f"{len(missing)} trainable variables get no gradient and are not "
                          f"updated, e.g. {missing[0]}", stacklevel=2)
        grads, variables = [g for g, _ in kept], [v for _, v in kept]
        ctx = tf.distribute.get_replica_context()
        global_loss = scaled_loss
        if ctx is not None and num_replicas > 1:
            # The loss rides along in the gradients' all-reduce (one batched collective), so that
            # a loss non-finite on one replica only (with finite gradients) is seen by all.
            grads, global_loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, (grads, scaled_loss))
        grad_norm = tf.linalg.global_norm(grads)
        # Decided on all-reduced values only, so every replica takes the same branch.
        finite = tf.math.is_finite(grad_norm) & tf.math.is_finite(global_loss)
        _keep_if_finite(finite, moving, moving_before)
        self._apply_if_finite(finite, grads, variables, out.pop("after_apply", ()))
        metrics = {k: out[k] for k in self.scalars if k in out}
        metrics.update(grad_norm=grad_norm,
                       skipped_steps=tf.cast(self.skipped_steps, tf.float32),
                       consecutive_skips=tf.cast(self.consecutive_skips, tf.float32))
        return metrics

    def _apply_if_finite(self, finite, grads, variables, after_apply_state=()):
        """Applies the update only when ``finite``; otherwise counts a skipped step."""
        def apply_on_replica(grads, state):
            self.optimizer.apply(grads, variables)
            self.after_apply(state)

        def apply():
            apply_on_replica(grads, after_apply_state)
            self.consecutive_skips.assign(0)

        def skip():
            self.skipped_steps.assign_add(1)
            self.consecutive_skips.assign_add(1)

        if compat.strategy_supports_no_merge_call():
            tf.cond(finite, apply, skip)
            return

        # MirroredStrategy's optimizer update calls merge_call, which cannot sit inside a cond in
        # replica context: take the branch in cross-replica context (as Keras' LossScaleOptimizer).
        def cross_replica(strategy, finite, grads, state):
            finite = strategy.experimental_local_results(finite)[0]  # equal on every replica

            def apply_all():
                strategy.extended.call_for_each_replica(apply_on_replica, args=(grads, state))
                self.consecutive_skips.assign(0)

            tf.cond(finite, apply_all, skip)

        tf.distribute.get_replica_context().merge_call(
            cross_replica, args=(finite, grads, after_apply_state))


def _keep_if_finite(finite, variables, before):
    """Puts ``variables`` back to ``before`` unless ``finite``.

    A select in replica context, not a ``tf.cond``: no branch, so nothing differs between
    replicas or strategies (MirroredStrategy, XLA), and the forward pass's collectives (BatchNorm's
    all-reduce of the moving statistics) ran unconditionally on every replica before it.
    """
    for v, old in zip(variables, before):
        v.assign(tf.where(finite, v.value, old))


def skip_optimizer_all_reduce(optimizer):
    """Makes a Keras optimizer trust that gradients are already all-reduced.

    Keras' TF optimizer sums gradients across replicas inside ``apply``. ``Objective.train_step``
    reduces them itself (once) so the gradient norm it logs, and the finiteness check, see the
    global gradient; without this the optimizer would sum a second time.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    compat.skip_optimizer_gradient_reduction(inner)
    return optimizer
