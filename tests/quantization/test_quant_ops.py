"""Fake quantization and the quantizers against NumPy references and TensorFlow's own op."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kprune.quantization import quant_ops
from kprune.quantization.quantizers import (
    AllValuesQuantizer,
    LastValueQuantizer,
    MovingAverageQuantizer,
    PerChannelWeightsQuantizer,
)


def np_fake_quant(x, lo, hi, bits=8, narrow=False):
    """TensorFlow's FakeQuantWithMinMaxVars, in NumPy (float32 like the kernel)."""
    x, lo, hi = (np.asarray(v, np.float32) for v in (x, lo, hi))
    qmin, qmax = (1 if narrow else 0), 2**bits - 1
    scale = (hi - lo) / np.float32(qmax - qmin)
    zero = np.floor(np.clip(qmin - lo / scale, qmin, qmax) + 0.5)
    nlo, nhi = (qmin - zero) * scale, (qmax - zero) * scale
    clipped = np.minimum(np.maximum(x, nlo), nhi)
    return (np.floor((clipped - nlo) * (np.float32(1) / scale) + 0.5) * scale + nlo).astype(np.float32)


def np_fake_quant_weights(w, reduce_axes, bits=8):
    levels = 2 ** (bits - 1) - 1
    scale = np.abs(w).max(axis=reduce_axes, keepdims=True) / levels
    scale = np.where(scale > 0, scale, 1)
    return np.clip(np.floor(w / scale + 0.5), -levels, levels) * scale, scale


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("lo,hi,narrow", [(-1.0, 2.0, False), (0.0, 6.0, False), (-0.3, 0.0, False),
                                          (-2.0, 2.0, True), (0.13, 0.9, False)])
def test_fake_quant_matches_numpy_and_tensorflow(rng, lo, hi, narrow):
    x = rng.uniform(-3, 7, 1000).astype("float32")
    expected = np_fake_quant(x, lo, hi, narrow=narrow)
    ours = np_(quant_ops.fake_quant_reference(x, lo, hi, narrow_range=narrow))
    theirs = np_(tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, narrow_range=narrow))
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    # On the grid: 256 (or 255) levels at most, 0 exact when inside the range.
    assert len(np.unique(ours)) <= 2**8
    if lo <= 0 <= hi:
        assert 0.0 in np.unique(np_(quant_ops.fake_quant_reference(np.zeros(3, "float32"), lo, hi)))


def test_fake_quant_per_channel_matches_tensorflow(rng):
    x = rng.normal(size=(16, 5)).astype("float32")
    lo, hi = -rng.uniform(0.1, 2, 5).astype("float32"), rng.uniform(0.1, 2, 5).astype("float32")
    ours = np_(quant_ops.fake_quant_reference(x, lo, hi))
    theirs = np_(tf.quantization.fake_quant_with_min_max_vars_per_channel(x, lo, hi))
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_allclose(np_(quant_ops.fake_quant(x, lo, hi)), theirs, atol=1e-6)


def test_straight_through_gradients():
    x = tf.constant(np.linspace(-2, 3, 51, dtype="float32"))
    for fn in (quant_ops.fake_quant_reference, quant_ops.fake_quant):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(fn(x, -1.0, 2.0) * 3.0)
        grad = tape.gradient(y, x).numpy()
        inside = (x.numpy() >= -1.0) & (x.numpy() <= 2.0)
        np.testing.assert_array_equal(grad[inside], 3.0)
        np.testing.assert_array_equal(grad[~inside], 0.0)


def test_weights_per_channel_symmetric(rng):
    w = rng.normal(size=(3, 3, 4, 6)).astype("float32") * rng.uniform(0.01, 2, 6).astype("float32")
    w[..., 2] = 0.0  # a pruned channel stays 0
    w[0, 0, 0, 1] = 0.0
    q = np_(quant_ops.fake_quant_weights(w, (-1,)))
    expected, scale = np_fake_quant_weights(w, (0, 1, 2))
    np.testing.assert_allclose(q, expected, rtol=1e-6, atol=1e-9)
    integers = q / scale
    np.testing.assert_allclose(integers, np.round(integers), atol=1e-4)
    assert np.abs(np.round(integers)).max() == 127 and np.all(np.abs(np.round(integers)) <= 127)
    assert np.all(q[w == 0] == 0)
    # Depthwise kernels (h, w, in, multiplier): one scale per (in, multiplier) pair.
    d = rng.normal(size=(3, 3, 4, 2)).astype("float32")
    expected, _ = np_fake_quant_weights(d, (0, 1))
    np.testing.assert_allclose(np_(quant_ops.fake_quant_weights(d, (-2, -1))), expected, rtol=1e-6)
    # Per tensor: one scale.
    expected, _ = np_fake_quant_weights(d, None)
    np.testing.assert_allclose(np_(quant_ops.fake_quant_weights(d, ())), expected, rtol=1e-6)


def test_weight_gradient_is_straight_through(rng):
    w = tf.Variable(rng.normal(size=(4, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(quant_ops.fake_quant_weights(w, (-1,)) * 2.0)
    np.testing.assert_array_equal(tape.gradient(y, w).numpy(), 2.0)


def test_batch_range_rules():
    x = np.array([[0.5, 2.0], [1.0, -0.5]], "float32")
    assert [float(v) for v in quant_ops.batch_range(x)] == [-0.5, 2.0]
    assert [float(v) for v in quant_ops.batch_range(np.abs(x))] == [0.0, 2.0]  # 0 always inside
    lo, hi = quant_ops.batch_range(x, symmetric=True, narrow_range=True)
    assert (float(lo), float(hi)) == (-2.0, 2.0)
    lo, hi = quant_ops.batch_range(x, symmetric=True, narrow_range=False)
    assert float(lo) == pytest.approx(-2.0 * 256 / 254) and float(hi) == 2.0
    lo, hi = quant_ops.batch_range(x, per_axis=True)
    assert np_(lo).tolist() == [0.0, -0.5] and np_(hi).tolist() == [1.0, 2.0]


def test_quantizers_track_ranges(rng):
    layer = keras.layers.Layer()
    batches = [rng.normal(size=(8, 4)).astype("float32") * s for s in (1.0, 3.0, 0.5)]
    last = LastValueQuantizer(8, False, False, False)
    moving = MovingAverageQuantizer(8, False, False, False)
    every = AllValuesQuantizer(8, False, False, False)
    states = [q.build((None, 4), name, layer) for q, name in ((last, "a"), (moving, "b"), (every, "c"))]
    for batch in batches:
        outs = [q(batch, True, s) for q, s in zip((last, moving, every), states)]
    ranges = [(min(b.min(), 0), max(b.max(), 0)) for b in batches]
    assert np_(states[0]["min_var"]) == pytest.approx(ranges[-1][0])
    # The mean of the batch ranges (fewer than 1000 batches seen).
    assert np_(states[1]["max_var"]) == pytest.approx(np.mean([r[1] for r in ranges]), rel=1e-5)
    assert int(np_(states[1]["count"])) == 3
    assert np_(states[2]["min_var"]) == pytest.approx(min(r[0] for r in ranges))
    # Training quantizes with the updated range, inference with the stored one.
    np.testing.assert_allclose(np_(outs[1]), np_fake_quant(batches[-1], *[np_(states[1][k])
                                                                         for k in ("min_var", "max_var")]), atol=1e-6)
    np.testing.assert_allclose(np_(moving(batches[0], False, states[1])),
                               np_fake_quant(batches[0], np_(states[1]["min_var"]), np_(states[1]["max_var"])),
                               atol=1e-6)
    assert int(np_(states[1]["count"])) == 3  # inference leaves the state alone


def test_moving_average_becomes_exponential():
    old, new = 2.0, 4.0
    assert float(quant_ops.moving_average(old, new, 5000, 0.999)) == pytest.approx(0.999 * 2 + 0.001 * 4)
    assert float(quant_ops.moving_average(old, new, 0, 0.999)) == 4.0


def test_quantizer_configs_round_trip_and_errors():
    for q in (LastValueQuantizer(4, True, True, False), MovingAverageQuantizer(8, False, False, True),
              PerChannelWeightsQuantizer((-2, -1))):
        assert type(q).from_config(q.get_config()) == q
        assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(q)) == q
    with pytest.raises(ValueError, match=r"Argument `num_bits` must be an integer in \[2, 16\]. Received: num_bits=1"):
        LastValueQuantizer(1, False, False, False)
    with pytest.raises(ValueError, match="Received: per_axis=True"):
        AllValuesQuantizer(8, True, False, False)
    with pytest.raises(ValueError, match="Received: channel_axes='x'"):
        PerChannelWeightsQuantizer("x")
