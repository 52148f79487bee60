"""Stateless random streams for the towers' dropout and stochastic depth: per replica, per step.

Keras layers draw their randomness from a ``keras.random.SeedGenerator`` whose state is a variable.
Under a distribution strategy that variable is mirrored, so every replica starts from the same
state and draws the *same* dropout masks and stochastic-depth decisions; and the state is not in
the training checkpoint, so a resumed run replays the masks of steps 0, 1, 2, ...

``stateless_seeds`` replaces those draws, while it is active, by seeds that are a pure function of

    (seed, global replica id, step, sub_batch) → per context entry,
    (generator's index in the model, how many times it has drawn in this entry) → per draw,

folded together with ``tf.random.fold_in``. Every replica (across workers too: the replica id is
global) gets its own masks, a rerun gets the same ones, and a run resumed at step k draws exactly
what the uninterrupted run drew at step k: no random state needs checkpointing.

How: each Keras layer draws through ``keras.random.*(..., seed=self.seed_generator)``, which calls
``SeedGenerator.next()``. While a context is active, each of the model's generators has its ``next``
replaced (on the instance, restored on exit) by a dispatcher that returns the stateless seed. The
streams in effect are per thread, because MirroredStrategy traces each replica in its own thread,
interleaved at every cross-replica call (a BatchNorm all-reduce sits between two dropouts).

The draw counter is a Python int that starts at 0 on every entry: re-entering the context with the
same ``(step, sub_batch)`` (gradient accumulation re-running a micro-batch, rematerialisation
re-running a forward) reproduces the same masks, and different ``sub_batch`` values give
independent ones. ``capture`` and ``replay`` do the same for a part of a forward pass
(rematerialisation recomputes one block during the backward pass, after the context has exited).
Draws happen while tracing: inside a ``tf.function`` the step is a tensor and
the graph draws fresh masks each time it runs.
"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

from align_tf import compat

_local = threading.local()  # .stream: the _Stream of this thread's innermost active context
_lock = threading.Lock()
_entries = {}  # id(generator) -> active contexts (of any thread) that replaced its next


def seed_generators(model) -> list:
    """The ``SeedGenerator``s of ``model`` and all its nested layers, in a fixed order (depth-first
    over the layers as they were assigned), so a generator's index names it across runs.

    Keras 3 layers keep the generators they own in ``_seed_generators`` (e.g. ``Dropout``'s, and
    through nested layers keras-hub's ``TransformerEncoder`` dropouts and its attention dropout).
    """
    found, seen = [], set()
    for layer in compat.flatten_layers(model):
        for generator in compat.seed_generators(layer):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


class _Stream:
    """One context entry: its key, and what each of its generators has drawn so far."""

    def __init__(self, key, generators):
        self.key = key
        self.generators = list(generators)
        self.index = {id(g): i for i, g in enumerate(generators)}
        self.draws = {}

    def copy(self):
        """A stream with the same key and generators that continues from this one's draws."""
        stream = _Stream.__new__(_Stream)
        stream.key, stream.generators, stream.index = self.key, self.generators, self.index
        stream.draws = dict(self.draws)
        return stream

    def seed(self, generator):
        i = self.index[id(generator)]
        n = self.draws.get(i, 0)
        self.draws[i] = n + 1
        return tf.random.fold_in(tf.random.fold_in(self.key, i), n)


def _dispatcher(generator, original):
    def next(ordered=True):  # noqa: A001 - SeedGenerator.next's signature
        stream = getattr(_local, "stream", None)
        if stream is not None and id(generator) in stream.index:
            return stream.seed(generator)
        return original(ordered)
    return next


def _install(generators):
    with _lock:
        for g in generators:
            if not _entries.get(id(g)):
                g.next = _dispatcher(g, g.next)
            _entries[id(g)] = _entries.get(id(g), 0) + 1


def _uninstall(generators):
    with _lock:
        for g in generators:
            _entries[id(g)] -= 1
            if not _entries[id(g)]:
                del g.next  # the class's stateful next again
                del _entries[id(g)]


def _as_int32(x):
    # XLA's stateless RNG ops take int32 seeds; steps wrap modulo 2**32, still distinct per step.
    return tf.cast(tf.convert_to_tensor(x), tf.int32)


@contextlib.contextmanager
def stateless_seeds(model, seed: int, step, sub_batch=0, replica_id=None):
    """Within the context, every random draw of ``model``'s layers uses a stateless seed.

    Args:
      model: the Keras model (e.g. the ``DualEncoder``) whose layers' generators are replaced.
      seed: the run's seed (``config.seed``).
      step: the training step (int or scalar integer tensor/variable, read once at entry): e.g. the
        optimizer's ``iterations`` before its update.
      sub_batch: which part of the step (gradient-accumulation micro-batch); re-entering with the
        same ``(step, sub_batch)`` draws the same masks.
      replica_id: ``None``: this replica's global id in the current replica context
        (``replica_id_in_sync_group``; 0 outside a strategy).

    Generators of other models (or draws outside the context) keep Keras' stateful behaviour.
    """
    if replica_id is None:
        ctx = tf.distribute.get_replica_context()
        replica_id = ctx.replica_id_in_sync_group if ctx is not None else 0
    key = tf.constant([seed & 0x7FFFFFFF, 0], tf.int32)
    for value in (replica_id, step, sub_batch):
        key = tf.random.fold_in(key, _as_int32(value))
    generators = seed_generators(model)
    previous = getattr(_local, "stream", None)
    _install(generators)
    _local.stream = _Stream(key, generators)
    try:
        yield
    finally:
        _local.stream = previous
        _uninstall(generators)



def capture():
    """The calling thread's active stream at this point of the forward pass (``None`` if no
    ``stateless_seeds`` context is active), for ``replay``."""
    stream = getattr(_local, "stream", None)
    return stream.copy() if stream is not None else None


@contextlib.contextmanager
def replay(captured):
    """Within the context, draws repeat those made after ``capture()`` returned ``captured``: the
    same generators draw the same seeds in the same order (also after the capturing context has
    exited, e.g. in a rematerialised block's backward pass). ``None``: draws as outside any context.
    """
    if captured is None:
        yield
        return
    generators = captured.generators
    previous = getattr(_local, "stream", None)
    _install(generators)
    _local.stream = captured.copy()
    try:
        yield
    finally:
        _local.stream = previous
        _uninstall(generators)
