"""align_tf.compat: each wrapped Keras/TF private name still does what align_tf relies on, on tiny
real objects; and no module of align_tf but compat.py uses such a name."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf import compat

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "align_tf")


class _Outer(keras.layers.Layer):
    def __init__(self):
        super().__init__()
        self.blocks = [keras.layers.Dense(2, name="inner_dense"),
                       keras.Sequential([keras.layers.Dropout(0.5, name="inner_dropout")])]

    def call(self, x, training=None):
        return self.blocks[1](self.blocks[0](x), training=training)


def test_flatten_layers_finds_nested_layers_in_order():
    outer = _Outer()
    names = [layer.name for layer in compat.flatten_layers(outer)]
    assert names[0] == outer.name
    assert names.index("inner_dense") < names.index("inner_dropout")
    nested = compat.flatten_layers(outer, include_self=False)
    assert outer.name not in [layer.name for layer in nested]


def test_seed_generators_are_a_layers_own():
    outer = _Outer()
    dropout = [layer for layer in compat.flatten_layers(outer) if layer.name == "inner_dropout"][0]
    assert compat.seed_generators(outer) == []
    generators = [g for layer in compat.flatten_layers(outer)
                  for g in compat.seed_generators(layer)]
    assert len(generators) == 1 and generators[0] is dropout.seed_generator


def _functional():
    inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((3,), name="b")}
    x = keras.layers.Add()([inputs["a"], inputs["b"]])
    # Positive weights: a random kernel gives all-zero ReLU outputs one time in 16 (seen in CI).
    x = keras.layers.Dense(4, kernel_initializer="ones", name="dense")(x)
    x = keras.layers.Dropout(0.99, seed=1, name="dropout")(x)
    x = keras.layers.Activation("relu", name="relu")(x)  # its call takes no ``training``
    return keras.Model(inputs, {"out": x, "pre": x})


def _replay(model, inputs, training):
    """``models.remat``'s walk over the graph, through compat."""
    by_depth = compat.nodes_by_depth(model)
    standardized = keras.tree.flatten(compat.standardize_inputs(model, inputs))
    tensors = {id(x): y for x, y in zip(model.inputs, standardized)}
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = compat.operation_fn(node.operation, training)(*args, **kwargs)
            for x, y in zip(node.outputs, keras.tree.flatten(outputs)):
                tensors[id(x)] = y
    return keras.tree.pack_sequence_as(compat.outputs_struct(model),
                                       [tensors[id(x)] for x in model.outputs])


def test_functional_graph_replays_as_keras_runs_it():
    model = _functional()
    inputs = {"b": np.ones((2, 3), np.float32), "a": np.full((2, 3), 2.0, np.float32)}
    expected = model(inputs, training=False)
    replayed = _replay(model, inputs, training=False)
    assert set(replayed) == {"out", "pre"}
    np.testing.assert_allclose(replayed["out"], expected["out"], rtol=1e-6)
    # training=True reaches Dropout (rate 0.99 zeroes nearly all) and not Activation (no arg).
    trained = _replay(model, inputs, training=True)
    assert np.count_nonzero(trained["out"]) < np.count_nonzero(expected["out"])


def test_accept_raw_call_args_hands_numpy_to_call():
    seen = {}

    class Raw(keras.layers.Layer):
        def __init__(self, raw):
            super().__init__(autocast=False)
            if raw:
                compat.accept_raw_call_args(self)
            self.built = True

        def call(self, images, seed):
            seen["images"], seen["seed"] = images, seed
            return tf.zeros([])

    images = np.zeros((1, 2, 2, 3), np.uint8)
    Raw(raw=True)(images, 7)
    assert isinstance(seen["images"], np.ndarray) and seen["images"].dtype == np.uint8
    assert seen["seed"] == 7
    with pytest.raises(ValueError):  # Keras' default refuses a non-tensor positional argument
        Raw(raw=False)(images, 7)


def test_overrides_checks_the_hook_and_keras_still_calls_it():
    calls = []

    class BN(keras.layers.BatchNormalization):
        @compat.overrides(keras.layers.BatchNormalization)
        def _moments(self, inputs, mask):
            calls.append(1)
            return super()._moments(inputs, mask)

    BN()(np.ones((2, 3), np.float32), training=True)
    assert calls

    class AdamW(keras.optimizers.AdamW):
        @compat.overrides(keras.optimizers.AdamW)
        def _apply_weight_decay(self, variables):
            calls.append(2)
            return super()._apply_weight_decay(variables)

    w = keras.Variable(np.ones(2, np.float32))
    AdamW(weight_decay=0.1).apply_gradients([(tf.ones(2), w)])
    assert 2 in calls

    with pytest.raises(RuntimeError, match=f"keras {re.escape(keras.__version__)}"):
        @compat.overrides(keras.layers.BatchNormalization)
        def _no_such_hook(self):
            pass


def test_batch_norm_reduction_axes():
    layer = keras.layers.BatchNormalization()
    layer.build((2, 3, 4, 5))
    assert list(compat.batch_norm_reduction_axes(layer)) == [0, 1, 2]


def _mirrored_sgd_step(skip: bool) -> float:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        w = keras.Variable(0.0)
        optimizer = keras.optimizers.SGD(1.0)
        optimizer.build([w])
    if skip:
        compat.skip_optimizer_gradient_reduction(optimizer)
    # Each replica holds the already all-reduced gradient 1.0.
    strategy.run(tf.function(lambda: optimizer.apply_gradients([(tf.constant(1.0), w)])))
    return float(w.numpy())


def test_skip_optimizer_gradient_reduction_sums_once():
    assert _mirrored_sgd_step(skip=False) == -2.0  # Keras sums across the 2 replicas
    assert _mirrored_sgd_step(skip=True) == -1.0


def test_adam_slots_and_uses_weight_decay():
    w = keras.Variable(np.ones(2, np.float32), name="kernel")
    b = keras.Variable(np.zeros(2, np.float32), name="bias")
    optimizer = keras.optimizers.AdamW(weight_decay=0.1, beta_1=0.9)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.apply_gradients([(tf.fill([2], 2.0), w), (tf.zeros(2), b)])
    m, v = compat.adam_slots(optimizer, w)
    np.testing.assert_allclose(m.numpy(), [0.2, 0.2], rtol=1e-6)  # (1 - β1) g
    np.testing.assert_allclose(v.numpy(), [0.004, 0.004], rtol=1e-5)  # (1 - β2) g²
    assert compat.uses_weight_decay(optimizer, w) and not compat.uses_weight_decay(optimizer, b)


def test_auto_trackable_children_and_object_graph(tmp_path):
    holder = compat.AutoTrackable()
    holder.step = tf.Variable(3, name="step")
    holder.inner = compat.AutoTrackable()
    holder.inner.queue = tf.Variable([1.0, 2.0])
    assert set(compat.trackable_children(holder)) == {"step", "inner"}
    assert compat.trackable_children(holder)["step"] is holder.step
    assert not hasattr(holder, "trainable_variables")  # not a tf.Module
    path = tf.train.Checkpoint(root=holder).write(str(tmp_path / "ckpt"))
    graph = compat.trackable_object_graph(
        tf.train.load_checkpoint(path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    names = {child.local_name for node in graph.nodes for child in node.children}
    assert {"root", "step", "inner", "queue"} <= names


def test_concrete_functions_lists_traces_and_their_variables():
    v = tf.Variable(2.0)
    fn = tf.function(lambda x: x * v)
    assert compat.concrete_functions(fn) == []
    fn(tf.ones([1]))
    fn(tf.ones([2, 2]))
    concrete = compat.concrete_functions(fn)
    assert len(concrete) == 2 and all(v in c.variables for c in concrete)


def test_merge_call_helpers_under_mirrored_strategy():
    assert compat.strategy_supports_no_merge_call()  # default strategy
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        w = tf.Variable(0.0)
    supports = []

    def update(strategy, value):
        strategy.extended.update(w, lambda var, x: var.assign_add(x), args=(value,), group=False)

    @tf.function
    def step():
        supports.append(compat.strategy_supports_no_merge_call())
        compat.maybe_merge_call(update, tf.distribute.get_strategy(), tf.constant(1.0))

    strategy.run(step)
    assert supports and not any(supports)  # MirroredStrategy updates through merge_call
    assert [float(x) for x in strategy.experimental_local_results(w)] == [1.0, 1.0]


def test_tape_could_record():
    assert not compat.tape_could_record()
    with tf.GradientTape():
        assert compat.tape_could_record()
    with tf.GradientTape() as tape, tape.stop_recording():
        assert not compat.tape_could_record()


def test_missing_names_fail_with_the_version():
    with pytest.raises(RuntimeError, match=f"keras {re.escape(keras.__version__)}"):
        compat.flatten_layers(object())
    with pytest.raises(RuntimeError, match=f"tensorflow {re.escape(tf.__version__)}"):
        compat.trackable_children(object())


# -- no private Keras/TF name outside compat.py -------------------------------------------------

_TEXT = re.compile(r"keras\.src|tensorflow\.python|tensorflow\.core|__internal__")
_ATTRIBUTE = re.compile(r"\.(_[a-z]\w*)")
_DEFINITION = re.compile(r"^\s*def (_[a-z]\w*)\(")
# Project-own attributes that happen to share a name with a Keras/TF private one.
_OWN = {"_lock": "data/tfrecord.py's counter lock",
        "_handle": "trainer.py's SIGTERM handler"}


def _keras_tf_private_names() -> set:
    """Private attribute names of the Keras/TF objects align_tf builds on."""
    w = keras.Variable(np.ones(2, np.float32))
    optimizers = [keras.optimizers.AdamW(), keras.optimizers.Lamb(), keras.optimizers.SGD()]
    for optimizer in optimizers:
        optimizer.build([w])
    model = _functional()
    bn = keras.layers.BatchNormalization()
    bn.build((1, 2))
    fn = tf.function(lambda x: x)
    fn(tf.ones([]))
    objects = [model, bn, keras.layers.Dropout(0.1), keras.layers.EinsumDense("ab,bc->ac", 2),
               keras.layers.Conv2D(1, 1), *optimizers, fn, tf.Variable(1.0), w,
               compat.AutoTrackable(), tf.Module(), tf.train.Checkpoint(),
               tf.distribute.get_strategy()]
    names = {name for obj in objects for name in dir(obj)}
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_private_keras_tf_name_outside_compat():
    private = _keras_tf_private_names() - set(_OWN)
    assert {"_flatten_layers", "_seed_generators", "_nodes_by_depth", "_all_reduce_sum_gradients",
            "_trackable_children", "_list_all_concrete_functions", "_moments"} <= private
    found = []
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, PACKAGE)
            if not name.endswith(".py") or rel == "compat.py":
                continue
            lines = open(path, encoding="utf-8").read().splitlines()
            hooks = {m.group(1) for i, line in enumerate(lines) if (m := _DEFINITION.match(line))
                     and i and lines[i - 1].strip().startswith("@compat.overrides(")}
            for i, line in enumerate(lines, 1):
                code = line.split("#", 1)[0]
                if _TEXT.search(code):
                    found.append(f"{rel}:{i}: {line.strip()}")
                for m in _ATTRIBUTE.finditer(code):
                    if m.group(1) in private and not (
                            m.group(1) in hooks and code[:m.start()].endswith("super()")):
                        found.append(f"{rel}:{i}: {line.strip()}")
                m = _DEFINITION.match(code)
                if m and m.group(1) in private and m.group(1) not in hooks:
                    found.append(f"{rel}:{i}: overrides a private Keras/TF method undeclared "
                                 f"(use @compat.overrides): {line.strip()}")
    assert not found, "Keras/TF private names outside align_tf/compat.py:\n" + "\n".join(found)
