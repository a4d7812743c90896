"""The channel graph walks traced calls (issue 25): each traced block keeps its own
operations. Its tables are keyed by `id(op)`; a `keras.ops` operation of one
traced block, freed once walked, must not pass for the next block's (CPython
reuses the address; under JAX it did, tying every block's FFN units into one group)."""

import keras

from kprune.dependency.channel_graph import ChannelGraph


class _Block(keras.layers.Layer):
    """A residual MLP block whose activation is a `keras.ops` call (a fresh
    operation each time the block is traced)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.up = keras.layers.Dense(8, name="up")
        self.down = keras.layers.Dense(4, name="down")

    def call(self, x):
        return x + self.down(keras.ops.relu(self.up(x)) * keras.ops.sigmoid(self.up(x)))


def test_each_traced_blocks_operations_stay_its_own():
    x = keras.Input((3, 4))
    h = x
    for i in range(6):
        h = _Block(name=f"block{i}")(h)
    model = keras.Model(x, h)
    for _ in range(5):
        groups = [g.producers for g in ChannelGraph(model).groups if any("/up" in p for p in g.producers)]
        assert groups == [[f"block{i}/up"] for i in range(6)]
