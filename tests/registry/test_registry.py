"""The layer registry: built-in records, `register_layer` for custom layers,
vector-only layers, and the architecture rules it makes possible."""


import keras
import numpy as np
import pytest
from keras import layers as L

import kprune
from kprune.registry import keras_layers, rules
from kprune.sparsity.prune import collect_wrappers


def _np(x):
    return keras.ops.convert_to_numpy(x)


@keras.saving.register_keras_serializable(package="test_registry")
class Projection(keras.layers.Layer):
    """A custom Dense-like layer kprune knows nothing about until registered."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="b")

    def call(self, x):
        return x @ self.w + self.b

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@pytest.fixture
def registered():
    rule = kprune.register_layer(
        Projection, prunable=["w"],
        channels={"reads": {"w": 0}, "writes": {"w": 1, "b": 0}, "width": "units"},
        macs=lambda layer, ins, outs: int(np.prod(outs[0][1:-1])) * ins[0][-1] * layer.units,
    )
    yield rule
    rules._RULES.pop(Projection, None)


def _model():
    inp = keras.Input((5, 6))
    h = Projection(16, name="proj")(inp)
    h = L.ReLU()(h)
    return keras.Model(inp, L.Dense(3, name="head")(h))


def test_unregistered_custom_layer_is_refused_by_name():
    with pytest.raises(ValueError, match="'proj' \\(Projection\\)"):
        kprune.prune_low_magnitude(_model())
    plan = kprune.plan_channels(_model(), 0.5, round_to=1)
    reasons = " ".join(str(g["reason"]) for g in plan.groups)
    assert "output of proj (Projection): kprune has no channel rule for Projection" in reasons


def test_registered_layer_is_pruned_channel_pruned_and_counted(registered, rng):
    model = _model()
    x = rng.standard_normal((4, 5, 6)).astype("float32")
    assert kprune.count_macs(model) == 5 * 6 * 16 + 5 * 16 * 3
    # Unstructured pruning wraps it and reaches the exact sparsity.
    pruned = kprune.prune_low_magnitude(model)
    (wrapper,) = [w for w in collect_wrappers(pruned) if w.layer.name == "proj"]
    kprune.update_masks(pruned, sparsity=0.75)
    assert int(np.sum(_np(wrapper.layer.w) == 0)) == 72
    # Channel pruning removes its units and equals masking.
    plan = kprune.plan_channels(model, 0.5, round_to=1)
    masked = kprune.mask_channels(model, plan)
    small = kprune.remove_channels(masked)
    assert small.get_layer("proj").units == 8
    np.testing.assert_allclose(_np(small(x)), _np(masked(x)), atol=1e-6)
    assert kprune.count_macs(small) == 5 * 6 * 8 + 5 * 8 * 3


def test_register_layer_rejects_bad_arguments():
    with pytest.raises(TypeError, match="Argument `cls` must be a Keras layer class"):
        kprune.register_layer("Dense")
    with pytest.raises(ValueError, match="needs one axis per prunable weight"):
        kprune.register_layer(Projection, prunable=["w"], input_axes=[0, 1])
    with pytest.raises(ValueError, match="must be one of"):
        kprune.register_layer(Projection, channels="sideways")
    with pytest.raises(ValueError, match="unknown keys \\['inputs'\\]"):
        kprune.register_layer(Projection, channels={"inputs": {"w": 0}})
    with pytest.raises(TypeError, match="Argument `macs`"):
        kprune.register_layer(Projection, macs=3)
    assert Projection not in rules._RULES


def test_subclass_uses_nearest_record():
    class MyConv(L.Conv2D):
        pass

    assert rules.rule_for(MyConv(4, 3)) is rules.rule_for(L.Conv2D(4, 3))
    assert keras_layers.classify(MyConv(4, 3)) == "prunable"


# ------------------------------------------------------- vector-only layers


@keras.saving.register_keras_serializable(package="test_registry")
class ChannelScale(keras.layers.Layer):
    """A learned per-channel scale whose width is a config setting (LayerScale-like)."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(self.dim,), initializer="ones", name="gamma")

    def call(self, x):
        return x * self.gamma

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def test_vector_only_layer_is_sliced_with_its_channels(rng):
    inp = keras.Input((6, 6, 3))
    h = L.Conv2D(16, 3, name="conv")(inp)
    h = ChannelScale(16, name="scale")(h)
    model = keras.Model(inp, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h)))
    model.get_layer("scale").gamma.assign(rng.uniform(0.5, 2, 16).astype("float32"))
    assert keras_layers.classify(model.get_layer("scale")) == "pass_through"
    pruned = kprune.prune_low_magnitude(model)
    assert type(pruned.get_layer("scale")) is ChannelScale
    plan = kprune.plan_channels(model, 0.25, round_to=1)
    small = kprune.remove_channels(kprune.mask_channels(model, plan))
    assert small.get_layer("scale").dim == 12
    kept = [c for c in range(16) if c not in plan.groups[1]["pruned"]]
    np.testing.assert_array_equal(_np(small.get_layer("scale").gamma),
                                  _np(model.get_layer("scale").gamma)[kept])
    x = rng.standard_normal((3, 6, 6, 3)).astype("float32")
    masked = kprune.mask_channels(model, plan)
    np.testing.assert_allclose(_np(small(x)), _np(masked(x)), atol=1e-5)


def test_matrix_weight_layer_without_rule_raises_naming_it():
    class Mixer(keras.layers.Layer):
        def build(self, shape):
            self.m = self.add_weight(shape=(shape[-1], shape[-1]))

        def call(self, x):
            return x @ self.m

    inp = keras.Input((4,))
    model = keras.Model(inp, Mixer(name="mixer")(L.Dense(4)(inp)))
    with pytest.raises(ValueError, match="'mixer' \\(Mixer\\)"):
        kprune.prune_low_magnitude(model)


def test_attention_macs_count_projections_and_both_matmuls(tmp_path):
    x = keras.Input((10, 16))
    mha = L.MultiHeadAttention(num_heads=2, key_dim=8, value_dim=4, name="mha")
    model = keras.Model(x, L.Dense(3, name="head")(mha(x, x)))
    projections = 10 * 16 * 16 + 10 * 16 * 16 + 10 * 16 * 8 + 10 * 8 * 16
    attention = 2 * 10 * 10 * (8 + 4)
    assert kprune.count_macs(model) == projections + attention + 10 * 16 * 3
    # The exported file's ops (FULLY_CONNECTED, BATCH_MATMUL) add up to the same.
    report = kprune.export_tflite(model, str(tmp_path / "mha.tflite"), measure_latency=False)
    assert report.verified
    assert kprune.summary(str(tmp_path / "mha.tflite")).macs == kprune.count_macs(model)
