"""Bad arguments raise ValueError/TypeError naming the argument and the received value."""

import keras
import pytest

import kprune


def _dense_model():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(8), keras.layers.Dense(2)])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(block_size=(0, 2)), ValueError,
         "Argument `block_size` must have both dimensions >= 1. Received: block_size=(0, 2)"),
        (dict(block_size=(2, -1)), ValueError, "Received: block_size=(2, -1)"),
        (dict(block_size=4), ValueError, "Argument `block_size` must be a tuple of two integers"),
        (dict(block_pooling_type="MEAN"), ValueError,
         "Argument `block_pooling_type` must be one of ('AVG', 'MAX'). Received: block_pooling_type='MEAN'"),
        (dict(sparsity_m_by_n=(4, 4)), ValueError, "Argument `sparsity_m_by_n` must satisfy 1 <= M < N"),
        (dict(sparsity_m_by_n=(6, 4)), ValueError, "Received: sparsity_m_by_n=(6, 4)"),
        (dict(sparsity_m_by_n=(0, 4)), ValueError, "Received: sparsity_m_by_n=(0, 4)"),
        (dict(sparsity_m_by_n=(2, 4), block_size=(1, 2)), ValueError, "cannot be combined"),
        (dict(pruning_schedule=0.5), TypeError,
         "Argument `pruning_schedule` must be a kprune.PruningSchedule. Received: pruning_schedule=0.5"),
    ],
)
@pytest.mark.parametrize("target", ["layer", "model"])
def test_prune_low_magnitude_argument_errors(kwargs, error, message, target):
    to_prune = keras.layers.Dense(4) if target == "layer" else _dense_model()
    with pytest.raises(error) as info:
        kprune.prune_low_magnitude(to_prune, **kwargs)
    assert message in str(info.value)


def test_wrapping_a_wrapped_layer():
    layer = kprune.prune_low_magnitude(keras.layers.Dense(4))
    with pytest.raises(ValueError, match="'prune_low_magnitude_dense' is already wrapped by PruneLowMagnitude"):
        kprune.prune_low_magnitude(layer)
    with pytest.raises(ValueError, match="already wrapped"):
        kprune.PruneLowMagnitude(layer)


def test_wrapping_a_pruned_model():
    pruned = kprune.prune_low_magnitude(_dense_model())
    with pytest.raises(ValueError, match="already wrapped.*strip_pruning"):
        kprune.prune_low_magnitude(pruned)


def test_not_a_layer():
    with pytest.raises(TypeError, match="Argument `to_prune` must be a Keras layer.*Received: to_prune='dense'"):
        kprune.prune_low_magnitude("dense")
    with pytest.raises(TypeError, match="Argument `layer` must be a Keras layer"):
        kprune.PruneLowMagnitude(3)
    with pytest.raises(TypeError, match="Argument `model` must be a Keras model"):
        kprune.strip_pruning([1, 2])


def test_layer_kwargs_only_for_single_layers():
    with pytest.raises(TypeError, match=r"Layer arguments apply to a single layer only. Received: \['name'\]"):
        kprune.prune_low_magnitude(_dense_model(), name="x")
    named = kprune.prune_low_magnitude(keras.layers.Dense(3), name="my_pruned")
    assert named.name == "my_pruned"


def test_block_size_on_rank_one_weight_names_the_layer():
    class Scale(keras.layers.Layer, kprune.PrunableLayer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w

        def get_prunable_weights(self):
            return [self.w]

    layer = kprune.prune_low_magnitude(Scale(name="scale"), block_size=(1, 2))
    with pytest.raises(ValueError, match="Layer 'scale' \\(Scale\\): block sparsity needs weights of rank >= 2"):
        layer(keras.ops.ones((2, 6)))
