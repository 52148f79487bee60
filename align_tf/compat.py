"""The one place align_tf touches Keras/TF private names (``_x`` attributes, ``keras.src``,
``tensorflow.python``/``tensorflow.core``, ``tf.__internal__``).

Each function wraps one private name, says why the project needs it, and fails with a one-line
``RuntimeError`` naming the installed Keras/TF version when the name is gone, instead of an
``AttributeError`` deep in a training step (or, worse, a hook Keras no longer calls).
``tests/test_compat.py`` checks on tiny real objects that each still does what the project
relies on, and that no other module of align_tf uses these names.

Checked on keras 3.15.1 and tensorflow 2.21.0 (tests/test_compat.py run there). setup.py's pins,
``keras>=3.10,<3.16`` and ``tensorflow>=2.21,<2.22``, are as tight as this module needs: every
Keras name here is also in keras 3.10.0's source with the same form (read from its wheel, not
run), including ``operation_fn(operation, **call_context_args)``; the TF names are only known on
2.21, which the pin holds to one minor. A new Keras/TF minor must pass tests/test_compat.py
before a pin is widened.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf


def _missing(what: str, library: str = "keras") -> RuntimeError:
    version = keras.__version__ if library == "keras" else tf.__version__
    pin = "keras<3.16" if library == "keras" else "tensorflow<2.22"
    return RuntimeError(f"align_tf needs {what}, missing in {library} {version}; pin {pin} "
                        "(see align_tf/compat.py)")


def _attr(obj, name: str, library: str = "keras"):
    try:
        return getattr(obj, name)
    except AttributeError:
        raise _missing(f"{type(obj).__name__}.{name}", library) from None


# -- Keras: layers and functional models --------------------------------------------------------

def flatten_layers(layer, include_self: bool = True) -> list:
    """Wraps ``Layer._flatten_layers(include_self, recursive=True)``: ``layer`` and every layer
    nested in it (attributes, lists, dicts, sub-models), depth-first in assignment order, each once.

    Why: ``Model.layers`` lists only the top level; the moving statistics of every BatchNorm
    (``models.batch_norm``), every ``SeedGenerator`` (``models.random_streams``) and every
    ``EinsumDense`` inside keras-hub's attention (``models.flat_einsum``) sit deeper, and their
    order must be stable across runs. Checked on keras 3.15.1."""
    flatten = _attr(layer, "_flatten_layers")
    return list(flatten(include_self=include_self, recursive=True))


def seed_generators(layer) -> list:
    """Wraps ``Layer._seed_generators``: the ``SeedGenerator``s ``layer`` itself owns (not its
    nested layers': combine with ``flatten_layers``).

    Why: ``models.random_streams`` replays a forward pass's dropout masks in the rematerialised
    backward pass; Keras has no public list of a layer's generators. Checked on keras 3.15.1."""
    return list(_attr(layer, "_seed_generators"))


def nodes_by_depth(model) -> dict:
    """Wraps ``Functional._nodes_by_depth``: ``{depth: [Node]}`` of a functional model's graph;
    Keras runs the nodes deepest first.

    Why: ``models.remat`` replays the graph node by node in Keras' own order to cut it into
    rematerialised segments. Checked on keras 3.15.1."""
    return _attr(model, "_nodes_by_depth")


def standardize_inputs(model, inputs):
    """Wraps ``Functional._standardize_inputs``: ``inputs`` as the functional model's ``call``
    sees them (dict/list matched to ``model.inputs``, dtypes converted).

    Why: ``models.remat``'s replacement ``call`` must feed the nodes what Keras' would.
    Checked on keras 3.15.1."""
    return _attr(model, "_standardize_inputs")(inputs)


def outputs_struct(model):
    """Wraps ``Functional._outputs_struct``: the nesting of a functional model's outputs.

    Why: ``models.remat``'s replacement ``call`` returns outputs nested as Keras' ``call`` does.
    Checked on keras 3.15.1."""
    return _attr(model, "_outputs_struct")


def operation_fn(operation, training):
    """Wraps ``keras.src.models.functional.operation_fn``: ``operation`` as a callable that gets
    the call-context arguments (``training=``) a functional model's ``call`` injects.

    Why: ``models.remat`` runs a functional model's nodes itself and must pass ``training`` as
    Keras would (only to layers whose ``call`` takes it). Checked on keras 3.15.1."""
    try:
        from keras.src.models.functional import operation_fn as keras_operation_fn
    except ImportError:
        raise _missing("keras.src.models.functional.operation_fn") from None
    return keras_operation_fn(operation, training=training)


def accept_raw_call_args(layer) -> None:
    """Sets ``Layer._convert_input_args = False`` and ``_allow_non_tensor_positional_args = True``:
    ``layer.__call__`` hands numpy/uint8/string inputs to ``call`` unconverted (as keras-hub's
    preprocessing layers do).

    Why: ``data.preprocessing.ImagePreprocessor`` takes uint8 images and Python seeds; Keras would
    otherwise convert them to its float dtype first. Checked on keras 3.15.1."""
    for name in ("_convert_input_args", "_allow_non_tensor_positional_args"):
        _attr(layer, name)  # set by Layer.__init__: gone means Keras no longer reads it
    layer._convert_input_args = False
    layer._allow_non_tensor_positional_args = True


def overrides(base: type):
    """Decorator for a method that overrides a private hook of ``base`` (e.g.
    ``BatchNormalization._moments``): raises at class definition if ``base`` no longer has a
    method of that name, since Keras would then silently stop calling the override.

    Why: ``models.batch_norm`` replaces Keras' batch statistics (``_moments``) and ``optim.AdamW``
    Keras' weight-decay pass (``_apply_weight_decay``). Checked on keras 3.15.1."""
    def check(method):
        if not callable(getattr(base, method.__name__, None)):
            raise _missing(f"{base.__name__}.{method.__name__}")
        return method
    return check


def batch_norm_reduction_axes(layer) -> list:
    """Wraps ``BatchNormalization._reduction_axes``: the axes the batch statistics reduce over
    (all but ``axis``), set when the layer is built.

    Why: ``models.batch_norm``'s group statistics reduce over the same axes as Keras' own.
    Checked on keras 3.15.1."""
    return _attr(layer, "_reduction_axes")


# -- Keras: optimizers -------------------------------------------------------------------------

def skip_optimizer_gradient_reduction(optimizer) -> None:
    """Replaces the TF optimizer's ``_all_reduce_sum_gradients`` by the identity: ``apply`` in a
    replica context no longer sums the gradients across replicas.

    Why: ``Objective.train_step`` all-reduces the gradients itself (once), so the logged gradient
    norm and the finiteness check see the global gradient; Keras would sum them a second time.
    Checked on keras 3.15.1 (``keras.src.backend.tensorflow.optimizer.TFOptimizer``)."""
    _attr(optimizer, "_all_reduce_sum_gradients")
    optimizer._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)


def adam_slots(optimizer, variable) -> tuple:
    """Wraps ``_get_variable_index``, ``_momentums`` and ``_velocities``: Adam's first and second
    moment slot variables of ``variable``.

    Why: ``optim.AdamW`` updates them with TF's fused ``ResourceApplyAdam`` kernel, keeping
    Keras' slots so checkpoints stay interchangeable. Checked on keras 3.15.1."""
    index = _attr(optimizer, "_get_variable_index")(variable)
    return _attr(optimizer, "_momentums")[index], _attr(optimizer, "_velocities")[index]


def uses_weight_decay(optimizer, variable) -> bool:
    """Wraps ``Optimizer._use_weight_decay``: whether ``variable`` is decayed (not excluded by
    ``exclude_from_weight_decay``).

    Why: ``optim.AdamW`` applies the decay itself, inside its fused update. Checked on
    keras 3.15.1."""
    return _attr(optimizer, "_use_weight_decay")(variable)


# -- TensorFlow ---------------------------------------------------------------------------------

def __getattr__(name: str):
    """``AutoTrackable``: ``tf.__internal__.tracking.AutoTrackable``, the base of a
    ``tf.saved_model``/``tf.train.Checkpoint`` object whose attributes are tracked, with no
    ``tf.Module`` name scope or variable collection.

    Why: the export modules, ``ObjectiveState`` and the run directory's checkpoint parts are
    plain attribute holders; ``tf.Module`` would add its own name scoping and properties.
    Checked on tensorflow 2.21.0."""
    if name == "AutoTrackable":
        try:
            return tf.__internal__.tracking.AutoTrackable
        except AttributeError:
            raise _missing("tf.__internal__.tracking.AutoTrackable", "tensorflow") from None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def trackable_children(obj) -> dict:
    """Wraps ``Trackable._trackable_children()``: ``{name: child}`` as a checkpoint saves them.

    Why: ``migrate.checkpoint_view`` re-hangs an objective's state under the layout of
    older run directories. Checked on tensorflow 2.21.0."""
    return dict(_attr(obj, "_trackable_children", "tensorflow")())


def concrete_functions(fn) -> list:
    """Wraps ``tf.function``'s ``_list_all_concrete_functions()``: every concrete function traced
    so far (``get_concrete_function`` would trace a new one).

    Why: ``export`` collects the variables the exported signatures capture. Checked on
    tensorflow 2.21.0."""
    return list(_attr(fn, "_list_all_concrete_functions", "tensorflow")())


def strategy_supports_no_merge_call() -> bool:
    """Wraps ``tf.__internal__.distribute.strategy_supports_no_merge_call()``: whether the current
    strategy's optimizer update runs without a ``merge_call`` (so it may sit inside a ``tf.cond``
    in replica context).

    Why: ``Objective``'s skip of non-finite steps branches in replica context when it can.
    Checked on tensorflow 2.21.0."""
    try:
        supports = tf.__internal__.distribute.strategy_supports_no_merge_call
    except AttributeError:
        raise _missing("tf.__internal__.distribute.strategy_supports_no_merge_call",
                       "tensorflow") from None
    return supports()


def maybe_merge_call(fn, strategy, *args, **kwargs):
    """Wraps ``tf.__internal__.distribute.interim.maybe_merge_call``: ``fn(strategy, *args)`` in
    cross-replica context, through ``merge_call`` only where the strategy needs one.

    Why: the momentum encoder's EMA and queue updates go through ``strategy.extended.update``
    as Keras' optimizers do. Checked on tensorflow 2.21.0."""
    try:
        merge = tf.__internal__.distribute.interim.maybe_merge_call
    except AttributeError:
        raise _missing("tf.__internal__.distribute.interim.maybe_merge_call",
                       "tensorflow") from None
    return merge(fn, strategy, *args, **kwargs)


def tape_could_record() -> bool:
    """Wraps ``tensorflow.python.eager.record.could_possibly_record()``: whether any gradient tape
    (or tf.function gradient) could record the ops run now.

    Why: ``models.activations.swish`` skips its custom-gradient wrapper where nothing
    differentiates (inference, export); no public API tells. Checked on tensorflow 2.21.0."""
    try:
        from tensorflow.python.eager import record
        return record.could_possibly_record()
    except (ImportError, AttributeError):
        raise _missing("tensorflow.python.eager.record.could_possibly_record",
                       "tensorflow") from None


@functools.cache
def _object_graph_proto():
    try:
        from tensorflow.core.protobuf import trackable_object_graph_pb2
        return trackable_object_graph_pb2.TrackableObjectGraph
    except (ImportError, AttributeError):
        raise _missing("tensorflow.core.protobuf.trackable_object_graph_pb2", "tensorflow") \
            from None


def trackable_object_graph(serialized: bytes):
    """Parses a checkpoint's ``_CHECKPOINTABLE_OBJECT_GRAPH`` entry into TF's
    ``TrackableObjectGraph`` proto (``tensorflow.core.protobuf.trackable_object_graph_pb2``).

    Why: ``trainer`` lists the checkpoint entries a restore left unused, node by node.
    Checked on tensorflow 2.21.0."""
    graph = _object_graph_proto()()
    graph.ParseFromString(serialized)
    return graph
