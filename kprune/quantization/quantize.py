"""tfmot's quantization API on Keras 3: `quantize_model`, `quantize_annotate_*`, `quantize_apply`, `quantize_scope`.

`quantize_model(model)` is `quantize_apply(quantize_annotate_model(model))`:
every layer is annotated, and `quantize_apply` rebuilds the model with each
annotated layer wrapped in a `QuantizeWrapper` (its config from the
annotation, else from the scheme's registry), TFLite's fusions applied
(`kprune.quantization.layout`), and a `QuantizeLayer` wherever a quantized
layer reads a float tensor (the model's inputs, an unquantized layer's
output). The new model has its own copies of the weights; the input model
is left as it was.

Keras 3 differences from tfmot: the result is a Functional model (a
Sequential one too); a model that still holds pruning wrappers is refused
(`kprune.strip_pruning` first, as tfmot's PQAT guide does).

Example:

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
...                           keras.layers.Flatten(), keras.layers.Dense(3)])
>>> qat = quantize_model(model)
>>> [type(layer).__name__ for layer in qat.layers]
['InputLayer', 'QuantizeLayer', 'QuantizeWrapper', 'QuantizeWrapper', 'QuantizeWrapper']
>>> tuple(qat(np.ones((1, 8, 8, 1), "float32")).shape)
(1, 3)
"""

import copy

import keras

from kprune._internal import functional
from kprune.quantization.default_8bit import Default8BitQuantizeScheme, QuantizeScheme
from kprune.quantization.layout import graph_layers
from kprune.quantization.quantize_config import FusedOutputConfig, QuantizeConfig
from kprune.quantization.quantize_layer import QuantizeAnnotate, QuantizeLayer
from kprune.quantization.quantize_wrapper import QuantizeWrapper
from kprune.quantization.quantizers import AllValuesQuantizer, MovingAverageQuantizer
from kprune.registry.queries import describe
from kprune.sparsity import in_place
from kprune.sparsity.prune import clone_with, collect_wrappers, copy_layer
from kprune.utils.user_warnings import warn


def quantize_scope(*args):
    """A scope in which quantized models and configs load by class name (tfmot's `quantize_scope`).

    Holds every class kprune registers with Keras by its plain name, and the
    `{name: class}` dicts given (a custom `QuantizeConfig`, `Quantizer` or
    layer). `.keras` files of kprune's classes load without it; a custom
    class not registered with Keras needs it (or `custom_objects`).

    Args:
        *args: dicts `{name: class}` to add.

    Returns:
        A `keras.saving.custom_object_scope`.

    Example:

    >>> with quantize_scope({"MyConfig": dict}):
    ...     print(keras.saving.get_registered_object("MyConfig") is dict,
    ...           keras.saving.get_registered_object("QuantizeWrapper").__name__)
    True QuantizeWrapper
    """
    objects = {key.split(">", 1)[1]: obj for key, obj in keras.saving.get_custom_objects().items()
               if key.startswith("kprune>")}
    for extra in args:
        if not isinstance(extra, dict):
            raise TypeError(f"Arguments of quantize_scope must be dicts {{name: class}}. Received: {extra!r}")
        objects.update(extra)
    return keras.saving.custom_object_scope(objects)


def _check_graph_model(model, argument):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `{argument}` must be a Keras Sequential or Functional model (use "
            f"quantize_annotate_layer for a layer). Received: {argument}={model!r} (of type "
            f"{type(model).__name__})"
        )
    if not functional.is_graph(model):
        raise ValueError(
            f"Argument `{argument}` must be a Sequential or Functional model: a subclassed model "
            f"has no layer graph to quantize. Received: model '{model.name}' of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built: give it an `Input` or call `model.build(input_shape)`.")
    if collect_wrappers(model) or in_place.targets_of(model):
        raise ValueError(
            f"Model '{model.name}' still holds pruning wrappers or masks. Call "
            "kprune.strip_pruning(model) first (as tfmot's PQAT guide does), then quantize it "
            "with the prune-preserving scheme to keep its zeros."
        )
    for layer, _ in graph_layers(model):
        if functional.is_nested_graph(layer):
            raise ValueError(
                f"Model '{model.name}' holds the model '{layer.name}' as a layer; quantizing a model "
                "inside a model is not supported (as in tfmot). Rebuild it flat."
            )


def quantize_annotate_layer(to_annotate, quantize_config=None):
    """Mark a layer to be quantized by `quantize_apply` (tfmot's `quantize_annotate_layer`).

    Args:
        to_annotate: a Keras layer (not a model).
        quantize_config: a `QuantizeConfig`, or None for the scheme's
            default for the layer. Defaults to None.

    Returns:
        The layer wrapped in a `QuantizeAnnotate`.

    Example:

    >>> annotated = quantize_annotate_layer(keras.layers.Dense(2))
    >>> type(annotated).__name__, annotated.quantize_config
    ('QuantizeAnnotate', None)
    """
    if not isinstance(to_annotate, keras.layers.Layer) or isinstance(to_annotate, keras.Model):
        raise TypeError(
            "Argument `to_annotate` must be a Keras layer (quantize_annotate_model takes a model). "
            f"Received: to_annotate={to_annotate!r} (of type {type(to_annotate).__name__})"
        )
    if quantize_config is not None and not isinstance(quantize_config, QuantizeConfig):
        raise TypeError(
            "Argument `quantize_config` must be a kprune.quantization.QuantizeConfig or None. "
            f"Received: quantize_config={quantize_config!r}"
        )
    return QuantizeAnnotate(to_annotate, quantize_config=quantize_config)


def quantize_annotate_model(to_annotate):
    """Mark every layer of a model to be quantized (tfmot's `quantize_annotate_model`).

    Layers already annotated keep their annotation (and config); `Lambda`
    layers are left out, with a warning (their computation is unknown). The
    result has copies of the weights.

    Args:
        to_annotate: a built Sequential or Functional model.

    Returns:
        A new model whose layers are `QuantizeAnnotate`d.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> [type(layer).__name__ for layer in quantize_annotate_model(model).layers]
    ['QuantizeAnnotate']
    """
    _check_graph_model(to_annotate, "to_annotate")
    for layer, _ in graph_layers(to_annotate):
        if isinstance(layer, keras.layers.Lambda):
            warn(f"Layer {describe(layer)} is a Lambda layer: quantize_annotate_model leaves it "
                 "unquantized. Write it as a layer with a QuantizeConfig to quantize it.")

    def clone_layer(old):
        if isinstance(old, QuantizeAnnotate):
            inner = copy_layer(old.layer)
            return inner, QuantizeAnnotate(inner, quantize_config=copy.deepcopy(old.quantize_config))
        if isinstance(old, keras.layers.Lambda):
            return old, old  # stateless, and safe mode refuses to copy its function
        new = copy_layer(old)
        return new, QuantizeAnnotate(new)

    return clone_with(to_annotate, clone_layer, lambda layer: layer.get_weights())


def _built_copy(layer):
    if isinstance(layer, keras.layers.Lambda):
        return layer  # stateless, and safe mode refuses to copy its function
    new = copy_layer(layer)
    new.set_weights(layer.get_weights())
    return new


def quantize_apply(model, scheme=None, quantized_layer_name_prefix="quant_"):
    """Make an annotated model quantization aware (tfmot's `quantize_apply`).

    Args:
        model: a built Sequential or Functional model with at least one
            `QuantizeAnnotate`d layer.
        scheme: a `QuantizeScheme`. Defaults to None:
            `Default8BitQuantizeScheme()`; `Default8BitPrunePreserveQuantizeScheme()`
            keeps a pruned model's zeros.
        quantized_layer_name_prefix: prefix of the wrappers' names. Defaults
            to "quant_".

    Returns:
        A new Functional model (the input model is not modified).

    Raises:
        ValueError: no layer is annotated, an annotated layer without a
            config is unknown to the scheme (all such layers are named), the
            model is subclassed, nested or still pruned.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), quantize_annotate_layer(keras.layers.Dense(3)),
    ...                           keras.layers.Dense(2)])
    >>> [type(layer).__name__ for layer in quantize_apply(model).layers]
    ['InputLayer', 'QuantizeLayer', 'QuantizeWrapper', 'Dense']
    """
    scheme = Default8BitQuantizeScheme() if scheme is None else scheme
    if not isinstance(scheme, QuantizeScheme):
        raise TypeError(f"Argument `scheme` must be a kprune.quantization.QuantizeScheme. Received: scheme={scheme!r}")
    _check_graph_model(model, "model")
    layers = list({id(layer): layer for layer, _ in graph_layers(model)}.values())
    annotated = [layer for layer in layers if isinstance(layer, QuantizeAnnotate)]
    if not annotated:
        raise ValueError(
            f"Model '{model.name}' has no layer annotated with quantize_annotate_layer or "
            "quantize_annotate_model: there is nothing to quantize."
        )
    registry = scheme.get_quantize_registry()
    unknown = [describe(a.layer) for a in annotated if a.quantize_config is None and not registry.supports(a.layer)]
    if unknown:
        raise ValueError(
            f"The {type(scheme).__name__} does not know how to quantize layers {', '.join(unknown)}. "
            "Pass a QuantizeConfig to quantize_annotate_layer(layer, quantize_config), describe "
            "their types with kprune.register_layer(cls, quantize=...), or annotate only the other "
            "layers."
        )
    defaults = [a for a in annotated if a.quantize_config is None]
    fused = {id(layer) for layer in scheme.get_layout_transformer().fused_outputs(model, defaults)}
    replacements = {}
    for layer in layers:
        if not isinstance(layer, QuantizeAnnotate):
            replacements[id(layer)] = _built_copy(layer)
            continue
        inner = _built_copy(layer.layer)
        config = copy.deepcopy(layer.quantize_config) or registry.get_quantize_config(inner)
        if id(layer) in fused:
            config = FusedOutputConfig(config)
        replacements[id(layer)] = QuantizeWrapper(inner, config, name_prefix=quantized_layer_name_prefix)
    return functional.rebuild(model, _Rebuild(replacements).call)


class _Rebuild:
    """The node calls of `quantize_apply`'s new graph: each layer replaced,
    and a `QuantizeLayer` on each float tensor a quantized layer reads."""

    def __init__(self, replacements):
        self.replacements = replacements
        self.quantized, self.produced, self.input_quantized = set(), set(), {}

    def _quantized_input(self, tensor):
        if not isinstance(tensor, keras.KerasTensor) or id(tensor) in self.quantized:
            return tensor
        if id(tensor) not in self.input_quantized:
            # The model's inputs: the range of every value seen (the file's
            # input scale); another layer's float output: a moving average.
            kind = MovingAverageQuantizer if id(tensor) in self.produced else AllValuesQuantizer
            self.input_quantized[id(tensor)] = QuantizeLayer(kind(8, False, False, False))(tensor)
        return self.input_quantized[id(tensor)]

    def call(self, node, args, kwargs):
        operation = node.operation
        if not functional.is_layer(operation):
            outputs = operation(*args, **kwargs)
        else:
            new = self.replacements[id(operation)]
            if isinstance(operation, QuantizeAnnotate):
                args, kwargs = keras.tree.map_structure(self._quantized_input, (args, kwargs))
            outputs = new(*args, **kwargs)
            if isinstance(operation, QuantizeAnnotate):
                self.quantized.update(id(t) for t in keras.tree.flatten(outputs))
        self.produced.update(id(t) for t in keras.tree.flatten(outputs))
        return outputs


def quantize_model(to_quantize, quantized_layer_name_prefix="quant_"):
    """Make a model quantization aware, every layer the default 8-bit way (tfmot's `quantize_model`).

    Args:
        to_quantize: a built Sequential or Functional model (pretrained
            weights recommended: QAT is a fine-tuning).
        quantized_layer_name_prefix: prefix of the wrappers' names. Defaults
            to "quant_".

    Returns:
        A new Functional model that simulates TFLite's int8 arithmetic in
        training; `kprune.export_tflite` converts it with its learned ranges.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")])
    >>> quantize_model(model).layers[-1].name
    'quant_head'
    """
    _check_graph_model(to_quantize, "to_quantize")
    return quantize_apply(quantize_annotate_model(to_quantize),
                          quantized_layer_name_prefix=quantized_layer_name_prefix)


def is_quantize_aware(model):
    """Whether `model` holds quantization-aware layers (`QuantizeWrapper`, `QuantizeLayer`).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> is_quantize_aware(model), is_quantize_aware(quantize_model(model))
    (False, True)
    """
    return any(isinstance(layer, (QuantizeWrapper, QuantizeLayer)) for layer in functional.sublayers(model))
