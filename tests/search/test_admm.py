"""ADMM pruning: projections and the dual update against NumPy, the penalty in
the fit step (TensorFlow here, JAX in a subprocess), and the effect of ADMM
training on hard pruning."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kprune
from kprune.search.algorithms.admm import ADMM, ADMMPenalty
from kprune.search.algorithms.admm_sets import channel_keep_mask, project_weights

L = keras.layers


def numpy_project(x, keep):
    flat = np.abs(x).reshape(-1)
    mask = np.zeros(flat.size)
    mask[np.argsort(-flat, kind="stable")[:keep]] = 1
    return x * mask.reshape(x.shape)


def _conv_model():
    x = keras.Input((6, 6, 3))
    h = L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, name="c1")(x)))
    h = L.Conv2D(4, 3, name="c2")(h)
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(h)))


def test_weight_projection_matches_numpy():
    rng = np.random.default_rng(0)
    for shape, keep in [((5, 7), 9), ((3, 3, 4, 6), 50), ((10,), 1), ((4, 4), 16), ((4, 4), 0)]:
        x = rng.normal(size=shape).astype("float32")
        got = keras.ops.convert_to_numpy(project_weights(x, keep))
        np.testing.assert_array_equal(got, numpy_project(x, keep))
        assert np.count_nonzero(got) == min(keep, x.size)
    mask = keras.ops.convert_to_numpy(channel_keep_mask(np.array([3.0, 1.0, 2.0, 5.0]), 3))
    assert mask.tolist() == [1.0, 0.0, 1.0, 1.0]


def test_channel_projection_and_dual_update_match_numpy():
    model = _conv_model()
    rng = np.random.default_rng(1)
    bn = model.get_layer("bn")
    bn.gamma.assign(rng.normal(size=8).astype("float32"))
    bn.beta.assign(rng.normal(size=8).astype("float32"))
    model.get_layer("c1").bias.assign(rng.normal(size=8).astype("float32"))
    callback = ADMM(model, widths={"c1": 3}, rho=0.5)
    names = [v.path for v in callback.variables]
    assert sorted(names) == ["bn/beta", "bn/gamma", "c1/bias", "c1/kernel"]
    u = {n: np.zeros(v.shape, "float32") for n, v in zip(names, callback.variables)}
    for _ in range(2):  # two rounds, with the weights moved in between
        w = {n: keras.ops.convert_to_numpy(v.value) for n, v in zip(names, callback.variables)}
        a = {n: w[n] + u[n] for n in names}
        # reference: channels ranked by the L2 norm of the producer's kernel and bias
        scores = np.sqrt((a["c1/kernel"] ** 2).sum(axis=(0, 1, 2)) + a["c1/bias"] ** 2)
        keep = np.zeros(8)
        keep[np.argsort(-scores)[:3]] = 1
        z = {n: a[n] * (keep if a[n].ndim == 1 else keep.reshape(1, 1, 1, 8)) for n in names}
        callback.update()
        for n, zv, uv in zip(names, callback.z, callback.u):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(zv.value), z[n], rtol=1e-6, atol=1e-6)
            u[n] = u[n] + w[n] - z[n]
            np.testing.assert_allclose(keras.ops.convert_to_numpy(uv.value), u[n], rtol=1e-6, atol=1e-6)
        for v in callback.variables:
            v.assign(keras.ops.convert_to_numpy(v.value) + rng.normal(size=v.shape).astype("float32") * 0.1)
    w, z, u_ = (keras.ops.convert_to_numpy(t) for t in (callback.variables[0].value, callback.z[0].value,
                                                         callback.u[0].value))
    penalty = ADMMPenalty(callback.z[0], callback.u[0], 0.5)(callback.variables[0].value)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(penalty)), 0.25 * np.sum((w - z + u_) ** 2),
                               rtol=1e-5)


def test_errors_name_the_argument():
    model = _conv_model()
    with pytest.raises(ValueError, match="exactly one target"):
        ADMM(model)
    with pytest.raises(ValueError, match="names no prunable channel group"):
        ADMM(model, widths={"nope": 2})
    with pytest.raises(ValueError, match=r"widths\['c1'\]"):
        ADMM(model, widths={"c1": 9})
    with pytest.raises(ValueError, match="`rho`"):
        ADMM(model, sparsity=0.5, rho=0)
    with pytest.raises(ValueError, match="hard_prune"):
        ADMM(model, sparsity=0.5).keep_masks()
    with pytest.raises(ValueError, match="strip_pruning"):
        ADMM(kprune.prune_low_magnitude(model), sparsity=0.5)


@pytest.fixture(scope="module")
def digits_mlp():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), L.Dense(64, activation="relu", name="hidden"),
                              L.Dense(10, name="out")])
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1400], y[:1400], epochs=8, batch_size=64, verbose=0)
    return model, (x[:1400], y[:1400]), (x[1400:], y[1400:])


def _accuracy(model, data):
    return float(np.mean(np.argmax(model.predict(data[0], verbose=0), -1) == data[1]))


def _copy(model, learning_rate=1e-2):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return clone


def test_admm_training_makes_hard_pruning_cheaper(digits_mlp):
    model, train, test = digits_mlp
    dense_acc = _accuracy(model, test)
    # magnitude pruning of the trained model (no ADMM): keep the top 5% of the hidden kernel
    magnitude = _copy(model)
    kernel = magnitude.get_layer("hidden").kernel
    keep = int(round(0.05 * 64 * 64))
    kernel.assign(numpy_project(keras.ops.convert_to_numpy(kernel.value), keep))
    magnitude_acc = _accuracy(magnitude, test)

    tuned = _copy(model)
    callback = ADMM(tuned, sparsity={"hidden": 0.95}, rho=0.05, admm_epochs=1)
    tuned.fit(*train, epochs=6, batch_size=64, verbose=0, shuffle=False, callbacks=[callback])
    w = keras.ops.convert_to_numpy(tuned.get_layer("hidden").kernel.value)
    support = numpy_project(w, keep) != 0
    outside = np.linalg.norm(w[~support]) / np.linalg.norm(w)
    residuals = [h["residual"] for h in callback.history]
    assert len(residuals) == 6 and residuals[-1] < residuals[0]
    assert outside < 0.25, outside  # weights outside the support are small after ADMM (0.13 measured)
    masks = callback.hard_prune()
    assert int(masks[tuned.get_layer("hidden").kernel.path].sum()) == keep
    assert np.count_nonzero(tuned.get_layer("hidden").kernel.numpy()) == keep
    admm_acc = _accuracy(tuned, test)
    # measured: dense 0.96, magnitude-pruned 0.78, ADMM then hard-pruned 0.96
    assert dense_acc - admm_acc < 0.5 * (dense_acc - magnitude_acc), (dense_acc, magnitude_acc, admm_acc)
    # the penalty is gone after training: a new fit has no regularization loss
    assert tuned.get_layer("hidden").kernel.regularizer is None
    tuned.fit(*train, epochs=1, batch_size=64, verbose=0, callbacks=[callback.keep_masks()])
    assert np.count_nonzero(tuned.get_layer("hidden").kernel.numpy()) == keep


def test_admm_helper_channels_then_remove(digits_mlp):
    model, train, test = digits_mlp
    tuned = _copy(model)

    def fit(m, epochs, callbacks):
        m.fit(*train, epochs=epochs, batch_size=64, verbose=0, shuffle=False, callbacks=callbacks)

    result = kprune.admm(tuned, fit, widths={"hidden": 16}, rho=0.05, iterations=3, training_epochs=1,
                         fine_tune_epochs=1)
    assert result.plan.num_pruned == 48
    kernel = tuned.get_layer("hidden").kernel.numpy()
    assert np.count_nonzero(np.abs(kernel).sum(axis=0)) == 16
    small = kprune.remove_channels(tuned, result.plan)
    assert small.get_layer("hidden").kernel.shape == (64, 16)
    np.testing.assert_allclose(small.predict(test[0][:20], verbose=0), tuned.predict(test[0][:20], verbose=0),
                               rtol=1e-4, atol=1e-4)
    assert _accuracy(small, test) > 0.8


JAX_SCRIPT = textwrap.dedent("""
    import numpy as np, keras
    from kprune.search.algorithms.admm import ADMM
    assert keras.backend.backend() == "jax"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 2))).astype("float32")
    def run(rho):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="d"), keras.layers.Dense(2)])
        model.compile(keras.optimizers.SGD(0.05), "mse")
        cb = ADMM(model, sparsity={"d": 0.75}, rho=rho)
        model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[cb])
        return [h["residual"] for h in cb.history]
    weak, strong = run(1e-6), run(1.0)
    print("RESIDUALS", weak[-1], strong[-1])
    assert strong[-1] < 0.5 * weak[-1], (weak, strong)
    assert strong[-1] < strong[0]
""")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="launches the JAX run from the TF pass")
def test_penalty_acts_in_the_jax_fit_step():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESIDUALS" in done.stdout
