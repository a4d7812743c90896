"""Whole-model wrapping: Sequential, Functional, nested, keras.applications,
the clone_function pattern, lists, pass-through, custom and unsupported layers."""

import json

import keras
import numpy as np
import pytest
from keras import layers as L

import kprune
from kprune.sparsity.mask_math import target_zeros
from kprune.sparsity.prune import collect_wrappers

BATCH = 6


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _predict(model, x):
    return _np(model(x, training=False))


def _rand(rng, shape):
    return rng.standard_normal(shape).astype("float32")


def _schedule(sparsity=0.5):
    return kprune.ConstantSparsity(sparsity, begin_step=0, frequency=1)


def _fit(model, x, y, steps=3):
    model.fit(
        x,
        y,
        batch_size=len(x) // steps,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[kprune.UpdatePruningStep()],
    )


def _all_layers(model):
    return list(model._flatten_layers(include_self=False, recursive=True))


def _assert_no_kprune(model):
    for layer in model._flatten_layers(include_self=True, recursive=True):
        assert not type(layer).__module__.startswith("kprune"), layer
    for v in model.weights:
        c = v.constraint
        assert c is None or not type(c).__module__.startswith("kprune"), (v.path, c)
    config = json.dumps(model.get_config(), default=str)
    assert "kprune" not in config
    assert "PruneLowMagnitude" not in config


def _assert_exact_sparsity(model, sparsity=0.5):
    wrappers = collect_wrappers(model)
    assert wrappers
    for wrapper in wrappers:
        for variable, mask in wrapper.pruned_weights:
            m = _np(mask)
            v = _np(variable)
            expected = target_zeros(m.size, sparsity)
            assert int((m == 0).sum()) == expected, variable.path
            assert int((v == 0).sum()) == expected, variable.path
            assert np.all(v[m == 0] == 0), variable.path


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _assert_weights_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _train_strip_save(pruned, x, y, tmp_path):
    """Fit with UpdatePruningStep, then check sparsity, strip and a .keras round trip."""
    pruned.compile(optimizer="adam", loss="mse")
    _fit(pruned, x, y)
    _assert_exact_sparsity(pruned, 0.5)
    for w in collect_wrappers(pruned):
        assert int(_np(w.pruning_step)) == 3
    expected = _predict(pruned, x)

    stripped = kprune.strip_pruning(pruned)
    _assert_no_kprune(stripped)
    assert np.max(np.abs(_predict(stripped, x) - expected)) <= 1e-5

    path = str(tmp_path / "model.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert np.max(np.abs(_predict(loaded, x) - expected)) <= 1e-5
    assert len(collect_wrappers(loaded)) == len(collect_wrappers(pruned))
    return stripped


# --------------------------------------------------------------------------
# Sequential, Functional with a residual, nested


def test_sequential(rng, tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8,)),
            L.Dense(16, activation="relu"),
            L.Dropout(0.1),
            L.Dense(8),
            L.Activation("relu"),
            L.Dense(4),
        ]
    )
    x, y = _rand(rng, (BATCH, 8)), _rand(rng, (BATCH, 4))
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule())
    assert isinstance(pruned, keras.Sequential)
    assert pruned is not model
    assert [type(l).__name__ for l in pruned.layers] == [
        "PruneLowMagnitude",
        "Dropout",
        "PruneLowMagnitude",
        "Activation",
        "PruneLowMagnitude",
    ]
    np.testing.assert_allclose(_predict(pruned, x), _predict(model, x), atol=1e-6)
    stripped = _train_strip_save(pruned, x, y, tmp_path)
    assert isinstance(stripped, keras.Sequential)
    assert [type(l).__name__ for l in stripped.layers] == [
        "Dense",
        "Dropout",
        "Dense",
        "Activation",
        "Dense",
    ]


def test_functional_residual(rng, tmp_path):
    inp = keras.Input((8,))
    h = L.Dense(8, name="d1")(inp)
    r = L.Dense(8, name="d2")(L.ReLU()(h))
    s = L.Add()([h, r])
    s = L.LayerNormalization()(s)
    out = L.Dense(3, name="head")(s)
    model = keras.Model(inp, out)
    x, y = _rand(rng, (BATCH, 8)), _rand(rng, (BATCH, 3))

    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule())
    wrapped = sorted(w.layer.name for w in collect_wrappers(pruned))
    assert wrapped == ["d1", "d2", "head"]
    assert isinstance(pruned.get_layer("add"), L.Add)
    assert isinstance(pruned.get_layer("layer_normalization"), L.LayerNormalization)
    np.testing.assert_allclose(_predict(pruned, x), _predict(model, x), atol=1e-6)
    stripped = _train_strip_save(pruned, x, y, tmp_path)
    assert isinstance(stripped.get_layer("add"), L.Add)
    assert {l.name for l in stripped.layers} >= {"d1", "d2", "head", "add"}


def test_functional_shared_layer_multi_io(rng, tmp_path):
    """Dict inputs/outputs and a Dense layer shared by two branches (one wrapper)."""
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    shared = L.Dense(3, name="shared")
    merged = L.Add()([shared(a), shared(b)])
    model = keras.Model({"a": a, "b": b}, L.Dense(2, name="o")(merged))
    x = {"a": _rand(rng, (BATCH, 4)), "b": _rand(rng, (BATCH, 4))}
    y = _rand(rng, (BATCH, 2))
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule())
    assert sorted(w.layer.name for w in collect_wrappers(pruned)) == ["o", "shared"]
    np.testing.assert_allclose(_predict(pruned, x), _predict(model, x), atol=1e-6)
    pruned.compile(optimizer="adam", loss="mse")
    pruned.fit(x, y, batch_size=2, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    _assert_exact_sparsity(pruned, 0.5)
    stripped = kprune.strip_pruning(pruned)
    _assert_no_kprune(stripped)
    assert np.max(np.abs(_predict(stripped, x) - _predict(pruned, x))) <= 1e-5


def _nested_model():
    inner = keras.Sequential(
        [keras.Input((8,)), L.Dense(8, activation="relu", name="in1"), L.Dense(8, name="in2")],
        name="inner",
    )
    inp = keras.Input((6,))
    h = L.Dense(8, name="outer1")(inp)
    h = inner(h)
    out = L.Dense(2, name="outer2")(h)
    return keras.Model(inp, out)


def test_nested_model(rng, tmp_path):
    model = _nested_model()
    x, y = _rand(rng, (BATCH, 6)), _rand(rng, (BATCH, 2))
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule())

    inner = pruned.get_layer("inner")
    assert isinstance(inner, keras.Sequential)
    assert all(isinstance(l, kprune.PruneLowMagnitude) for l in inner.layers)
    names = sorted(w.layer.name for w in collect_wrappers(pruned))
    assert names == ["in1", "in2", "outer1", "outer2"]
    np.testing.assert_allclose(_predict(pruned, x), _predict(model, x), atol=1e-6)

    stripped = _train_strip_save(pruned, x, y, tmp_path)
    s_inner = stripped.get_layer("inner")
    assert isinstance(s_inner, keras.Sequential)
    assert [type(l).__name__ for l in s_inner.layers] == ["Dense", "Dense"]


def test_nested_model_update_masks(rng):
    model = _nested_model()
    pruned = kprune.prune_low_magnitude(model)
    kprune.update_masks(pruned, sparsity=0.75)
    _assert_exact_sparsity(pruned, 0.75)
    x = _rand(rng, (BATCH, 6))
    stripped = kprune.strip_pruning(pruned)
    assert np.max(np.abs(_predict(stripped, x) - _predict(pruned, x))) <= 1e-5


# --------------------------------------------------------------------------
# keras.applications


def _is_conv_or_dense(layer):
    return isinstance(layer, (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv2D))


def _check_application(model):
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    original_out = _predict(model, x)
    original_weights = _weights(model)
    n_kernels = sum(_is_conv_or_dense(l) for l in _all_layers(model))
    n_bn = sum(isinstance(l, L.BatchNormalization) for l in _all_layers(model))

    pruned = kprune.prune_low_magnitude(model)
    layers = _all_layers(pruned)
    wrappers = [l for l in layers if isinstance(l, kprune.PruneLowMagnitude)]
    # Every Conv/Dense kernel is wrapped; nothing else is.
    assert len(wrappers) == n_kernels
    assert all(_is_conv_or_dense(w.layer) for w in wrappers)
    unwrapped = [l for l in layers if not isinstance(l, kprune.PruneLowMagnitude)]
    inner = {id(w.layer) for w in wrappers}
    assert not [l.name for l in unwrapped if _is_conv_or_dense(l) and id(l) not in inner]
    # BatchNormalization stays unwrapped.
    bns = [l for l in unwrapped if isinstance(l, L.BatchNormalization)]
    assert len(bns) == n_bn > 0
    for w in wrappers:
        assert [v.name for v, _ in w.pruned_weights] == ["kernel"]

    # Wrapping alone does not change the outputs.
    np.testing.assert_allclose(_predict(pruned, x), original_out, atol=1e-5)

    kprune.update_masks(pruned, sparsity=0.5)
    _assert_exact_sparsity(pruned, 0.5)
    masked_out = _predict(pruned, x)

    stripped = kprune.strip_pruning(pruned)
    _assert_no_kprune(stripped)
    assert np.max(np.abs(_predict(stripped, x) - masked_out)) <= 1e-5
    # The original model is untouched.
    _assert_weights_equal(_weights(model), original_weights)


def test_mobilenet_v2():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    _check_application(model)


def test_resnet50():
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    _check_application(model)


# --------------------------------------------------------------------------
# The tfmot guide's clone_function pattern, lists, pass-through layers


def _conv_dense_sequential():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, name="conv"),
            L.Flatten(),
            L.Dense(8, activation="relu", name="dense1"),
            L.Dense(3, name="dense2"),
        ]
    )


def _conv_dense_functional():
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, name="conv")(inp)
    h = L.Flatten()(h)
    h = L.Dense(8, activation="relu", name="dense1")(h)
    return keras.Model(inp, L.Dense(3, name="dense2")(h))


@pytest.mark.parametrize(
    "make_model", [_conv_dense_sequential, _conv_dense_functional], ids=["sequential", "functional"]
)
def test_clone_function_prunes_only_dense(make_model, rng, tmp_path):
    base_model = make_model()
    x, y = _rand(rng, (BATCH, 6, 6, 2)), _rand(rng, (BATCH, 3))

    def apply_pruning_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return kprune.prune_low_magnitude(layer, pruning_schedule=_schedule())
        return layer

    model = keras.models.clone_model(base_model, clone_function=apply_pruning_to_dense)
    wrapped = sorted(w.layer.name for w in collect_wrappers(model))
    assert wrapped == ["dense1", "dense2"]
    assert isinstance(model.get_layer("conv"), L.Conv2D)
    np.testing.assert_allclose(_predict(model, x), _predict(base_model, x), atol=1e-6)

    stripped = _train_strip_save(model, x, y, tmp_path)
    # The convolution is not pruned.
    conv = model.get_layer("conv")
    assert int((_np(conv.kernel) == 0).sum()) == 0
    assert [type(l).__name__ for l in stripped.layers if l.name != "flatten"][-3:] == [
        "Conv2D",
        "Dense",
        "Dense",
    ]


def test_list_of_layers(rng):
    d1, drop, d2 = L.Dense(8, name="a"), L.Dropout(0.2), L.Dense(3, name="b")
    result = kprune.prune_low_magnitude([d1, drop, d2], pruning_schedule=_schedule())
    assert isinstance(result, list) and len(result) == 3
    assert isinstance(result[0], kprune.PruneLowMagnitude) and result[0].layer is d1
    assert result[1] is drop
    assert isinstance(result[2], kprune.PruneLowMagnitude) and result[2].layer is d2
    assert result[0].pruning_schedule.get_config()["target_sparsity"] == 0.5

    model = keras.Sequential([keras.Input((5,)), *result])
    x, y = _rand(rng, (BATCH, 5)), _rand(rng, (BATCH, 3))
    model.compile(optimizer="adam", loss="mse")
    _fit(model, x, y)
    _assert_exact_sparsity(model, 0.5)
    assert len(collect_wrappers(result)) == 2


def test_list_with_unsupported_layer_raises():
    with pytest.raises(ValueError, match="scale_layer"):
        kprune.prune_low_magnitude([L.Dense(2), _Scale(name="scale_layer")])


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: L.Flatten(),
        lambda: L.Dropout(0.5),
        lambda: L.BatchNormalization(),
        lambda: L.LayerNormalization(),
        lambda: L.Activation("relu"),
        lambda: L.ReLU(),
        lambda: L.MaxPooling2D(),
        lambda: L.AveragePooling2D(pool_size=2),
        lambda: L.GlobalAveragePooling2D(),
        lambda: L.Add(),
        lambda: L.Concatenate(),
    ],
    ids=[
        "Flatten",
        "Dropout",
        "BatchNormalization",
        "LayerNormalization",
        "Activation",
        "ReLU",
        "MaxPooling2D",
        "AveragePooling2D",
        "GlobalAveragePooling2D",
        "Add",
        "Concatenate",
    ],
)
def test_pass_through_layer_returned_unwrapped(make_layer):
    layer = make_layer()
    assert kprune.prune_low_magnitude(layer) is layer


def test_built_batch_normalization_returned_unwrapped():
    bn = L.BatchNormalization()
    bn.build((None, 4))
    assert bn.trainable_weights
    assert kprune.prune_low_magnitude(bn) is bn


# --------------------------------------------------------------------------
# Custom layers


class _Mix(keras.layers.Layer):
    """A custom layer with a trainable matrix and no PrunableLayer support."""

    def build(self, input_shape):
        self.mix = self.add_weight(shape=(input_shape[-1], input_shape[-1]), name="mix")

    def call(self, x):
        return x @ self.mix


@keras.saving.register_keras_serializable(package="test_models_custom")
class _Scale(keras.layers.Layer):
    """A custom layer whose only weight is a per-channel vector."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


@pytest.mark.parametrize("built", [False, True], ids=["unbuilt", "built"])
def test_unsupported_custom_layer_raises(built):
    layer = _Mix(name="my_mix")
    if built:
        layer.build((None, 4))
    with pytest.raises(ValueError, match="my_mix") as info:
        kprune.prune_low_magnitude(layer)
    assert "PrunableLayer" in str(info.value)


def test_unsupported_custom_layer_in_model_raises():
    inp = keras.Input((4,))
    h = L.Dense(4)(inp)
    out = _Mix(name="my_mix")(h)
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match="my_mix") as info:
        kprune.prune_low_magnitude(model)
    assert "PrunableLayer" in str(info.value)


def test_vector_only_custom_layer_stays_unwrapped(rng):
    inp = keras.Input((6,))
    h = L.Dense(8, name="d1")(inp)
    h = _Scale(name="my_scale")(h)
    out = L.Dense(3, name="d2")(h)
    model = keras.Model(inp, out)
    model.get_layer("my_scale").scale.assign(rng.uniform(0.5, 2.0, 8).astype("float32"))
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule(0.5))
    assert type(pruned.get_layer("my_scale")).__name__ == "_Scale"
    assert len(collect_wrappers(pruned)) == 2
    x = _rand(rng, (BATCH, 6))
    np.testing.assert_allclose(_predict(pruned, x), _predict(model, x), rtol=1e-6, atol=1e-6)


@keras.saving.register_keras_serializable(package="test_models_custom")
class _PrunableDense(keras.layers.Layer, kprune.PrunableLayer):
    """A custom dense layer implementing the PrunableLayer protocol."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="ones", name="bias")

    def call(self, x):
        return keras.ops.matmul(x, self.kernel) + self.bias

    def get_prunable_weights(self):
        return [self.kernel]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_custom_prunable_layer(rng, tmp_path):
    layer = _PrunableDense(4, name="custom")
    wrapper = kprune.prune_low_magnitude(layer, pruning_schedule=_schedule())
    assert isinstance(wrapper, kprune.PruneLowMagnitude)
    model = keras.Sequential([keras.Input((8,)), wrapper, L.Dense(2, name="head")])
    assert [id(v) for v, _ in wrapper.pruned_weights] == [id(layer.kernel)]
    x, y = _rand(rng, (BATCH, 8)), _rand(rng, (BATCH, 2))
    model.compile(optimizer="adam", loss="mse")
    _fit(model, x, y)
    _assert_exact_sparsity(model, 0.5)
    assert int((_np(layer.bias) == 0).sum()) == 0  # only the kernel is pruned
    expected = _predict(model, x)
    stripped = kprune.strip_pruning(model)
    _assert_no_kprune(stripped)
    assert isinstance(stripped.layers[0], _PrunableDense)
    assert np.max(np.abs(_predict(stripped, x) - expected)) <= 1e-5
    path = str(tmp_path / "custom.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert np.max(np.abs(_predict(loaded, x) - expected)) <= 1e-5


def test_custom_prunable_layer_whole_model(rng, tmp_path):
    inp = keras.Input((8,))
    out = L.Dense(2, name="head")(_PrunableDense(4, name="custom")(inp))
    model = keras.Model(inp, out)
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule())
    names = sorted(w.layer.name for w in collect_wrappers(pruned))
    assert names == ["custom", "head"]
    custom = [w for w in collect_wrappers(pruned) if w.layer.name == "custom"][0]
    assert isinstance(custom.layer, _PrunableDense)
    assert [v.name for v, _ in custom.pruned_weights] == ["kernel"]
    x, y = _rand(rng, (BATCH, 8)), _rand(rng, (BATCH, 2))
    np.testing.assert_allclose(_predict(pruned, x), _predict(model, x), atol=1e-6)
    _train_strip_save(pruned, x, y, tmp_path)


# --------------------------------------------------------------------------
# The original model is not modified; invalid inputs


def test_original_model_not_modified(rng):
    model = keras.Sequential(
        [keras.Input((8,)), L.Dense(8, activation="relu"), L.Dense(3)]
    )
    x, y = _rand(rng, (BATCH, 8)), _rand(rng, (BATCH, 3))
    before = _weights(model)
    out_before = _predict(model, x)
    constraints = [v.constraint for v in model.weights]

    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule())
    _assert_weights_equal(_weights(model), before)
    assert [v.constraint for v in model.weights] == constraints
    assert not any(isinstance(l, kprune.PruneLowMagnitude) for l in model.layers)
    assert not collect_wrappers(model)
    original_ids = {id(v) for v in model.weights}
    assert not original_ids & {id(v) for v in pruned.weights}

    pruned.compile(optimizer="adam", loss="mse")
    _fit(pruned, x, y)
    kprune.update_masks(pruned, sparsity=0.8)
    kprune.strip_pruning(pruned)
    _assert_weights_equal(_weights(model), before)
    np.testing.assert_array_equal(_predict(model, x), out_before)
    # The original still trains without the callback: no mask was attached to it.
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert all(int((w == 0).sum()) == 0 for w in _weights(model)[::2])


def test_original_nested_model_not_modified(rng):
    model = _nested_model()
    before = _weights(model)
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=_schedule())
    kprune.update_masks(pruned, sparsity=0.5)
    _assert_weights_equal(_weights(model), before)
    inner = model.get_layer("inner")
    assert all(isinstance(l, L.Dense) for l in inner.layers)


def test_already_pruned_model_raises():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    pruned = kprune.prune_low_magnitude(model)
    with pytest.raises(ValueError, match="already"):
        kprune.prune_low_magnitude(pruned)
    wrapper = pruned.layers[0]
    with pytest.raises(ValueError, match="already"):
        kprune.prune_low_magnitude(wrapper)


def test_already_pruned_nested_model_raises():
    pruned = kprune.prune_low_magnitude(_nested_model())
    inp = keras.Input((6,))
    outer = keras.Model(inp, L.Dense(2)(pruned(inp)))
    with pytest.raises(ValueError, match="already"):
        kprune.prune_low_magnitude(outer)


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.d1 = L.Dense(4)
        self.d2 = L.Dense(2)

    def call(self, x):
        return self.d2(self.d1(x))


def test_unbuilt_subclassed_model_raises():
    # A built one is pruned in place (tests/sparsity/test_subclassed.py).
    model = _Subclassed(name="my_subclassed")
    with pytest.raises(ValueError, match="Model 'my_subclassed' .* is not built"):
        kprune.prune_low_magnitude(model)


def test_training_without_callback_raises(rng):
    model = kprune.prune_low_magnitude(keras.Sequential([keras.Input((4,)), L.Dense(2)]))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        model.fit(_rand(rng, (4, 4)), _rand(rng, (4, 2)), verbose=0)
