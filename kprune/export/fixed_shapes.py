"""The fixed input shapes a model is exported at.

A TFLite file has fixed shapes; LiteRT's builtin kernels cannot run the ops
a dynamic sequence length needs (Keras' exporter then asks for Flex ops such
as FlexStridedSlice). A model whose input is a dict (a KerasHub backbone or
task: `{"token_ids": (None, None), "padding_mask": (None, None)}`) is
exported at the shapes of `input_shapes`, else of the first sample of
`sample_inputs` or `representative_data`; kprune counts its parameters and
MACs at those shapes (`kprune.stats.input_shapes`). Other models keep their
own shapes unless `input_shapes` is given.

Example:

>>> import keras, numpy as np
>>> ids = keras.Input((None,), dtype="int32", name="ids")
>>> model = keras.Model({"ids": ids}, keras.layers.Embedding(10, 4)(ids))
>>> fixed_shapes(model, None, {"ids": np.zeros((2, 7), "int32")}, None)
{'ids': (7,)}
"""

from kprune._internal.functional import input_structure, is_graph
from kprune.litert import runtime as litert
from kprune.stats.input_shapes import normalize_shapes


def takes_dict(model):
    """Whether `model` is a Functional model called on a dict of inputs."""
    return is_graph(model) and isinstance(input_structure(model), dict)


def fixed_shapes(model, input_shapes, sample_inputs, representative_data):
    """`{input name: shape without the batch axis}` to export `model` at, or
    None to keep its own shapes (see the module docstring)."""
    if input_shapes is not None:
        return normalize_shapes(model, input_shapes)
    if not takes_dict(model):
        return None
    specs = litert.input_specs(model)  # the order samples come in
    names, shapes = [name for name, _, _ in specs], [shape[1:] for _, shape, _ in specs]
    if all(None not in shape for shape in shapes):
        return dict(zip(names, shapes))
    for argname, data in (("sample_inputs", sample_inputs), ("representative_data", representative_data)):
        if data is not None:
            first = litert.to_samples(data, specs, argname)[0]
            return {name: tuple(array.shape[1:]) for name, array in zip(names, first)}
    unknown = {name: (None,) + shape for name, shape in zip(names, shapes) if None in shape}
    raise ValueError(
        f"Model '{model.name}' has inputs of unknown size {unknown}, and a TFLite file has fixed "
        "shapes (LiteRT's builtin kernels do not run a dynamic sequence length). Pass "
        "`input_shapes` (e.g. {name: (128,)} for 128 tokens) or `sample_inputs` of that size."
    )
