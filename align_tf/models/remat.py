"""Rematerialisation (gradient checkpointing) of a functional tower, one segment at a time.

``rematerialize(model, segment_of)`` makes the training-mode forward of a functional Keras model
keep, for the backward pass, only the tensors that cross segment boundaries (an EfficientNet
block's input, a BERT layer's input); the backward pass re-runs each segment's forward
(``tf.recompute_grad``) to get its activations back. Memory for activations goes from the sum over
all layers to one segment's plus the boundaries, for about one more forward pass of compute
(open_clip's ``--grad-checkpointing``, big_vision's ``remat_policy``, HF's
``gradient_checkpointing``).

The model is not rebuilt: same layers, weights, names and checkpoints. Only its ``call`` on this
instance changes, and only with ``training=True``; inference runs Keras' own graph walk.

The recomputation changes no result:

* dropout and stochastic depth draw the same masks: the segment's position in the active
  ``random_streams.stateless_seeds`` stream is captured in the forward pass and replayed in the
  backward pass (``random_streams.capture`` / ``replay``). Draws outside such a context are Keras'
  stateful ones, which a recomputation cannot repeat: train through ``Objective.train_step``.
* BatchNorm normalises the recomputed segment with the same batch statistics, and does not update
  its moving statistics a second time (``batch_norm.frozen_moving_statistics``).

Under XLA (``train.jit_compile``) the values are the same; XLA's common-subexpression elimination
may merge the recomputation with the forward pass, i.e. the memory saving can be lost there.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from keras import tree

from align_tf import compat
from align_tf.models import batch_norm, random_streams


@dataclasses.dataclass
class _Segment:
    """Consecutive nodes of the functional graph; ``key`` is ``None`` for nodes run as usual."""

    key: str | None
    nodes: list
    inputs: list = dataclasses.field(default_factory=list)   # ids of tensors read from outside
    outputs: list = dataclasses.field(default_factory=list)  # ids of tensors needed afterwards


def _plan(model, segment_of) -> list:
    """The model's nodes in Keras' execution order, grouped into runs of one segment key."""
    nodes = []
    by_depth = compat.nodes_by_depth(model)
    for depth in sorted(by_depth, reverse=True):  # Keras' own order
        nodes += [n for n in by_depth[depth]
                  if n.operation is not None and not n.is_input]
    segments = []
    for node in nodes:
        key = segment_of(node.operation.name)
        if segments and key is not None and segments[-1].key == key:
            segments[-1].nodes.append(node)
        else:
            segments.append(_Segment(key, [node]))
    model_outputs = {id(x) for x in model.outputs}
    for i, segment in enumerate(segments):
        if segment.key is None:
            continue
        produced = {id(x) for node in segment.nodes for x in node.outputs}
        for node in segment.nodes:
            for x in node.input_tensors:
                if id(x) not in produced and id(x) not in segment.inputs:
                    segment.inputs.append(id(x))
        later = {id(x) for s in segments[i + 1:] for node in s.nodes for x in node.input_tensors}
        segment.outputs = [id(x) for node in segment.nodes for x in node.outputs
                           if id(x) in later or id(x) in model_outputs]
    return segments


def _run_nodes(nodes, tensors: dict, training):
    for node in nodes:
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = compat.operation_fn(node.operation, training)(*args, **kwargs)
        for x, y in zip(node.outputs, tree.flatten(outputs)):
            tensors[id(x)] = y


def _run_rematerialized(segment: _Segment, tensors: dict, training):
    """Runs ``segment`` so that the backward pass recomputes it; writes its outputs to ``tensors``.

    Float inputs are the recomputed function's arguments (gradients flow to them); the others
    (e.g. BERT's padding mask) are closed over.
    """
    floats = [i for i in segment.inputs if tensors[i].dtype.is_floating]
    constants = {i: tensors[i] for i in segment.inputs if i not in floats}
    forward_stream = []

    def body(*values):
        local = {**constants, **dict(zip(floats, values))}
        _run_nodes(segment.nodes, local, training)
        return [local[i] for i in segment.outputs]

    def forward_or_recompute(*values):
        # tf.recompute_grad calls this once in the forward pass, then again from the backward pass.
        if not forward_stream:
            forward_stream.append(random_streams.capture())
            return body(*values)
        with random_streams.replay(forward_stream[0]), batch_norm.frozen_moving_statistics():
            return body(*values)

    outputs = tf.recompute_grad(forward_or_recompute)(*[tensors[i] for i in floats])
    tensors.update(zip(segment.outputs, tree.flatten(outputs)))


def rematerialize(model, segment_of) -> None:
    """Makes ``model``'s training-mode forward rematerialise its segments in the backward pass.

    Args:
      model: a built functional ``keras.Model`` (an EfficientNet or BERT tower).
      segment_of: maps a layer (operation) name to its segment's name, or ``None`` for layers
        outside any segment (run and kept as usual). Consecutive layers with the same name form
        one segment.
    """
    segments = _plan(model, segment_of)
    keras_call = model.call

    def call(inputs, training=None, mask=None, **kwargs):
        # Keras hands dict inputs a dict of None masks; a real mask takes Keras' own walk.
        if not training or kwargs or any(x is not None for x in tree.flatten(mask)):
            return keras_call(inputs, training=training, mask=mask, **kwargs)
        tensors = {id(x): y for x, y in zip(model.inputs,
                                            tree.flatten(compat.standardize_inputs(model, inputs)))}
        for segment in segments:
            if segment.key is None:
                _run_nodes(segment.nodes, tensors, training)
            else:
                _run_rematerialized(segment, tensors, training)
        outputs = tree.pack_sequence_as(compat.outputs_struct(model),
                                        [tensors[id(x)] for x in model.outputs])
        return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs

    model.call = call
    model.rematerialized = True
