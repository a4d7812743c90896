"""Data-driven importance criteria: taylor, apoz, mean_activation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _backend import tensorflow_only
from keras import layers as L

import kprune
from kprune.criteria import catalog
from kprune.dependency.channel_graph import ChannelGraph


def _model():
    keras.utils.set_random_seed(1)
    x = keras.Input((6, 6, 2))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    h = L.GlobalAveragePooling2D()(h)
    h = L.Dense(6, activation="relu", name="fc")(h)
    return keras.Model(x, L.Dense(3, name="head")(h))


def _data(n=96):
    rng = np.random.default_rng(0)
    return rng.random((n, 6, 6, 2), dtype=np.float32), rng.integers(0, 3, n)


def _group(graph, producer):
    return next(g for g in graph.groups if g.producers == [producer])


def test_apoz_prunes_channels_that_are_always_zero():
    model = _model()
    conv = model.get_layer("conv")
    bias = np.zeros(8, "float32")
    bias[[1, 4, 6]] = -100.0  # ReLU output always 0 on inputs in [0, 1)
    conv.bias.assign(bias)
    x, _ = _data()
    plan = kprune.plan_channels(model, 3 / 8, importance="apoz", data=x, round_to=1)
    assert next(g for g in plan.groups if g["producers"] == ["conv"])["pruned"] == [1, 4, 6]


def test_mean_activation_prunes_the_weakest_channels():
    model = _model()
    kernel = np.abs(keras.ops.convert_to_numpy(model.get_layer("fc").kernel))
    kernel[:, [0, 5]] *= 1e-3
    model.get_layer("fc").kernel.assign(kernel)
    model.get_layer("fc").bias.assign(np.zeros(6, "float32"))
    x, _ = _data()
    plan = kprune.plan_channels(model, 2 / 6, importance="mean_activation", data=x, round_to=1)
    assert next(g for g in plan.groups if g["producers"] == ["fc"])["pruned"] == [0, 5]


def test_activation_statistics_match_numpy():
    model = _model()
    x, _ = _data()
    graph = ChannelGraph(model)
    group = _group(graph, "fc")
    fc_out = keras.Model(model.inputs, model.get_layer("fc").output).predict(x, verbose=0)
    apoz = catalog.get("apoz", data=x)
    mean = catalog.get("mean_activation", data=x)
    np.testing.assert_allclose(apoz(graph, group), 1 - (fc_out == 0).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(mean(graph, group), np.abs(fc_out).mean(axis=0), rtol=1e-5)


@tensorflow_only  # the reference gradient comes from tf.GradientTape
def test_taylor_equals_the_group_first_order_term():
    model = _model()
    x, y = _data(64)
    graph = ChannelGraph(model)
    group = _group(graph, "fc")
    criterion = catalog.get(
        "taylor", data=(x, y), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ).bind(model)
    scores = criterion(graph, group)
    # Reference: per batch of 64, (sum over fc's column, bias and head's row of g * w)^2.
    fc, head = model.get_layer("fc"), model.get_layer("head")
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x))
    gk, gb, gh = tape.gradient(loss, [fc.kernel, fc.bias, head.kernel])
    term = (
        (gk.numpy() * fc.kernel.numpy()).sum(axis=0)
        + gb.numpy() * fc.bias.numpy()
        + (gh.numpy() * head.kernel.numpy()).sum(axis=1)
    )
    np.testing.assert_allclose(scores, term**2, rtol=1e-4, atol=1e-12)


def test_taylor_uses_the_compiled_loss_and_a_dataset():
    model = _model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    plan = kprune.plan_channels(model, 0.5, importance="taylor", data=dataset, round_to=1)
    assert [len(g["pruned"]) for g in plan.groups if g["producers"] in (["conv"], ["fc"])] == [4, 3]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(importance="apoz"), "pass `data=`"),
        (dict(importance="taylor", data=np.zeros((4, 6, 6, 2), "float32")), r"must be `\(inputs, targets\)`"),
        (dict(importance="taylor", data=(np.zeros((4, 6, 6, 2), "float32"), np.zeros(4))), "needs a loss"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kprune.plan_channels(_model(), 0.5, **kwargs)
