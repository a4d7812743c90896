"""`LinearView`: every layer type kprune sees as `y = x W` computes exactly
`rows(x) @ matrix(kernel)`, and `kernel(matrix(w))` gives `w` back."""

import keras
import numpy as np
import pytest
from _backend import numpy

from kprune.registry import keras_layers

CASES = [
    ("dense", lambda: keras.layers.Dense(6, use_bias=False), (3, 5, 4)),
    ("llama_query", lambda: keras.layers.EinsumDense("bqm,muh->bquh", (None, 2, 3)), (2, 5, 4)),
    ("llama_output", lambda: keras.layers.EinsumDense("bquh,uhm->bqm", (None, 4)), (2, 5, 2, 3)),
    ("gemma_query", lambda: keras.layers.EinsumDense("btd,ndh->btnh", (None, 2, 3)), (2, 5, 4)),
    ("ellipsis", lambda: keras.layers.EinsumDense("...b,bc->...c", 3), (2, 3, 4)),
    ("conv2d_same_strided", lambda: keras.layers.Conv2D(5, 3, strides=2, padding="same", use_bias=False),
     (2, 7, 6, 3)),
    ("conv2d_dilated", lambda: keras.layers.Conv2D(4, (2, 3), dilation_rate=2, use_bias=False), (2, 8, 9, 3)),
    ("conv1d", lambda: keras.layers.Conv1D(4, 3, padding="same", use_bias=False), (2, 9, 3)),
]


@pytest.mark.parametrize("name, make, shape", CASES, ids=[c[0] for c in CASES])
def test_rows_times_matrix_is_the_layer(name, make, shape, rng):
    layer = make()
    x = rng.normal(size=shape).astype("float32")
    expected = numpy(layer(x))
    view = keras_layers.linear_view(layer)
    assert view is not None and view.variable is layer.kernel
    product = numpy(keras.ops.matmul(view.rows(x), view.matrix(layer.kernel.value)))
    assert product.shape[1] == view.shape[1]
    np.testing.assert_allclose(product.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)
    back = numpy(view.kernel(view.matrix(layer.kernel.value)))
    np.testing.assert_array_equal(back, numpy(layer.kernel))


def test_layers_that_are_not_one_matrix_have_no_view():
    batched = keras.layers.EinsumDense("bnd,nde->bne", (2, 3))
    batched.build((None, 2, 4))
    conv3d = keras.layers.Conv3D(2, 2)
    conv3d.build((None, 4, 4, 4, 1))
    grouped = keras.layers.Conv2D(4, 3, groups=2)
    grouped.build((None, 6, 6, 4))
    embedding = keras.layers.Embedding(10, 4)
    embedding.build()
    for layer in (batched, conv3d, grouped, embedding):
        assert keras_layers.linear_view(layer) is None, layer.name
