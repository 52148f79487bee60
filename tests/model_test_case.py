"""One shared set of checks every model in align_tf passes (keras-hub style)."""

import os
import tempfile

import numpy as np
import tensorflow as tf


class ModelTestCase:
    """Mix into a pytest class; call ``run_model_checks`` from a test."""

    def run_model_checks(self, make_model, inputs, expected_shape, other_batch_inputs=None):
        """Output shape; deterministic inference; weights round-trip through a .weights.h5 file;
        other batch sizes; XLA compilation gives the same numbers as eager."""
        model = make_model()
        out = model(inputs, training=False)
        assert tuple(out.shape) == tuple(expected_shape)
        assert np.all(np.isfinite(out.numpy()))
        np.testing.assert_allclose(model(inputs, training=False).numpy(), out.numpy(), atol=1e-6)

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.weights.h5")
            model.save_weights(path)
            restored = make_model()
            restored.load_weights(path)
        np.testing.assert_allclose(restored(inputs, training=False).numpy(), out.numpy(), atol=1e-5)

        if other_batch_inputs is not None:
            other = model(other_batch_inputs, training=False)
            assert other.shape[1:] == out.shape[1:]

        xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
        np.testing.assert_allclose(xla(inputs).numpy(), out.numpy(), atol=1e-4, rtol=1e-4)
        return model
