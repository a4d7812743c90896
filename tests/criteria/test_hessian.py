"""Hessian importance: Hessian-vector products, Hutchinson's trace, power iteration."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kprune
from kprune.criteria import hessian
from kprune.dependency.channel_graph import ChannelGraph

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_hutchinson_trace_converges_to_the_exact_trace(rng):
    A = rng.normal(size=(30, 30))
    H = A + A.T
    diag = hessian.hutchinson_diagonal(lambda v: H @ v, 30, samples=4000, seed=1)
    # Per-block traces (blocks of 5) within 10% of the largest |block trace|.
    exact = np.diag(H).reshape(6, 5).sum(axis=1)
    estimate = diag.reshape(6, 5).sum(axis=1)
    assert np.max(np.abs(estimate - exact)) < 0.1 * np.max(np.abs(exact)) + 0.5
    assert abs(estimate.sum() - np.trace(H)) < 0.05 * np.abs(np.diag(H)).sum() + 1.0


def test_power_iteration_finds_the_top_eigenvalue(rng):
    A = rng.normal(size=(20, 20))
    H = A @ A.T
    value, vector = hessian.power_iteration(lambda v: H @ v, 20, max_iter=1000, tol=1e-10)
    top = np.linalg.eigvalsh(H)[-1]
    assert value == pytest.approx(top, rel=1e-6)
    assert abs(vector @ np.linalg.eigh(H)[1][:, -1]) == pytest.approx(1.0, abs=1e-3)


def _model():
    keras.utils.set_random_seed(3)
    x = keras.Input((5, 5, 2))
    h = L.Conv2D(4, 3, activation="tanh", name="conv")(x)
    h = L.Flatten()(h)
    h = L.Dense(3, activation="tanh", name="fc")(h)
    return keras.Model(x, L.Dense(3, name="head")(h))


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 5, 5, 2)).astype("float32"), rng.integers(0, 3, n)


def test_hvp_matches_finite_differences():
    keras.mixed_precision.set_global_policy("float64")
    keras.config.set_floatx("float64")  # the loss computes in floatx
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    try:
        model = _model()
        x, y = _data()
        x = x.astype("float64")
        variables = [model.get_layer("conv").kernel, model.get_layer("fc").kernel]
        rng = np.random.default_rng(1)
        vs = [rng.normal(size=tuple(v.shape)) for v in variables]
        hv = hessian.hvp_function(model, loss, variables)(x, y, [tf.constant(v) for v in vs])

        def grads():
            with tf.GradientTape() as tape:
                value = tf.reduce_mean(loss(y, model(x, training=False)))
            return [g.numpy() for g in tape.gradient(value, variables)]

        eps = 1e-5  # central differences: error O(eps^2) in float64
        originals = [v.numpy() for v in variables]
        for var, w, v in zip(variables, originals, vs):
            var.assign(w + eps * v)
        plus = grads()
        for var, w, v in zip(variables, originals, vs):
            var.assign(w - eps * v)
        minus = grads()
        for var, w in zip(variables, originals):
            var.assign(w)
        for h, p, m in zip(hv, plus, minus):
            np.testing.assert_allclose(h.numpy(), (p - m) / (2 * eps), rtol=1e-5, atol=1e-8)
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.config.set_floatx("float32")


def test_hutchinson_trace_of_a_layers_channel_blocks_matches_the_exact_hessian():
    model = _model()
    x, y = _data()
    kernel = model.get_layer("fc").kernel  # (36, 3): channel j of fc is column j
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            value = tf.reduce_mean(LOSS(y, model(x, training=False)))
        grad = tf.reshape(inner.gradient(value, kernel), [-1])
    exact_diag = np.diag(outer.jacobian(grad, kernel).numpy().reshape(grad.shape[0], -1)).reshape(36, 3)
    exact = exact_diag.sum(axis=0)
    hvp = hessian.hvp_function(model, LOSS, [kernel])

    def flat_hvp(v):
        return hvp(x, y, [tf.constant(v.reshape(36, 3).astype("float32"))])[0].numpy().ravel()

    estimate = hessian.hutchinson_diagonal(flat_hvp, 108, samples=600, seed=0).reshape(36, 3).sum(axis=0)
    np.testing.assert_allclose(estimate, exact, rtol=0.15, atol=0.05 * np.abs(exact).max())


def test_hessian_importance_is_trace_times_squared_norm_over_count():
    model = _model()
    x, y = _data()
    graph = ChannelGraph(model)
    group = next(g for g in graph.groups if g.producers == ["fc"])
    criterion = kprune.criteria.catalog.DATA_CRITERIA["hessian"]("hessian", (x, y), LOSS, samples=400, max_batches=1)
    scores = criterion.bind(model)(graph, group)
    # Reference with the exact diagonal over fc's kernel column, bias and head's row.
    fc, head = model.get_layer("fc"), model.get_layer("head")
    variables = [fc.kernel, fc.bias, head.kernel]
    diags = []
    for var in variables:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = tf.reduce_mean(LOSS(y, model(x, training=False)))
            grad = tf.reshape(inner.gradient(value, var), [-1])
        n = int(np.prod(var.shape))
        diags.append(np.diag(outer.jacobian(grad, var).numpy().reshape(n, n)).reshape(var.shape))
    dk, db, dh = diags
    wk, wb, wh = (v.numpy() for v in variables)
    trace = dk.sum(axis=0) + db + dh.sum(axis=1)
    norm = (wk**2).sum(axis=0) + wb**2 + (wh**2).sum(axis=1)
    count = wk.shape[0] + 1 + wh.shape[1]
    np.testing.assert_allclose(scores, trace * norm / count, rtol=0.25, atol=0.05 * np.abs(trace * norm / count).max())


def test_hessian_importance_needs_targets():
    with pytest.raises(ValueError, match=r"must be `\(inputs, targets\)` for importance 'hessian'"):
        kprune.plan_channels(_model(), 0.5, importance="hessian", data=_data()[0])
