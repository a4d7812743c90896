"""Builders of whole models: how to rebuild a model kprune cannot clone layer by layer.

A KerasHub backbone or task holds layers whose sizes its constructor decides
(a transformer block builds its attention and FFN from its config), so
channel removal cannot clone it layer by layer. A builder registered here
for its class rebuilds it from new arrays (`kprune.transformers` registers
KerasHub's when KerasHub is installed); `kprune.channels` asks
`model_builder(model)` before cloning. Classes are named by
"module.QualifiedName", so this table never imports the package that
defines them.

Example:

>>> import keras
>>> model_builder(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])) is None
True
>>> isinstance(rebuildable_models(), list)
True
"""

# qualified class name -> builder
_MODEL_BUILDERS = {}


def register_model_builder(qualified_name, builder):
    """Record how to rebuild models of the class named `qualified_name`
    ("module.Class") with other weights: `builder(model, values_of,
    blocks=None)` returns a new model of the same kind whose weights are
    `values_of(variable)` for each variable of `model` -- of the same shapes
    (a masked copy) or smaller ones (channels or heads removed: the builder
    reads the new widths from the arrays) -- keeping the transformer blocks
    at the indices `blocks` (all when None)."""
    _MODEL_BUILDERS[qualified_name] = builder


def model_builder(model):
    """The builder registered for `model`'s class (or its nearest base), or None."""
    for cls in type(model).__mro__:
        builder = _MODEL_BUILDERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if builder is not None:
            return builder
    return None




def rebuildable_models():
    """The class names (without their module) of the backbones a builder is registered for,
    sorted (their subclasses and the tasks built on them are rebuilt too)."""
    return sorted({name.rsplit(".", 1)[-1] for name in _MODEL_BUILDERS} - {"Task"})
