"""The plain Keras model `export_tflite` converts: masks applied, pruning
wrappers stripped, unread channels removed (each step skipped, with a note,
where the model does not allow it).

Example:

>>> import keras, kprune
>>> pruned = kprune.prune_low_magnitude(
...     keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]))
>>> plain, removed = prepare(pruned, True, notes := [], timings := {})
>>> type(plain.layers[0]).__name__, removed, sorted(timings)
('Dense', False, ['remove_channels', 'strip'])
"""

from kprune._internal.functional import is_graph, tuple_build_shape
from kprune.channels.oneshot import remove_channels, unread_units
from kprune.dependency.channel_graph import ChannelGraph
from kprune.export.convert import timed
from kprune.sparsity import in_place
from kprune.sparsity.prune import collect_wrappers, strip_pruning


def prepare(model, remove_pruned_channels, notes, timings):
    """The plain Keras model to convert: wrappers stripped, channels removed."""
    # A model pruned in place is its own plain model: its variables hold the
    # pruned values (zeroed again here, in case they were set since).
    for target in in_place.targets_of(model):
        target.apply_masks()
    if not is_graph(model):
        if collect_wrappers(model):
            notes.append(f"pruning wrappers kept: subclassed model '{model.name}' cannot be cloned")
        if remove_pruned_channels:
            notes.append(f"channels not removed: subclassed model '{model.name}' has no layer graph")
        notes.append("MACs not counted: a subclassed model's layer shapes are unknown")
        tuple_build_shape(model)  # the converter's input signature
        return model, False
    if collect_wrappers(model):
        with timed(timings, "strip"):
            model = strip_pruning(model)
    if not remove_pruned_channels:
        return model, False
    # Rebuild the model only when some channel is unread: a plain model with
    # nothing to remove converts as it is (custom layers need not clone).
    with timed(timings, "remove_channels"):
        if not unread_units(ChannelGraph(model)):
            return model, False
        try:
            return remove_channels(model), True
        except ValueError as e:  # units inside a layer kprune cannot rebuild smaller
            notes.append(f"channels not removed: {e}")
            return model, False
