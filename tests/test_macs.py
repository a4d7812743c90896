"""MACs per layer (`handlers.macs`) against hand counts, and model totals."""

import keras
import numpy as np
import pytest
from keras import layers as L

import kprune
from kprune import handlers


def _macs(layer, input_shape):
    x = keras.Input(input_shape)
    y = layer(x)
    return handlers.macs(layer, [tuple(x.shape)], [tuple(y.shape)])


@pytest.mark.parametrize(
    "layer, input_shape, expected",
    [
        (L.Dense(7), (5,), 5 * 7),
        (L.Dense(7), (3, 5), 3 * 5 * 7),
        (L.Conv2D(8, 3, padding="same"), (6, 6, 4), 6 * 6 * 9 * 4 * 8),
        (L.Conv2D(8, 3, strides=2), (7, 7, 4), 3 * 3 * 9 * 4 * 8),
        (L.Conv2D(8, 3, padding="same", groups=2), (6, 6, 4), 6 * 6 * 9 * 2 * 8),
        (L.Conv1D(8, 3), (10, 4), 8 * 3 * 4 * 8),
        (L.Conv3D(2, 2), (3, 3, 3, 2), 8 * 8 * 2 * 2),
        (L.DepthwiseConv2D(3, padding="same", depth_multiplier=2), (6, 6, 4), 6 * 6 * 9 * 8),
        (L.SeparableConv2D(8, 3, padding="same"), (6, 6, 4), 6 * 6 * (9 * 4 + 4 * 8)),
        (L.Conv2DTranspose(8, 3, strides=2), (4, 4, 4), 4 * 4 * 9 * 4 * 8),
        (L.EinsumDense("abc,cd->abd", output_shape=(None, 6)), (5, 4), 5 * 4 * 6),
        (L.LSTM(6), (10, 4), 10 * 4 * (4 + 6) * 6),
        (L.GRU(6), (10, 4), 10 * 3 * (4 + 6) * 6),
        (L.BatchNormalization(), (6, 6, 4), 0),
        (L.MaxPooling2D(), (6, 6, 4), 0),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, L.Layer) else None,
)
def test_layer_macs(layer, input_shape, expected):
    assert _macs(layer, input_shape) == expected


def test_model_totals_count_every_call_and_shared_weights_once():
    shared = L.Dense(4, name="shared")
    a, b = keras.Input((6,)), keras.Input((6,))
    model = keras.Model([a, b], L.Add()([shared(a), shared(b)]))
    assert kprune.count_macs(model) == 2 * 6 * 4
    assert kprune.count_params(model) == model.count_params() == 6 * 4 + 4


def test_nested_model_and_pruned_weights():
    inner = keras.Sequential([keras.Input((8,)), L.Dense(8, bias_initializer="ones", name="inner")], name="block")
    x = keras.Input((8,))
    model = keras.Model(x, L.Dense(2, bias_initializer="ones", name="head")(inner(x)))
    assert kprune.count_macs(model) == 8 * 8 + 8 * 2
    pruned = kprune.prune_low_magnitude(model, pruning_schedule=kprune.ConstantSparsity(0.5, 0))
    kprune.update_masks(pruned, sparsity=0.5)
    rows = {r.name: r for r in kprune.stats.layer_stats(pruned)}
    assert rows["inner"].nonzero == 32 + 8 and rows["head"].nonzero == 8 + 2
    assert kprune.count_params(pruned) == model.count_params()
    assert kprune.count_params(pruned, nonzero=True) == 32 + 8 + 8 + 2


def test_mobilenet_v2_macs_match_the_published_count():
    model = keras.applications.MobileNetV2(weights=None)
    # 300M multiply-adds (Sandler et al., 2018, Table 3).
    assert abs(kprune.count_macs(model) / 300e6 - 1) < 0.01
