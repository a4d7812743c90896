"""Channel dependency graph: which channels of a Keras model must be pruned together.

Every channel of every tensor in the model gets an id; layers relate ids
according to their `keras_layers.ChannelSpec` (a residual Add makes channel c of
both branches one id, a depthwise convolution gives its output the ids of its
input, a Concatenate lays ids side by side, ...). A union-find joins coupled
ids into *units* -- one unit is one prunable channel, removed from every layer
that touches it -- and units created by coupled producers form a *group*, the
set of layers whose channels are scored and pruned together (Torch-Pruning's
DepGraph vocabulary).

Channels that reach a model input or output, or a layer kprune has no channel
rule for (Reshape, Lambda, LayerNormalization, ...), are *blocked*: their
group is never pruned, and `ChannelGroup.blocked` says why.

Example:

>>> import keras
>>> from kprune.dependency.channel_graph import ChannelGraph
>>> x = keras.Input((8, 8, 3))
>>> a = keras.layers.Conv2D(16, 3, padding="same", name="a")(x)
>>> b = keras.layers.Conv2D(16, 3, padding="same", name="b")(x)
>>> y = keras.layers.Conv2D(4, 1, name="head")(keras.layers.Add()([a, b]))
>>> graph = ChannelGraph(keras.Model(x, y))
>>> [(g.producers, len(g.units), g.blocked) for g in graph.groups]
[([], 3, 'model input'), (['a', 'b'], 16, None), (['head'], 4, 'model output')]
"""

from typing import NamedTuple

import keras
import numpy as np

from kprune._internal import functional
from kprune.registry import keras_layers
from kprune.registry import ops as ops_rules


class Usage(NamedTuple):
    """How one layer touches channels: its weight slices and the channel ids."""

    layer: keras.layers.Layer
    role: str  # "in" (slices indexed by input channel) or "out"
    slices: tuple  # ((variable, axis, repeat), ...)
    ids: np.ndarray  # one channel id per channel of the tensor
    kind: str = ""  # the layer's `ChannelSpec.kind`


class ChannelGroup:
    """Coupled channels pruned as one: `units[i]` is removed from every member."""

    def __init__(self, index, units, usages, blocked):
        self.index = index
        self.units = units
        self.usages = usages
        self.blocked = blocked

    @property
    def producers(self):
        """Names of the layers whose output channels are this group's channels."""
        names = []
        for u in self.usages:
            if u.role == "out" and u.kind in ("producer", "grouped"):
                if u.layer.name not in names:
                    names.append(u.layer.name)
        return names

    @property
    def layers(self):
        names = []
        for u in self.usages:
            if u.layer.name not in names:
                names.append(u.layer.name)
        return names

    def __repr__(self):
        state = f"blocked: {self.blocked}" if self.blocked else "prunable"
        return f"ChannelGroup({self.index}, producers={self.producers}, channels={len(self.units)}, {state})"


class ChannelGraph:
    """The channel groups of a Sequential or Functional model (nested ones included)."""

    def __init__(self, model):
        self.model = model
        self._parent = []
        self._space = []
        self._space_parent = []
        self._blocks = []  # (ids, reason)
        self.usages = []
        self._layer_in = {}
        self._layer_out = {}
        self.model_inputs = {}  # id(nested model) -> channel ids of its inputs
        self.widths = {}  # id(layer) -> (config key of its width, its output usage)
        # Tensors (of the top-level model) that a layer with weights reads,
        # with their channel ids: where data criteria measure activations.
        self.read_tensors = []
        function = functional.function_of(model)
        self.function = function
        inputs = [self._new(_channels(t), block="model input") for t in function.inputs]
        outputs = self._walk(function, inputs)
        for ids in outputs:
            self._blocks.append((ids, "model output"))
        self._finish()

    # ------------------------------------------------------------ union-find
    def _new(self, n, block=None):
        start = len(self._parent)
        space = len(self._space_parent)
        self._space_parent.append(space)
        self._parent.extend(range(start, start + n))
        self._space.extend([space] * n)
        ids = np.arange(start, start + n, dtype=np.int64)
        if block:
            self._blocks.append((ids, block))
        return ids

    def find(self, i):
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def _space_root(self, s):
        while self._space_parent[s] != s:
            self._space_parent[s] = self._space_parent[self._space_parent[s]]
            s = self._space_parent[s]
        return s

    def _union(self, a_ids, b_ids):
        for a, b in zip(a_ids.tolist(), b_ids.tolist()):
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self._parent[max(ra, rb)] = min(ra, rb)
            sa, sb = self._space_root(self._space[a]), self._space_root(self._space[b])
            if sa != sb:
                self._space_parent[max(sa, sb)] = min(sa, sb)

    # ------------------------------------------------------------------ walk
    def _walk(self, function, input_ids):
        ids_of = {id(t): ids for t, ids in zip(function.inputs, input_ids)}
        for node in functional.nodes(function):
            ins = [ids_of[id(t)] for t in node.input_tensors]
            outs = self._apply(node, ins)
            if function is self.function and ins and self._reads(node.operation):
                self.read_tensors.append((node.input_tensors[0], ins[0]))
            for t, ids in zip(node.outputs, outs):
                ids_of[id(t)] = ids
        return [ids_of[id(t)] for t in function.outputs]

    @staticmethod
    def _reads(op):
        if not functional.is_layer(op) or functional.is_nested_graph(op):
            return False
        return keras_layers.channel_spec(op).kind in ("producer", "grouped", "depthwise")

    def _record(self, layer, role, slices, ids, kind):
        if slices:
            self.usages.append(Usage(layer, role, tuple(slices), ids, kind))

    def _shared(self, table, layer, ids):
        """Ids of a layer called more than once are tied across its calls."""
        key = id(layer)
        if key in table:
            self._union(table[key], ids)
            return table[key], False
        table[key] = ids
        return ids, True

    def _apply(self, node, ins):
        """Relate the channel ids of one node's inputs and outputs; returns the
        ids of its outputs."""
        op = keras_layers.unwrap(node.operation)
        if functional.is_nested_graph(op):
            self.model_inputs[id(op)] = ins
            return self._walk(functional.function_of(op), ins)
        if functional.is_layer(op):
            shape = tuple(node.input_tensors[0].shape) if node.input_tensors else None
            spec = keras_layers.channel_spec(op, shape)
        else:
            spec = ops_rules.channel_spec(node)
        step = getattr(self, f"_{spec.kind}")
        return step(op, spec, ins, node.outputs)

    def _producer(self, op, spec, ins, outs):
        if spec.in_slices and ins:
            in_ids, first = self._shared(self._layer_in, op, ins[0])
            if first:
                self._record(op, "in", spec.in_slices, in_ids, spec.kind)
        out_ids = self._layer_out.get(id(op))
        if out_ids is None:
            out_ids = self._new(_channels(outs[0]))
            self._layer_out[id(op)] = out_ids
            self._record(op, "out", spec.out_slices, out_ids, spec.kind)
            self.widths[id(op)] = (spec.width_key, Usage(op, "out", (), out_ids, spec.kind))
        return [out_ids]

    def _grouped(self, op, spec, ins, outs):
        """A grouped convolution: row r of the kernel reads channel r of every
        group, so those channels are one unit; likewise filter j of every
        group. Pruning whole units keeps the groups equal in size."""
        groups = spec.multiplier
        in_ids, first = self._shared(self._layer_in, op, ins[0])
        rows = in_ids.reshape(groups, -1)
        for k in range(1, groups):
            self._union(rows[0], rows[k])
        out_ids = self._layer_out.get(id(op))
        if out_ids is None:
            out_ids = self._new(_channels(outs[0]))
            filters = out_ids.reshape(groups, -1)
            for k in range(1, groups):
                self._union(filters[0], filters[k])
            self._layer_out[id(op)] = out_ids
            self._record(op, "in", spec.in_slices, rows[0], spec.kind)
            self._record(op, "out", spec.out_slices, out_ids, spec.kind)
            self.widths[id(op)] = (spec.width_key, Usage(op, "out", (), out_ids, spec.kind))
        return [out_ids]

    def _depthwise(self, op, spec, ins, outs):
        in_ids, first = self._shared(self._layer_in, op, ins[0])
        if spec.multiplier == 1:
            out_ids = in_ids
        else:
            out_ids = self._new(len(in_ids) * spec.multiplier)
            self._union(np.repeat(in_ids, spec.multiplier), out_ids)
        if first:
            self._record(op, "in", spec.in_slices, in_ids, spec.kind)
            self._record(op, "out", spec.out_slices, out_ids, spec.kind)
            if spec.width_key:
                self.widths[id(op)] = (spec.width_key, Usage(op, "out", (), out_ids, spec.kind))
        return [out_ids]

    def _pass(self, op, spec, ins, outs):
        in_ids, first = self._shared(self._layer_in, op, ins[0])
        if first:
            self._record(op, "out", spec.out_slices, in_ids, spec.kind)
            if spec.width_key:  # a width in its config (Reshape's target_shape, LayerScale)
                self.widths[id(op)] = (spec.width_key, Usage(op, "out", (), in_ids, spec.kind))
        return [ins[0]] + [self._new(_channels(t), block=f"output of {op.name}") for t in outs[1:]]

    def _merge(self, op, spec, ins, outs):
        widest = max(ins, key=len)
        for ids in ins:
            if len(ids) == len(widest):
                self._union(widest, ids)
            elif len(ids) != 1:  # one channel broadcasts and ties nothing
                self._blocks.append((ids, f"broadcast in {op.name}"))
                self._blocks.append((widest, f"broadcast in {op.name}"))
        return [widest]

    def _concat(self, op, spec, ins, outs):
        return [np.concatenate(ins)]

    def _flatten(self, op, spec, ins, outs):
        return [np.tile(ins[0], _positions(outs[0], ins[0]))]

    def _block(self, op, spec, ins, outs):
        reason = f"{op.name} ({type(op).__name__}): {spec.reason}"
        for ids in ins:
            self._blocks.append((ids, reason))
        return [self._new(_channels(t), block=f"output of {reason}") for t in outs]

    # ---------------------------------------------------------------- groups
    def _finish(self):
        blocked = {}
        for ids, reason in self._blocks:
            for i in ids.tolist():
                blocked.setdefault(self._space_root(self._space[i]), reason)
        units_of, usages_of = {}, {}
        for usage in self.usages:
            for i in usage.ids.tolist():
                space = self._space_root(self._space[i])
                units_of.setdefault(space, {}).setdefault(self.find(i), None)
                members = usages_of.setdefault(space, [])
                if not members or members[-1] is not usage:
                    members.append(usage)
        self.groups = [
            ChannelGroup(k, sorted(units_of[space]), usages_of[space], blocked.get(space))
            for k, space in enumerate(sorted(units_of))
        ]
        # The graph is complete: every channel's unit, and every layer's usages.
        self.roots = np.array([self.find(i) for i in range(len(self._parent))], dtype=np.int64)
        self._usages_by_layer = {}
        for usage in self.usages:
            self._usages_by_layer.setdefault(id(usage.layer), []).append(usage)

    def usages_of(self, layer):
        """The usages of `layer` (in graph order)."""
        return self._usages_by_layer.get(id(layer), [])

    def unit_index(self, group, usage):
        """`(positions, units)`: the positions in `usage.ids` that belong to
        `group` (ascending) and the index of each one's unit in `group.units`
        (`usage` may also be an array of channel ids)."""
        ids = usage if isinstance(usage, np.ndarray) else usage.ids
        units = np.asarray(group.units, dtype=np.int64)  # sorted
        roots = self.roots[ids]
        k = np.minimum(np.searchsorted(units, roots), len(units) - 1)
        found = np.flatnonzero(units[k] == roots)
        return found, k[found]

    def unit_positions(self, group, usage):
        """For each unit of `group`: the positions in `usage.ids` that are that unit
        (`usage` may also be an array of channel ids)."""
        found, unit_of = self.unit_index(group, usage)
        positions = [[] for _ in group.units]
        for p, unit in zip(found.tolist(), unit_of.tolist()):
            positions[unit].append(p)
        return positions

    def pruned_flags(self, pruned_units):
        """Per channel id, whether its unit is one of `pruned_units` (a set of
        root ids): what `keep_positions` reads, computed once for many calls."""
        units = np.fromiter(pruned_units, dtype=np.int64, count=len(pruned_units))
        return np.isin(self.roots, units)

    def keep_positions(self, usage, pruned_units):
        """Positions of `usage.ids` that survive when `pruned_units` (a set of
        root ids, or their `pruned_flags`) are removed."""
        flags = pruned_units if isinstance(pruned_units, np.ndarray) else self.pruned_flags(pruned_units)
        return np.flatnonzero(~flags[usage.ids]).astype(np.int64)

    def keep_masks(self, pruned_units, usages=None):
        """`{id(variable): bool array}`: where each variable's entries survive
        the removal of `pruned_units`, for the variables of `usages` (default
        every usage) that hold a slice of a removed channel. A variable sliced
        by several usages gets the intersection; one untouched is absent."""
        flags = pruned_units if isinstance(pruned_units, np.ndarray) else self.pruned_flags(pruned_units)
        masks = {}
        for usage in self.usages if usages is None else usages:
            keep = self.keep_positions(usage, flags)
            if len(keep) == len(usage.ids):
                continue
            for variable, axis, repeat in usage.slices:
                shape = tuple(variable.shape)
                axis = axis % len(shape)
                alive = np.zeros(shape[axis], dtype=bool)
                alive[rows_of(keep, repeat)] = True
                view = alive.reshape([-1 if a == axis else 1 for a in range(len(shape))])
                masks[id(variable)] = masks.get(id(variable), np.ones(shape, dtype=bool)) & view
        return masks

    @property
    def prunable_groups(self):
        return [g for g in self.groups if g.blocked is None and len(g.units) > 1]


def rows_of(keep, repeat):
    """The rows of channel positions `keep` when each position spans `repeat` rows."""
    keep = np.asarray(keep, np.int64).reshape(-1)
    return (keep[:, None] * repeat + np.arange(repeat, dtype=np.int64)).reshape(-1)


def _positions(flat, ids):
    """Positions per channel of a channels-last Flatten output."""
    return int(flat.shape[-1]) // max(len(ids), 1)


def _channels(tensor):
    shape = tensor.shape
    return int(shape[-1]) if shape and shape[-1] is not None else 0
