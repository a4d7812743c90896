"""tfmot's QAT API: where fake quantization goes, annotation, custom configs, errors."""

import keras
import numpy as np
import pytest
from keras import layers as L

import kprune
from kprune.quantization import (
    Default8BitQuantizeConfig,
    QuantizeConfig,
    QuantizeLayer,
    QuantizeWrapper,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
    quantize_scope,
)
from kprune.quantization.quantize_config import FusedOutputConfig, NoOpQuantizeConfig, OutputQuantizeConfig
from kprune.quantization.quantizers import LastValueQuantizer, MovingAverageQuantizer
from kprune.registry import rules


def _np(x):
    return keras.ops.convert_to_numpy(x)


def conv_bn_model():
    x = keras.Input((10, 10, 3))
    y = L.Conv2D(8, 3, use_bias=False, name="conv")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.ReLU(name="relu")(y)
    d = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(y)
    d = L.BatchNormalization(name="dw_bn")(d)
    d = L.ReLU(6.0, name="relu6")(d)
    p = L.Conv2D(8, 1, name="project")(d)
    y = L.Add(name="add")([y, p])
    y = L.MaxPooling2D(name="pool")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dense(16, activation="relu", name="fc")(y)
    y = L.Dense(4, activation="softmax", name="probs")(y)
    return keras.Model(x, y)


def kinds(model):
    """`{wrapper name: (config type, [quantized weight names], activation roles, output quantized)}`."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, QuantizeWrapper):
            out[layer.layer.name] = (
                type(layer.quantize_config).__name__,
                [w.name for w, _, _ in layer._weight_vars],
                [(a.pre, a.post) for a in layer._activations],
                layer._output is not None,
            )
    return out


def test_fake_quantization_goes_where_tflite_quantizes():
    qat = quantize_model(conv_bn_model())
    assert kinds(qat) == {
        # Conv + BN + ReLU are one int8 op: quantized after the ReLU only.
        "conv": ("FusedOutputConfig", ["kernel"], [], False),
        "bn": ("FusedOutputConfig", [], [], False),
        "relu": ("OutputQuantizeConfig", [], [], True),
        "dw": ("FusedOutputConfig", ["kernel"], [], False),
        "dw_bn": ("FusedOutputConfig", [], [], False),
        "relu6": ("OutputQuantizeConfig", [], [], True),
        # A linear output: quantized after its (linear) activation.
        "project": ("Default8BitQuantizeConfig", ["kernel"], [(False, True)], False),
        "add": ("OutputQuantizeConfig", [], [], True),
        "pool": ("NoOpQuantizeConfig", [], [], False),  # max pooling keeps the scale
        "gap": ("OutputQuantizeConfig", [], [], True),
        "fc": ("Default8BitQuantizeConfig", ["kernel"], [(False, True)], False),  # ReLU fused
        # Softmax: quantized before (its int8 kernel has a fixed output range).
        "probs": ("Default8BitQuantizeConfig", ["kernel"], [(True, False)], False),
    }
    assert isinstance(qat.layers[1], QuantizeLayer)
    assert type(qat.layers[1].quantizer).__name__ == "AllValuesQuantizer"
    # Per output channel: Conv and Dense along the last axis, depthwise along (in, multiplier).
    axes = {layer.layer.name: [q.channel_axes for _, q, _ in layer._weight_vars]
            for layer in qat.layers if isinstance(layer, QuantizeWrapper) and layer._weight_vars}
    assert axes == {"conv": [(-1,)], "dw": [(-2, -1)], "project": [(-1,)], "fc": [(-1,)], "probs": [(-1,)]}


def test_copies_weights_and_leaves_the_model_alone(rng):
    model = conv_bn_model()
    x = rng.uniform(0, 1, (4, 10, 10, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    qat = quantize_model(model)
    inner = {layer.layer.name: layer.layer for layer in qat.layers if isinstance(layer, QuantizeWrapper)}
    for layer in model.layers:
        for v in layer.weights:
            np.testing.assert_array_equal(_np(v), _np(getattr(inner[layer.name], v.name)))
            assert all(v is not w for w in inner[layer.name].weights)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, np.arange(4), epochs=2, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Close to the float model: 8 bits.
    qat2 = quantize_model(model)
    np.testing.assert_allclose(_np(qat2(x)), _np(model(x)), atol=0.05)


def test_training_updates_ranges_and_inference_does_not(rng):
    model = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu"), L.Dense(2)])
    qat = quantize_model(model)
    x = rng.normal(size=(32, 6)).astype("float32")
    ranges = lambda: [_np(v).item() for v in qat.non_trainable_weights if v.name.endswith(("_min", "_max"))]  # noqa: E731
    start = ranges()
    qat(x, training=False)
    assert ranges() == start
    qat(x, training=True)
    after = ranges()
    assert after != start
    assert after[0] == pytest.approx(min(x.min(), 0)) and after[1] == pytest.approx(max(x.max(), 0))


def test_annotate_some_layers_quantizes_only_those():
    base = keras.Sequential([keras.Input((20,)), L.Dense(20, name="d1"), L.Dense(10, name="d2"), L.Flatten()])

    def only_d2(layer):
        return quantize_annotate_layer(layer) if layer.name == "d2" else layer

    annotated = keras.models.clone_model(base, clone_function=only_d2)
    qat = quantize_apply(annotated)
    assert [type(layer).__name__ for layer in qat.layers] == [
        "InputLayer", "Dense", "QuantizeLayer", "QuantizeWrapper", "Flatten"]
    # The float output of d1 is quantized before d2 reads it, over a moving average.
    assert type(qat.layers[2].quantizer).__name__ == "MovingAverageQuantizer"


def test_custom_quantize_config_and_custom_layer(tmp_path):
    class DenseConfig(QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return [(layer.kernel, LastValueQuantizer(num_bits=4, symmetric=True, narrow_range=False, per_axis=False))]

        def get_activations_and_quantizers(self, layer):
            return [(layer.activation, MovingAverageQuantizer(num_bits=8, symmetric=False, narrow_range=False,
                                                              per_axis=False))]

        def set_quantize_weights(self, layer, quantize_weights):
            layer.kernel = quantize_weights[0]  # tf.keras style: not called in Keras 3

        def set_quantize_activations(self, layer, quantize_activations):
            layer.activation = quantize_activations[0]

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    class CustomLayer(L.Dense):
        pass

    model = quantize_annotate_model(keras.Sequential([
        keras.Input((6,)), quantize_annotate_layer(CustomLayer(5, name="custom"), DenseConfig()), L.Dense(3)]))
    with quantize_scope({"DenseConfig": DenseConfig, "CustomLayer": CustomLayer}):
        qat = quantize_apply(model)
    wrapper = qat.get_layer("quant_custom")
    assert isinstance(wrapper.quantize_config, DenseConfig) and isinstance(wrapper.layer, CustomLayer)
    y = qat(np.ones((2, 6), "float32"), training=True)
    kernel = _np(wrapper.layer.kernel)
    levels = np.unique(np.round(_np(wrapper._weight_vars[0][1](kernel, False, wrapper._weight_vars[0][2])), 6))
    assert len(levels) <= 16  # 4 bits
    assert wrapper.layer.activation is keras.activations.linear  # restored after the call
    assert wrapper.layer.get_config()["activation"] == "linear"
    path = tmp_path / "custom.keras"
    qat.save(path)
    with quantize_scope({"DenseConfig": DenseConfig, "CustomLayer": CustomLayer}):
        loaded = keras.models.load_model(path)
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    np.testing.assert_array_equal(_np(loaded(x)), _np(qat(x)))
    assert np.all(np.isfinite(_np(y)))


def test_registered_custom_layer_gets_the_default_scheme():
    @keras.saving.register_keras_serializable(package="test_quantize")
    class Scale(L.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 4), name="w")

        def call(self, x):
            return x @ self.w

    model = keras.Sequential([keras.Input((3,)), Scale(name="scale")])
    with pytest.raises(ValueError, match=r"does not know how to quantize layers 'scale' \(Scale\)"):
        quantize_model(model)
    try:
        kprune.register_layer(Scale, quantize={"role": "producer", "weights": {"w": -1}})
        qat = quantize_model(model)
        wrapper = qat.get_layer("quant_scale")
        assert [(w.name, q.channel_axes) for w, q, _ in wrapper._weight_vars] == [("w", (-1,))]
        assert wrapper._output is None and not wrapper._activations
    finally:
        rules._RULES.pop(Scale, None)
    with pytest.raises(ValueError, match="Argument `quantize` of register_layer\\(Scale\\)"):
        kprune.register_layer(Scale, quantize="fused")


def test_errors_name_the_problem():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed model has no layer graph"):
        quantize_model(Sub())
    with pytest.raises(TypeError, match="Received: to_annotate=<Dense"):
        quantize_annotate_model(L.Dense(2))
    plain = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    with pytest.raises(ValueError, match="has no layer annotated"):
        quantize_apply(plain)
    with pytest.raises(ValueError, match="kprune.strip_pruning\\(model\\) first"):
        quantize_model(kprune.prune_low_magnitude(plain))
    norm = keras.Sequential([keras.Input((4,)), L.LayerNormalization(name="ln"), L.Dense(2)])
    with pytest.raises(ValueError, match=r"layers 'ln' \(LayerNormalization\)"):
        quantize_model(norm)
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4)], name="inner")
    x = keras.Input((4,))
    with pytest.raises(ValueError, match="holds the model 'inner' as a layer"):
        quantize_model(keras.Model(x, inner(x)))
    with pytest.raises(TypeError, match="Received: scheme='8bit'"):
        quantize_apply(quantize_annotate_model(plain), scheme="8bit")
    with pytest.raises(TypeError, match="must be a kprune.quantization.QuantizeConfig"):
        quantize_annotate_layer(L.Dense(2), quantize_config="int8")


def test_lambda_layers_are_left_out_with_a_warning():
    model = keras.Sequential([keras.Input((4,)), L.Dense(4), L.Lambda(lambda t: t * 2.0, name="double"), L.Dense(2)])
    with pytest.warns(UserWarning, match="'double' \\(Lambda\\) is a Lambda layer") as caught:
        annotated = quantize_annotate_model(model)
    assert caught[0].filename == __file__
    qat = quantize_apply(annotated)
    assert [type(layer).__name__ for layer in qat.layers][3:] == ["Lambda", "QuantizeLayer", "QuantizeWrapper"]


def test_simple_configs_serialize():
    for config in (NoOpQuantizeConfig(), OutputQuantizeConfig(False),
                   Default8BitQuantizeConfig(["kernel"], ["activation"], False, [(-2, -1)]),
                   FusedOutputConfig(Default8BitQuantizeConfig(["kernel"], [], False))):
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(config))
        assert type(again) is type(config) and again.get_config() == config.get_config()
