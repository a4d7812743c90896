"""Least-squares reconstruction (`kprune.reconstruct`) and patch sampling."""

import keras
import numpy as np
import pytest

import kprune
from kprune.criteria import sampling
from kprune.methods.reconstruction import refit_layer

L = keras.layers


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.Conv2D(5, 3, padding="same"),
        lambda: L.Conv2D(5, (3, 2), strides=2, padding="valid"),
        lambda: L.Conv2D(5, 3, strides=2, padding="same", dilation_rate=1),
        lambda: L.Conv2D(5, 3, padding="same", dilation_rate=2),
        lambda: L.Conv1D(5, 3, padding="causal", dilation_rate=2),
        lambda: L.Dense(5),
    ],
)
def test_patches_times_kernel_equal_the_layer_output(rng, make):
    layer = make()
    shape = (3, 7, 4) if isinstance(layer, L.Conv1D) else (3, 9, 8, 4)
    if isinstance(layer, L.Dense):
        shape = (3, 6)
    x = rng.random(shape, dtype=np.float32)
    y = keras.ops.convert_to_numpy(layer(x))
    positions = sampling.random_positions(rng, 3, sampling.output_spatial(layer, x.shape[1:-1]), 5)
    patches = sampling.conv_patches(x, layer, positions)
    out = np.einsum("nkc,kcf->nf", patches, sampling.kernel_matrix(layer)) + keras.ops.convert_to_numpy(layer.bias)
    assert sampling.output_spatial(layer, x.shape[1:-1]) == y.shape[1:-1]
    np.testing.assert_allclose(out, y[tuple(positions.T)], rtol=1e-4, atol=1e-5)


def test_refit_layer_is_least_squares_on_the_kept_rows(rng):
    patches = rng.normal(size=(200, 4, 3))
    kernel = rng.normal(size=(4, 3, 2))
    kernel[:, 1, :] = 0.0  # input channel 1 pruned
    target = rng.normal(size=(200, 2))
    new, bias = refit_layer(patches, target, kernel, use_bias=True, ridge=0.0)
    assert not new[:, 1, :].any()
    X = np.hstack([patches[:, :, [0, 2]].reshape(200, -1), np.ones((200, 1))])
    reference = np.linalg.lstsq(X, target, rcond=None)[0]
    np.testing.assert_allclose(new[:, [0, 2], :].reshape(8, 2), reference[:8], atol=1e-10)
    np.testing.assert_allclose(bias, reference[8], atol=1e-10)


def _model():
    x = keras.Input((10, 10, 3))
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    b = L.BatchNormalization(name="bn")(L.Conv2D(12, 3, padding="same", name="c2")(a))
    b = L.ReLU()(b)
    c = L.Conv2D(6, 3, strides=2, padding="same", name="c3")(b)
    h = L.Flatten()(L.ReLU()(c))
    return keras.Model(x, L.Dense(4, name="head")(h))


def _pre_activation(model, name, x):
    layer = model.get_layer(name)
    probe = keras.Model(model.inputs, layer.input)
    inputs = probe.predict(x, verbose=0)
    linear = layer.__class__.from_config({**layer.get_config(), "activation": None})
    linear.build(inputs.shape)
    linear.set_weights(layer.get_weights())
    return keras.ops.convert_to_numpy(linear(inputs))


def test_reconstruction_lowers_each_consumers_output_error(rng):
    model = _model()
    x = rng.random((256, 10, 10, 3), dtype=np.float32)
    held_out = rng.random((64, 10, 10, 3), dtype=np.float32)
    plan = kprune.plan_channels(model, 0.5, importance="l1", round_to=1)
    masked = kprune.mask_channels(model, plan)
    refit, errors = kprune.reconstruct(masked, model, x, return_errors=True)
    assert sorted(errors) == ["c2", "c3", "head"]  # every layer that reads pruned channels
    for name in errors:
        reference = _pre_activation(model, name, held_out)
        kept = np.any(keras.ops.convert_to_numpy(refit.get_layer(name).kernel) != 0,
                      axis=tuple(range(refit.get_layer(name).kernel.ndim - 1)))
        before = np.sum((_pre_activation(masked, name, held_out) - reference)[..., kept] ** 2)
        after = np.sum((_pre_activation(refit, name, held_out) - reference)[..., kept] ** 2)
        # On held-out images the refit layer is at least 25% closer to the reference.
        assert after < 0.75 * before, (name, before, after)
        assert errors[name][1] < 0.9 * errors[name][0], (name, errors[name])  # on the sampled rows
    # Pruned slices stay exactly zero, so removal keeps the outputs.
    small = kprune.remove_channels(refit, plan)
    np.testing.assert_allclose(small.predict(held_out, verbose=0), refit.predict(held_out, verbose=0),
                               rtol=1e-4, atol=1e-4)


def test_reconstruction_is_exact_when_pruned_channels_are_copies(rng):
    x_in = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x_in)
    y = L.Conv2D(5, 3, padding="same", name="c2")(h)
    model = keras.Model(x_in, L.GlobalAveragePooling2D()(y))
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in model.get_layer("c1").weights)
    kernel[..., 4:], bias[4:] = kernel[..., :4], bias[:4]  # channels 4..7 duplicate 0..3
    model.get_layer("c1").set_weights([kernel, bias])
    plan = kprune.ChannelPlan([{"group": 1, "producers": ["c1"], "channels": 8, "pruned": [4, 5, 6, 7],
                                "reason": None}])
    masked = kprune.mask_channels(model, plan)
    # Inputs of both signs, so that no ReLU channel is 0 on every sample (the
    # least squares would then be rank deficient).
    x = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
    refit, errors = kprune.reconstruct(masked, model, x, ridge=0.0, return_errors=True)
    assert errors["c2"][0] > 0.1 and errors["c2"][1] < 1e-8
    # The refit adds the copies' rows onto the originals'.
    w = keras.ops.convert_to_numpy(model.get_layer("c2").kernel)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(refit.get_layer("c2").kernel)[:, :, :4],
                               w[:, :, :4] + w[:, :, 4:], atol=1e-5)
    np.testing.assert_allclose(refit.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_reconstruct_needs_the_masked_model(rng):
    model = _model()
    plan = kprune.plan_channels(model, 0.5, round_to=1)
    small = kprune.remove_channels(model, plan)
    with pytest.raises(ValueError, match="reconstruct the masked model"):
        kprune.reconstruct(small, model, rng.random((8, 10, 10, 3), dtype=np.float32))


def test_a_layer_missing_from_the_reference_is_named_not_skipped(rng):
    """A reference whose layers have other names cannot guide the refit: the
    layers it cannot match are named (a warning; an error when asked for)."""
    model = _model()
    masked = kprune.mask_channels(model, kprune.plan_channels(model, 0.5, importance="l1", round_to=1))
    renamed = keras.models.clone_model(model, clone_function=lambda layer: layer.__class__.from_config(
        {**layer.get_config(), "name": "other_" + layer.name if layer.name == "c3" else layer.name}))
    renamed.set_weights(model.get_weights())
    x = rng.random((32, 10, 10, 3), dtype=np.float32)
    with pytest.warns(UserWarning, match=r"Layers \['c3'\] of the pruned model have no layer of the same name in "
                                         r"`reference`") as record:
        _, errors = kprune.reconstruct(masked, renamed, x, return_errors=True)
    ours = [w for w in record if "no layer of the same name" in str(w.message)]
    assert [w.filename for w in ours] == [__file__] and "c3" not in errors and "c2" in errors
    with pytest.raises(ValueError, match=r"Layers \['c3'\] of the pruned model have no layer"):
        kprune.reconstruct(masked, renamed, x, layers=["c3"])


def test_prune_and_reconstruct_beats_plain_pruning_on_outputs(rng):
    model = _model()
    x = rng.random((128, 10, 10, 3), dtype=np.float32)
    small, plan = kprune.prune_and_reconstruct(model, 0.5, x, importance="thinet")
    plain = kprune.remove_channels(model, plan)
    target = model.predict(x, verbose=0)
    assert small.get_layer("c2").filters == 6
    err = np.mean((small.predict(x, verbose=0) - target) ** 2)
    err_plain = np.mean((plain.predict(x, verbose=0) - target) ** 2)
    assert err < 0.5 * err_plain
