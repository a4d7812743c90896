"""`QuantizeWrapper`: a layer run on fake-quantized weights, with quantized activations and outputs.

What the wrapper does at each call, from its `QuantizeConfig`:

1. each weight of `get_weights_and_quantizers` is quantized by its
   quantizer, and the layer runs on the quantized values, substituted for the
   variables through a `keras.StatelessScope` (as kprune's pruning wrapper
   substitutes masked weights): the variables keep their float values, which
   the optimizer updates (straight-through gradients);
2. the activation functions of `get_activations_and_quantizers` are replaced
   for the call by `QuantizeAwareActivation`s, which quantize before the
   function (one TFLite computes as its own op with a fixed output range,
   such as softmax), after it (one TFLite fuses, such as ReLU, or a linear
   one), or both;
3. the output is quantized by `get_output_quantizers`' quantizer.

Quantizer state (ranges) lives in the wrapper's non-trainable variables.
The wrapper's `get_config` is flat and registered, so a `.keras` file loads
without `custom_objects` (a user's `QuantizeConfig` class must be registered
with Keras, or given to `quantize_scope`).

Example:

>>> import keras
>>> from kprune.quantization.default_8bit import Default8BitQuantizeRegistry
>>> dense = keras.layers.Dense(4, activation="relu")
>>> config = Default8BitQuantizeRegistry().get_quantize_config(dense)
>>> wrapper = QuantizeWrapper(dense, config)
>>> y = wrapper(keras.ops.ones((2, 3)), training=True)
>>> sorted(v.name for v in wrapper.non_trainable_weights)
['post_activation_count', 'post_activation_max', 'post_activation_min']
"""

import keras

from kprune._internal import keras_layers as keras_internals
from kprune.quantization.quantize_config import QuantizeConfig
from kprune.registry.quantize_specs import activation_name, activation_role


class QuantizeAwareActivation:
    """An activation function with fake quantization around it (tfmot's).

    Quantized before the function when TFLite runs it as its own op
    (`activation_role` "fixed" or "requantize": its input is an int8
    tensor), after it when its output is a new int8 tensor (every role but
    "fixed", whose range TFLite fixes).

    Args:
        activation: the activation function.
        quantizer: the `Quantizer` of its input and output.
        wrapper: the layer that holds the quantizer's variables.
    """

    def __init__(self, activation, quantizer, wrapper):
        self.activation = activation
        self.quantizer = quantizer
        self.training = False
        role = activation_role(activation)
        self.pre = role in ("fixed", "requantize")
        self.post = role != "fixed"
        self._pre_vars = quantizer.build(None, "pre_activation", wrapper) if self.pre else None
        self._post_vars = quantizer.build(None, "post_activation", wrapper) if self.post else None
        self.__name__ = activation_name(activation)

    def __call__(self, inputs, *args, **kwargs):
        x = inputs
        if self.pre:
            x = self.quantizer(x, self.training, self._pre_vars)
        x = self.activation(x, *args, **kwargs)
        if self.post:
            x = self.quantizer(x, self.training, self._post_vars)
        return x


def weight_name(variable):
    """A variable's short name (`kernel` for `dense/kernel`)."""
    return variable.name.split("/")[-1].split(":")[0]


@keras.saving.register_keras_serializable(package="kprune")
class QuantizeWrapper(keras.layers.Wrapper):
    """Quantizes the weights, activations and output of the layer it wraps (tfmot's `QuantizeWrapper`).

    `kprune.quantization.quantize_apply` places these; build one by hand
    only for a layer outside a model.

    Args:
        layer: the layer to quantize.
        quantize_config: a `QuantizeConfig`.
        name_prefix: prefix of the wrapper's name (`quant_<layer name>`).
            Defaults to "quant_".
        **kwargs: base `Layer` arguments (`name`, ...).

    Example:

    >>> import keras
    >>> from kprune.quantization.quantize_config import OutputQuantizeConfig
    >>> wrapper = QuantizeWrapper(keras.layers.ReLU(name="relu"), OutputQuantizeConfig())
    >>> wrapper.name
    'quant_relu'
    """

    def __init__(self, layer, quantize_config, name_prefix="quant_", **kwargs):
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
            raise TypeError(
                "Argument `layer` must be a Keras layer (not a model). "
                f"Received: layer={layer!r} (of type {type(layer).__name__})"
            )
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(quantize_config)
        if not isinstance(quantize_config, QuantizeConfig):
            raise TypeError(
                f"Argument `quantize_config` of the wrapper of layer '{layer.name}' must be a "
                f"kprune.quantization.QuantizeConfig. Received: quantize_config={quantize_config!r}"
            )
        kwargs.setdefault("name", f"{name_prefix or ''}{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.quantize_config = quantize_config
        inner_shape = getattr(layer, "_input_shape_arg", None)
        if inner_shape is not None and getattr(self, "_input_shape_arg", None) is None:
            self._input_shape_arg = inner_shape  # Sequential builds from the first layer's
        self._weight_vars, self._activations, self._output = [], [], None

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        config = self.quantize_config
        self._weight_vars = []
        for weight, quantizer in config.get_weights_and_quantizers(self.layer):
            if not isinstance(weight, keras.Variable):
                raise ValueError(
                    f"Layer '{self.layer.name}': `get_weights_and_quantizers` of "
                    f"{type(config).__name__} must return the layer's Keras variables. "
                    f"Received: {weight!r}"
                )
            state = quantizer.build(tuple(weight.shape), weight_name(weight), self)
            self._weight_vars.append((weight, quantizer, state or {}))
        self._activations = [QuantizeAwareActivation(activation, quantizer, self)
                             for activation, quantizer in config.get_activations_and_quantizers(self.layer)]
        outputs = list(config.get_output_quantizers(self.layer))
        if len(outputs) > 1:
            raise ValueError(
                f"Layer '{self.layer.name}': {type(config).__name__} returned {len(outputs)} output "
                "quantizers; a layer with one output takes at most one."
            )
        self._output = None
        if outputs:
            self._output = (outputs[0], outputs[0].build(self._output_shape(input_shape), "output", self) or {})
        self.built = True

    def _output_shape(self, input_shape):
        try:
            return tuple(self.layer.compute_output_shape(input_shape))
        except Exception:  # per-tensor quantizers need no shape
            return None

    def call(self, inputs, training=None, **kwargs):
        training = bool(training)
        if keras_internals.call_has_training_arg(self.layer):
            kwargs["training"] = training
        quantized = [(w, quantizer(w.value, training, state)) for w, quantizer, state in self._weight_vars]
        for activation in self._activations:
            activation.training = training
        if quantized or self._activations:
            outputs = self._call_substituted(inputs, quantized, kwargs)
        else:
            outputs = self.layer(inputs, **kwargs)
        if self._output is None:
            return outputs
        if isinstance(outputs, (list, tuple)):
            raise ValueError(f"Layer '{self.layer.name}' has several outputs; only one can be quantized.")
        quantizer, state = self._output
        return quantizer(outputs, training, state)

    def _call_substituted(self, inputs, quantized, kwargs):
        """The inner layer on the quantized weights, with the quantize-aware
        activations in place; state it updates (BatchNormalization's
        statistics, activation ranges) written back to the variables."""
        substituted = {id(w) for w, _ in quantized}
        # Inside an enclosing stateless scope (JAX's `fit`) `v.value` is that
        # scope's value: a nested scope does not see its parent's mapping.
        mapping = list(quantized) + [(v, v.value) for v in self.variables if id(v) not in substituted]
        before = dict(vars(self.layer))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            given = {id(v): scope.get_current_value(v) for v in self.variables}
            self.quantize_config.set_quantize_activations(self.layer, self._activations)
            try:
                outputs = self.layer(inputs, **kwargs)
            finally:
                self._restore(before)
        for v in self.variables:
            if id(v) not in substituted:
                new = scope.get_current_value(v)
                if new is not None and new is not given[id(v)]:
                    v.assign(new)
        for loss in scope.losses:
            self.add_loss(loss)
        return outputs

    def _restore(self, before):
        """Undo what `set_quantize_activations` changed on the inner layer."""
        for key, value in list(vars(self.layer).items()):
            if key not in before:
                object.__delattr__(self.layer, key)
            elif value is not before[key]:
                object.__setattr__(self.layer, key, before[key])

    def get_config(self):
        config = super().get_config()
        config["quantize_config"] = keras.saving.serialize_keras_object(self.quantize_config)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"], custom_objects=custom_objects)
        config["quantize_config"] = keras.saving.deserialize_keras_object(
            config["quantize_config"], custom_objects=custom_objects)
        return cls(**config)
