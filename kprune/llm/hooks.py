"""Statistics of the inputs of a block's linear layers, captured during its call.

Keras has no forward hooks; `capture(linears, collector)` gives each linear
layer's instance a `call` that hands its input to the collector and then runs
the layer's own `call` (the instance attribute is removed on exit, whatever
happens). `BlockStatistics` turns each input into the rows the layer's matrix
multiplies (`LinearView.rows`) and accumulates them
(`kprune.llm.statistics.InputStatistics`).

Layers that read the same tensor in one call -- query, key and value; gate
and up -- share one accumulator (SparseGPT's Hessian of q/k/v is one matrix),
found on the first batch by identity of the tensor they receive.

Example:

>>> import keras, numpy as np
>>> from kprune.llm.graph import linears_of
>>> inputs = keras.Input((3,))
>>> a, b = keras.layers.Dense(2, name="a"), keras.layers.Dense(2, name="b")
>>> x = inputs
>>> model = keras.Model(inputs, [a(x), b(x)])
>>> linears = linears_of(a) + linears_of(b)
>>> collector = BlockStatistics(linears)
>>> with capture(linears, collector):
...     collector.new_batch()
...     _ = model(np.ones((4, 3), "float32"))
>>> collector.statistics("a") is collector.statistics("b"), collector.statistics("a").count
(True, 4)
"""

import contextlib

from kprune.llm.statistics import InputStatistics


class BlockStatistics:
    """Input statistics of a block's linear layers, by layer name.

    Args:
        linears: `(layer, name, view)` of the block's linear layers.
        hessian: also accumulate Hessians (SparseGPT, reconstruction errors).
        dtype: `"float32"` or `"float64"` for the Hessians.
    """

    def __init__(self, linears, hessian=False, dtype="float32"):
        self.views = {name: view for _, name, view in linears}
        self.hessian = hessian
        self.dtype = dtype
        self.shared = {}   # name -> the name whose accumulator it uses
        self.stats = {}    # owner name -> InputStatistics
        self.current = []  # (tensor, name) received in the current batch
        self.batches = 0

    def new_batch(self):
        """Call before each batch runs through the block."""
        self.current = []
        self.batches += 1

    def add(self, name, x):
        """Layer `name` received `x` in the current batch."""
        if self.batches == 1 and name not in self.shared:
            owner = next((n for t, n in self.current if t is x), None)
            if owner is not None:
                self.shared[name] = self.shared[owner]
                return
            self.shared[name] = name
            self.stats[name] = InputStatistics(self.views[name].shape[0], self.hessian, self.dtype)
        self.current.append((x, name))
        if self.shared.get(name) == name:
            self.stats[name].update(self.views[name].rows(x))

    def statistics(self, name):
        """The `InputStatistics` of layer `name` (shared with the layers that read the same tensor)."""
        return self.stats[self.shared[name]]

    @property
    def nbytes(self):
        return sum(s.nbytes for s in self.stats.values())


@contextlib.contextmanager
def capture(linears, collector):
    """Within the context, every call of a layer in `linears` first hands its
    input to `collector.add(name, x)`."""
    patched = []
    try:
        for layer, name, _ in linears:
            own = vars(layer).get("call")
            original = layer.call

            def hooked(*args, _original=original, _name=name, **kwargs):
                collector.add(_name, args[0] if args else kwargs["inputs"])
                return _original(*args, **kwargs)

            object.__setattr__(layer, "call", hooked)
            patched.append((layer, own))
        yield collector
    finally:
        for layer, own in patched:
            if own is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)
