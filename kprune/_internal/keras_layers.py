"""Private attributes of Keras layers that kprune reads: one accessor each.

`MultiHeadAttention` keeps its four projections as `_query_dense`,
`_key_dense`, `_value_dense` and `_output_dense` (their kernels are what
kprune prunes and counts), and every layer records in
`_call_has_training_arg` whether its `call` takes `training`. Keras has no
public name for either, so they are read here only: a Keras upgrade that
renames them touches this file.

Example:

>>> import keras
>>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
>>> _ = mha(keras.ops.ones((1, 3, 8)), keras.ops.ones((1, 3, 8)))
>>> [tuple(p.kernel.shape) for p in attention_projections(mha)]
[(8, 2, 4), (8, 2, 4), (8, 2, 4), (2, 4, 8)]
>>> call_has_training_arg(keras.layers.Dropout(0.5)), call_has_training_arg(keras.layers.ReLU())
(True, False)
"""


def attention_projections(layer):
    """The query, key, value and output `EinsumDense` layers of a built `keras.layers.MultiHeadAttention`."""
    return layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense


def call_has_training_arg(layer):
    """Whether `layer.call` takes a `training` argument (Keras passes it only then)."""
    return bool(layer._call_has_training_arg)
