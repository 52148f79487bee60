"""Exact gradient accumulation for losses over the global batch (GradCache, Gao et al., 2021).

Accumulating K sub-batch gradients the usual way is wrong for a contrastive loss: each sub-batch
would see only its own rows as negatives. ``accumulated_gradients`` instead gives the loss and
gradients of the *whole* batch, as if its K sub-batches were K replicas:

1. embed each sub-batch without a tape (activations are dropped as soon as the embeddings exist);
2. evaluate the objective's loss once on the concatenated embeddings (gathered across replicas as
   without accumulation) and take its gradients with respect to the embeddings (and to the
   variables the loss reads directly: σ, SigLIP's t′ and b);
3. re-run each sub-batch's towers under a tape and back-propagate the cached embedding gradients
   through them (``Σ ⟨embeddings, cached gradient⟩``); the K gradients are summed.

Peak activation memory is one sub-batch's towers; the loss still sees the global batch.

Exactness needs both passes over a sub-batch to compute the same function:

* dropout and stochastic depth: both passes of sub-batch k draw from
  ``random_streams.stateless_seeds(model, seed, step, sub_batch=k)``, so the masks are the same;
* BatchNorm (training mode) normalises each sub-batch with that sub-batch's statistics in both
  passes, exactly as K replicas without sync BN would (with ``model.bn_group_size`` the statistics
  are those of sub-batch k of every replica in the group). The moving statistics are updated once
  per step with the mean of the K sub-batches' updates, which is one EMA step with the mean
  statistics, as K replicas do (K sequential updates would amount to momentum m^K); the second
  pass runs with them frozen. A step that turns out non-finite puts them back
  (``Objective.train_step``), as without accumulation.

Only objectives whose loss depends on the batch through the embeddings alone can do this
(``Objective.supports_accumulation``); the momentum towers' embeddings, which carry no gradient,
are computed inside the loss from the batch.
"""

from __future__ import annotations

import tensorflow as tf

from align_tf.models import batch_norm, random_streams


def split(batch, num_sub_batches: int) -> list:
    """``batch`` (a nest of tensors with the same leading dimension) as ``num_sub_batches``
    consecutive equal slices; a one-line ``ValueError`` unless they divide it evenly."""
    rows = tf.nest.flatten(batch)[0].shape[0]
    if rows is None:
        raise ValueError("gradient accumulation needs a static per-replica batch size (batch "
                         "with drop_remainder=True)")
    if rows % num_sub_batches:
        raise ValueError(f"train.accumulation_steps={num_sub_batches} must divide the "
                         f"per-replica batch of {rows}")
    size = rows // num_sub_batches
    return [tf.nest.map_structure(lambda x, k=k: x[k * size:(k + 1) * size], batch)
            for k in range(num_sub_batches)]


def accumulated_gradients(objective, batch, num_sub_batches: int, variables, loss_scale):
    """``(out, scaled_loss, grads)`` of ``objective`` on this replica's ``batch``, computed over
    ``num_sub_batches`` sub-batches with one sub-batch's activation memory.

    Args:
      objective: an ``Objective`` with ``supports_accumulation`` (``embed`` and
        ``loss_from_embeddings``).
      batch: this replica's batch.
      num_sub_batches: K.
      variables: the variables to differentiate (the model's trainable variables).
      loss_scale: the factor on the loss whose gradients are returned (``1 / num_replicas``).

    Returns:
      The loss dict of the whole batch (as ``compute_loss`` returns it), ``out["loss"] *
      loss_scale`` and its gradients with respect to ``variables`` (``None`` where unconnected),
      this replica's share before the cross-replica all-reduce.
    """
    model = objective.model
    step = objective.optimizer.iterations
    sub_batches = split(batch, num_sub_batches)
    moving = batch_norm.moving_statistics(model)
    before = [tf.identity(v.value) for v in moving]
    updated = [tf.zeros_like(v) for v in before]

    # 1. Embeddings without a tape. Each sub-batch updates the moving statistics from the same
    # starting point; the updates are averaged below.
    embeddings = []
    for k, sub_batch in enumerate(sub_batches):
        sub_batch = _after(embeddings[-1] if embeddings else [], sub_batch)
        with random_streams.stateless_seeds(model, objective.seed, step, sub_batch=k):
            embeddings.append(tf.nest.map_structure(
                tf.stop_gradient, objective.embed(sub_batch, training=True)))
        updated = [u + tf.identity(v.value) for u, v in zip(updated, moving)]
        for v, value in zip(moving, before):
            v.assign(value)
    for v, total in zip(moving, updated):
        v.assign(total / num_sub_batches)

    # 2. The loss of the whole batch, and its gradients w.r.t. the embeddings.
    embeddings = tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *embeddings)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        out = objective.loss_from_embeddings(batch, embeddings)
        scaled_loss = out["loss"] * loss_scale
    embedding_grads, grads = tape.gradient(scaled_loss, (embeddings, variables))
    embedding_grads = split(embedding_grads, num_sub_batches)

    # 3. Back through the towers, one sub-batch at a time, with the same masks and statistics.
    for k, sub_batch in enumerate(sub_batches):
        sub_batch = _after(grads, sub_batch)
        with tf.GradientTape() as tape, batch_norm.frozen_moving_statistics(), \
                random_streams.stateless_seeds(model, objective.seed, step, sub_batch=k):
            recomputed = objective.embed(sub_batch, training=True)
            surrogate = tf.add_n([tf.reduce_sum(e * tf.cast(g, e.dtype)) for e, g in zip(
                tf.nest.flatten(recomputed), tf.nest.flatten(embedding_grads[k]))])
        grads = [_add(g, s) for g, s in zip(grads, tape.gradient(surrogate, variables))]
    return out, scaled_loss, grads


def _after(done, sub_batch):
    """``sub_batch``, available only once the tensors of ``done`` are computed.

    In a graph the K sub-batches are independent until their gradients are summed, so TF's
    executor may run their towers at the same time and hold all their activations at once (the
    memory of the whole batch). Sub-batch k + 1 waits for sub-batch k's results instead.
    """
    done = [d.values if isinstance(d, tf.IndexedSlices) else d
            for d in tf.nest.flatten(done) if d is not None]
    if not done or tf.executing_eagerly():
        return sub_batch
    with tf.control_dependencies(done):
        return tf.nest.map_structure(tf.identity, sub_batch)


def _add(a, b):
    """Sum of two gradients; ``None`` (unconnected) stays ``None`` when both are, as a plain
    tape would give it, and embedding tables' sparse rows stay sparse."""
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)
