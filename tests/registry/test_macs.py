"""MACs per layer (`keras_layers.macs`) against hand counts, and model totals."""

import keras
import numpy as np
import pytest
from keras import layers as L

import kprune
from kprune.registry import keras_layers


def _macs(layer, input_shape):
    x = keras.Input(input_shape)
    y = layer(x)
    return keras_layers.macs(layer, [tuple(x.shape)], [tuple(y.shape)])


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


# ----------------------------------------------- layers that hold layers


class Mixer(L.Layer):
    """A layer holding layers, with a weight of its own and a matmul of two
    activations (as an attention layer has)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.up = L.Dense(units, name="up")
        self.down = L.Dense(6, name="down")

    def build(self, shape):
        self.up.build(shape)
        self.w = self.add_weight(shape=(self.units, self.units), name="w")
        self.down.build(tuple(shape[:-1]) + (self.units,))

    def call(self, x):
        h = keras.ops.matmul(self.up(x), self.w)
        scores = keras.ops.softmax(keras.ops.einsum("btu,bsu->bts", h, h))
        return self.down(keras.ops.matmul(scores, h))


def _mixer_model():
    x = keras.Input((5, 4))
    y = L.Dense(2, name="head")(Mixer(8, name="mixer")(x))
    model = keras.Model(x, keras.ops.matmul(y, np.ones((2, 3), "float32")))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def test_layer_holding_layers_is_counted_through_its_calls(tmp_path):
    model = _mixer_model()
    t, d, u = 5, 4, 8
    rows = {r.name: (r.params, r.macs) for r in kprune.stats.layer_stats(model)}
    assert rows["mixer/up"] == (d * u + u, t * d * u)
    assert rows["mixer/down"] == (u * 6 + 6, t * u * 6)
    assert rows["mixer"] == (u * u, 0)  # its own weight; the matmul reading it is a row
    matmuls = sorted(m for name, (p, m) in rows.items() if name.startswith("mixer/") and not p)
    assert matmuls == sorted([t * u * u, t * t * u, t * t * u])
    total = t * d * u + t * u * u + 2 * t * t * u + t * u * 6 + t * 6 * 2 + t * 2 * 3
    assert kprune.count_macs(model) == total
    assert kprune.count_params(model) == model.count_params()
    # The file counts the same (FULLY_CONNECTED, and BATCH_MATMUL of activations).
    path = str(tmp_path / "mixer.tflite")
    assert kprune.export_tflite(model, path, measure_latency=False).verified
    assert kprune.summary(path).macs == total


def test_subclassed_model_is_counted_on_its_build_shape():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = L.Dense(8)
            self.unused = L.Dense(3)
            self.unused.build((None, 5))
            self.out = L.Dense(3)

        def call(self, x):
            return self.out(self.hidden(x))

    net = Net()
    net(np.zeros((2, 10, 4), "float32"))
    assert kprune.count_macs(net) == 10 * (4 * 8 + 8 * 3)
    assert kprune.count_params(net) == net.count_params()  # the unused layer's too


def test_a_call_that_cannot_be_traced_warns_and_counts_its_weights():
    class Opaque(L.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = L.Dense(4)

        def build(self, shape):
            self.dense.build(shape)

        def call(self, x):
            if keras.ops.convert_to_numpy(x).sum() > 0:  # needs a value
                return self.dense(x)
            return self.dense(-x)

        def compute_output_shape(self, shape):
            return tuple(shape[:-1]) + (4,)

    x = keras.Input((3,))
    model = keras.Model(x, L.Dense(2)(Opaque(name="opaque")(x)))
    with pytest.warns(RuntimeWarning, match=r"0 MACs for layer 'opaque' \(Opaque\).*register_layer"):
        rows = kprune.stats.layer_stats(model)
    assert [(r.name, r.params, r.macs) for r in rows][0] == ("opaque", 16, 0)
    assert kprune.count_params(model) == model.count_params()


def test_attention_called_by_keyword_inside_a_layer():
    """Keyword arguments are read in the `call` signature's order (query,
    value, key), not alphabetically (key first): keys and values have 7
    positions here, the query 5."""

    class Cross(L.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.mha = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")

        def call(self, x, context):
            return self.mha(value=context, query=x, key=context)

    x, context = keras.Input((5, 16)), keras.Input((7, 12))
    model = keras.Model([x, context], Cross(name="cross")(x, context))
    projections = 5 * 16 * 16 + 7 * 12 * 16 + 7 * 12 * 16 + 5 * 16 * 16
    assert kprune.count_macs(model) == projections + 2 * 5 * 7 * (8 + 8)
