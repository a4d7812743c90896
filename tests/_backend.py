"""Backend helpers for tests that run on every Keras backend (TensorFlow, JAX, PyTorch)."""

import keras
import pytest

from kprune.utils import backends

BACKEND = keras.backend.backend()

tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="uses TensorFlow APIs (tf.distribute, tf.data, tf.GradientTape)"
)


def numpy(x):
    """A tensor or variable as a NumPy array, on any backend."""
    return keras.ops.convert_to_numpy(x)


def train_step(model, optimizer, loss_fn, x, y):
    """One eager training step of a custom loop: gradients on the model's
    variables, then `optimizer.apply` (which runs the mask constraints)."""
    grads = backends.gradients(
        model, x, lambda outputs: loss_fn(y, outputs), model.trainable_variables, training=True
    )
    optimizer.apply(grads, model.trainable_variables)
