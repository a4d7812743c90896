"""Applying a channel choice: the weights of the masked or smaller model, and
the model that holds them.

`pruned_values(graph, model, flags, remove)` computes, for every variable of
the model, its array once the flagged units are cut off (`remove=False`:
their slices zeroed) or gone (`remove=True`: their slices taken out). Before
either, the constant a removed attention head adds through its value bias is
folded into the output bias (`kprune.registry.attention.fold_value_bias`),
so a masked model and the smaller one give the same outputs, and both stay
closer to the dense model; with FLAP's bias compensation
(`kprune.channels.compensation`), each reader's bias takes the removed
units' mean contribution instead (a head's mean holds its value bias). `copy_with_values` builds the model that holds
those arrays: a Sequential or Functional model is cloned layer by layer (with
new widths in the configs of producers and attention layers), a model
registered with a builder (a KerasHub backbone or task:
`kprune.registry.model_builders.register_model_builder`) is rebuilt by it, wherever it
sits in the model.

Example:

>>> import keras, numpy as np
>>> from kprune.dependency.channel_graph import ChannelGraph
>>> x = keras.Input((4,))
>>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(3, name="hidden")(x)))
>>> graph = ChannelGraph(model)
>>> group = graph.prunable_groups[0]
>>> flags = graph.pruned_flags({group.units[1]})
>>> small = copy_with_values(model, graph, flags, remove=True)
>>> small.get_layer("hidden").units
2
"""

import keras
import numpy as np

from kprune._internal import functional
from kprune.dependency.unit_space import rows_of
from kprune.registry import keras_layers
from kprune.registry.attention import fold_value_bias
from kprune.registry.model_builders import model_builder, rebuildable_models
from kprune.sparsity.prune import clone_with, copy_layer


def pruned_values(graph, model, flags, remove, shifts=None):
    """`{id(variable): array}` for every variable of `model` with the units
    flagged in `flags` (`UnitSpace.pruned_flags`) zeroed or removed, and
    `shifts` (`{id(bias): array}`, `kprune.channels.compensation.bias_shifts`)
    added to the biases first."""
    values = {id(v): keras.ops.convert_to_numpy(v.value) for v in model.weights}
    shifts = shifts or {}
    for attention in graph.attention.values():
        fold = attention.spec.fold
        if fold is None or id(fold[4]) not in shifts:  # a shift holds the heads' whole mean
            fold_value_bias(values, attention.spec, attention.query_heads(flags))
    for key, shift in shifts.items():
        values[key] = (np.asarray(values[key], np.float64) + shift).astype(values[key].dtype)
    if not remove:
        for key, mask in graph.keep_masks(flags).items():
            values[key] = values[key] * mask
        return values
    for usage in graph.usages:
        keep = graph.keep_positions(usage, flags)
        if len(keep) == len(usage.ids):
            continue
        for variable, axis, repeat in usage.slices:
            values[id(variable)] = np.take(values[id(variable)], rows_of(keep, repeat), axis=axis)
    return values


def _new_config(graph, layer, flags):
    """`layer`'s config with its new output width and head counts, or None."""
    config = None
    if id(layer) in graph.widths:
        key, usage = graph.widths[id(layer)]
        width = len(graph.keep_positions(usage, flags))
        if width != len(usage.ids):
            config = keras_layers.resized_config(layer, key, width)
    for key, usage, per_unit in graph.head_widths.get(id(layer), ()):
        heads = len(graph.keep_positions(usage, flags)) * per_unit
        config = keras_layers.resized_config(layer, key, heads, config)
    return config


def _check_rebuildable(graph, flags, rebuilt):
    """Raise if units inside a layer that holds layers are removed and no
    builder knows how to rebuild that layer smaller (`rebuilt`: ids of the
    layers inside models a builder rebuilds)."""
    for name, layer, _, _ in graph.traced:
        if id(layer) in rebuilt:
            continue
        inner = {id(sub) for sub in functional.sublayers(layer)}
        for usage in graph.usages:
            if id(usage.layer) in inner and len(graph.keep_positions(usage, flags)) < len(usage.ids):
                known = ", ".join(rebuildable_models()) or "none (KerasHub is not installed)"
                raise ValueError(
                    f"Units inside layer '{name}' ({type(layer).__name__}) are removed, but kprune "
                    "cannot rebuild that layer smaller: its config does not say the widths of "
                    "the layers it holds, and no model builder is registered for the model that "
                    "holds it. mask_channels works on it; to remove units, build the model from layers "
                    "kprune knows or register a builder "
                    "(kprune.registry.model_builders.register_model_builder). kprune rebuilds "
                    f"{known}, their subclasses and tasks built on them."
                )


def copy_with_values(model, graph, flags, remove, shifts=None):
    """A new model like `model` whose weights are `pruned_values(graph, model,
    flags, remove, shifts)`: masked (same shapes) or smaller."""
    values = pruned_values(graph, model, flags, remove, shifts)

    def values_of(variable):
        return values[id(variable)]

    def rebuild(nested):
        builder = model_builder(nested)
        return builder(nested, values_of) if builder is not None else None

    rebuilt = rebuild(model)
    if rebuilt is not None:
        return rebuilt
    if remove:
        covered = {id(sub) for layer in functional.sublayers(model)
                   if model_builder(layer) is not None for sub in functional.sublayers(layer)}
        _check_rebuildable(graph, flags, covered)

    def clone_layer(old):
        config = _new_config(graph, old, flags) if remove else None
        copy = copy_layer(old, config=config, build=not remove)
        return copy, copy

    def input_width(nested, i):
        ids = graph.model_inputs[id(nested)][i]
        return int(np.count_nonzero(~flags[ids])) if remove else len(ids)

    return clone_with(model, clone_layer, lambda old: [values_of(v) for v in old.weights],
                      input_width if remove else None, rebuild)
