"""What kprune knows of each layer type, described once: the layer registry.

One `LayerRule` per Keras layer class (`rules`: the table and the queries the
rest of kprune asks), the records of Keras' own layers (`keras_layers`), of
`keras.ops` nodes between layers (`ops`) and of einsum equations (`einsum`),
how TFLite's int8 kernels treat each layer type, for quantization-aware
training (`quantize_specs`: `QuantizeSpec`), and `register_layer`
(`registration`), which adds a user's class with the same record. Nothing
outside this subpackage branches on a layer's type.

May import: `kprune._internal`, `kprune.utils`.
"""

from kprune.registry.quantize_specs import QuantizeSpec
from kprune.registry.registration import register_layer
from kprune.registry.rules import ChannelSpec, LayerRule, PrunableLayer, PrunableWeight

__all__ = [
    "ChannelSpec",
    "LayerRule",
    "PrunableLayer",
    "PrunableWeight",
    "QuantizeSpec",
    "register_layer",
]
