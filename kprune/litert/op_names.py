"""Readable names for the ops of a .tflite file: the Keras layer each op came from.

TensorFlow's converter names tensors after the graph it traced:
`<model scope>/<layer scope>/<TF op>` (`digits_1/dense_1_1/MatMul`), the names
of fused ops joined by ";" (`.../re_lu_1/Relu;.../conv_1/convolution`), and
some tensors only internally (`StatefulPartitionedCall_1:0`, `arith.constant`,
`tfl.quantize`). Keras 3 models are traced with every name scope used once
before, so TensorFlow adds a suffix to each: the model `digits` becomes
`digits_1`, the layer `dense_1` becomes `dense_1_1` (a layer called twice:
`shared_1` and `shared_3`). When every model scope in a file carries such a
suffix, one is taken off each layer scope; otherwise (files converted from
tf.keras 2, `model/dense_1/MatMul`) scopes are read as they are.

`op_label` names an op after the innermost Keras layer found in the names of
the weights it reads, else in the names of its outputs (the last piece of a
fused name first: it is the op's own), else `OPNAME_#index`.

Example:

>>> names = ["digits_1/dense_1_1/MatMul", "StatefulPartitionedCall_1:0"]
>>> suffixed = has_scope_suffixes(names)
>>> op_label("FULLY_CONNECTED", 7, ["digits_1/dense_1_1/MatMul"],
...          ["StatefulPartitionedCall_1:0"], suffixed)
'dense_1'
>>> op_label("FULLY_CONNECTED", 7, ["arith.constant"], ["StatefulPartitionedCall_1:0"], suffixed)
'FULLY_CONNECTED_#7'
"""

import re

_SUFFIX = re.compile(r"_\d+$")


def _paths(name):
    """The pieces of a (possibly fused) tensor name, each split into scopes."""
    return [piece.split("/") for piece in name.split(";") if piece]


def has_scope_suffixes(tensor_names):
    """Whether every model scope among `tensor_names` ends in TensorFlow's
    `_<n>` suffix (a Keras 3 model): layer scopes then carry one too.

    >>> has_scope_suffixes(["functional_1/dense_1/MatMul", "serving_default_x:0"])
    True
    >>> has_scope_suffixes(["model/dense_1/MatMul"])
    False
    """
    scopes = {parts[0] for name in tensor_names for parts in _paths(name) if len(parts) >= 2}
    return bool(scopes) and all(_SUFFIX.search(s) for s in scopes)


def layer_of(tensor_name, suffixed):
    """The innermost Keras layer scope in `tensor_name`, or None.

    With `suffixed` (see `has_scope_suffixes`), the layer scopes are the
    leading scopes after the model's that carry a suffix (the ones after
    them, such as `moments` or `batchnorm`, are TensorFlow's inside a layer),
    and the suffix is removed; otherwise the layer is the scope after the
    model's.

    >>> layer_of("functional_1_1/inner_1/in_dense_1/MatMul1", True)
    'in_dense'
    >>> layer_of("functional_1_1/bn_1/batchnorm/mul_1", True), layer_of("functional_1/Mean", True)
    ('bn', None)
    >>> layer_of("sequential/conv2d/BiasAdd;sequential/conv2d/Conv2D", False)
    'conv2d'
    """
    for parts in reversed(_paths(tensor_name)):
        scopes = parts[1:-1]
        if suffixed:
            layers = []
            for scope in scopes:
                if not _SUFFIX.search(scope):
                    break
                layers.append(scope)
            if layers:
                return _SUFFIX.sub("", layers[-1])
        elif scopes:
            return scopes[0]
    return None


def op_label(op_name, index, weight_names, output_names, suffixed):
    """The Keras layer an op came from (see the module docstring), else
    `OPNAME_#index`."""
    for name in list(weight_names) + list(output_names):
        layer = layer_of(name, suffixed)
        if layer:
            return layer
    return f"{op_name}_#{index}"
