"""Where TFLite fuses: which layers' outputs are quantized only after the op that follows them.

TFLite's converter folds a BatchNormalization into the convolution or fully
connected op before it and fuses a ReLU or ReLU6 into the op before it (a
convolution, a folded BatchNormalization, an Add), so Conv2D +
BatchNormalization + ReLU is one int8 op with one quantized output. Fake
quantization between them would simulate a rounding the file never does.
`fused_outputs` finds, from the layer registry's roles
(`kprune.registry.quantize_specs`), the layers whose output goes unquantized
into such an op:

* a producer (Conv, Dense, DepthwiseConv) with a linear activation whose one
  consumer is a BatchNormalization or a fusable activation;
* a BatchNormalization or a merge (Add, ...) whose one consumer is a
  fusable activation.

Only layers quantized with the scheme's own configs take part: a layer
given its own `QuantizeConfig` keeps it, as in tfmot.

Example:

>>> import keras
>>> x = keras.Input((8, 8, 3))
>>> y = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(x)
>>> y = keras.layers.BatchNormalization(name="bn")(y)
>>> y = keras.layers.ReLU(name="relu")(y)
>>> model = keras.Model(x, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(y)))
>>> sorted(layer.name for layer in fused_outputs(model, model.layers))
['bn', 'conv']
"""

from kprune._internal import functional
from kprune.registry.quantize_specs import activation_role, fuses_into_previous, quantize_role
from kprune.registry.queries import unwrap


def graph_layers(model):
    """`[(layer, node)]` for every layer call of a Sequential or Functional
    model, in dependency order (`keras.ops` operations left out)."""
    return [(node.operation, node) for node in functional.nodes(model) if functional.is_layer(node.operation)]


def consumers(model):
    """`{id(layer): [consumer or None]}`: the operations that read each
    layer's outputs, None for an output of the model."""
    function = functional.function_of(model, purpose="Quantization")
    producer = {}
    found = {}
    for node in functional.nodes(function):
        for t in node.outputs:
            producer[id(t)] = node.operation
        found.setdefault(id(node.operation), [])
    for node in functional.nodes(function):
        for t in node.input_tensors:
            source = producer.get(id(t))
            if source is not None:
                found[id(source)].append(node.operation)
    for t in function.outputs:
        source = producer.get(id(t))
        if source is not None:
            found[id(source)].append(None)
    return found


def _fuses(layer, consumer, eligible):
    """Whether `layer`'s output goes unquantized into `consumer`."""
    if consumer is None or id(consumer) not in eligible:
        return False
    role = quantize_role(layer)
    if role == "producer":
        if activation_role(getattr(unwrap(layer), "activation", None) or _linear) != "same_scale":
            return False
        return quantize_role(consumer) == "batch_norm" or fuses_into_previous(consumer)
    if role in ("batch_norm", "merge"):
        return fuses_into_previous(consumer)
    return False


def _linear(x):
    return x


def fused_outputs(model, layers):
    """The layers among `layers` (quantized with the scheme's own configs)
    whose output TFLite fuses into the one op that reads it.

    Args:
        model: a Sequential or Functional model whose graph holds `layers`.
        layers: the layers to consider (each called once).

    Returns:
        A list of layers, in graph order.
    """
    eligible = {id(layer) for layer in layers}
    readers = consumers(model)
    fused, seen = [], set()
    for layer, _ in graph_layers(model):
        if id(layer) not in eligible or id(layer) in seen:
            continue
        seen.add(id(layer))
        reads = readers.get(id(layer), [])
        if len(reads) == 1 and _fuses(layer, reads[0], eligible):
            fused.append(layer)
    return fused
