"""`QuantizeLayer`: fake quantization of a tensor between layers (tfmot's), and `QuantizeAnnotate`.

`quantize_apply` puts a `QuantizeLayer` where a quantized layer reads a
float tensor: after the model's inputs (over the range of every input value
seen, `AllValuesQuantizer`: the int8 file's input scale), and after a layer
left unquantized. `QuantizeAnnotate` marks a layer for `quantize_apply`
(`quantize_annotate_layer`, `quantize_annotate_model`) and runs it
unchanged.

Example:

>>> import keras, numpy as np
>>> from kprune.quantization.quantizers import AllValuesQuantizer
>>> layer = QuantizeLayer(AllValuesQuantizer(8, False, False, False))
>>> y = layer(np.array([[0.0, 0.51, 1.0]], "float32"), training=True)
>>> float(layer.weights[1].value), [round(float(v), 3) for v in y[0]]
(1.0, [0.0, 0.51, 1.0])
"""

import keras

from kprune._internal import keras_layers as keras_internals
from kprune.quantization.quantize_config import QuantizeConfig
from kprune.quantization.quantizers import Quantizer


@keras.saving.register_keras_serializable(package="kprune")
class QuantizeLayer(keras.layers.Layer):
    """Fake-quantizes the tensor it is called on (tfmot's `QuantizeLayer`).

    Args:
        quantizer: a `Quantizer`, or None (the layer passes its input on).
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, quantizer, **kwargs):
        super().__init__(**kwargs)
        if isinstance(quantizer, dict):
            quantizer = keras.saving.deserialize_keras_object(quantizer)
        if quantizer is not None and not isinstance(quantizer, Quantizer):
            raise TypeError(
                "Argument `quantizer` must be a kprune.quantization.quantizers.Quantizer or None. "
                f"Received: quantizer={quantizer!r}"
            )
        self.quantizer = quantizer
        self._state = {}

    def build(self, input_shape=None):
        if self.quantizer is not None:
            self._state = self.quantizer.build(input_shape, self.name, self) or {}
        self.built = True

    def call(self, inputs, training=None):
        if self.quantizer is None:
            return inputs
        return self.quantizer(inputs, bool(training), self._state)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["quantizer"] = (keras.saving.serialize_keras_object(self.quantizer)
                               if self.quantizer is not None else None)
        return config


@keras.saving.register_keras_serializable(package="kprune")
class QuantizeAnnotate(keras.layers.Wrapper):
    """Marks a layer for quantization by `quantize_apply` (tfmot's `QuantizeAnnotate`).

    The layer runs as it is; `quantize_config` (a `QuantizeConfig`, or None
    for the scheme's default) says how `quantize_apply` will quantize it.

    Args:
        layer: the layer.
        quantize_config: a `QuantizeConfig` or None. Defaults to None.
        **kwargs: base `Layer` arguments.
    """

    def __init__(self, layer, quantize_config=None, **kwargs):
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(quantize_config)
        if quantize_config is not None and not isinstance(quantize_config, QuantizeConfig):
            raise TypeError(
                "Argument `quantize_config` must be a kprune.quantization.QuantizeConfig or None. "
                f"Received: quantize_config={quantize_config!r}"
            )
        kwargs.setdefault("name", f"quantize_annotate_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.quantize_config = quantize_config
        inner_shape = getattr(layer, "_input_shape_arg", None)
        if inner_shape is not None and getattr(self, "_input_shape_arg", None) is None:
            self._input_shape_arg = inner_shape

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None, **kwargs):
        if keras_internals.call_has_training_arg(self.layer):
            kwargs["training"] = training
        return self.layer(inputs, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["quantize_config"] = (keras.saving.serialize_keras_object(self.quantize_config)
                                     if self.quantize_config is not None else None)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"], custom_objects=custom_objects)
        if config.get("quantize_config") is not None:
            config["quantize_config"] = keras.saving.deserialize_keras_object(
                config["quantize_config"], custom_objects=custom_objects)
        return cls(**config)
