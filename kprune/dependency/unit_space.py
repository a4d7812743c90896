"""Channel ids, the union-find that couples them into units, and the groups they form.

`UnitSpace` is the bookkeeping under `kprune.dependency.channel_graph.ChannelGraph`:
every channel of every tensor -- and every attention head, which belongs to
no tensor's last axis -- gets an integer id; coupled ids are joined into one
*unit* (a union-find), and ids that can reach each other form one *space*,
whose units and the weight slices that hold them (`Usage`s) are a
`ChannelGroup`. The graph walk decides what couples what; this module only
keeps the books and answers the questions pruning asks (which positions of a
usage are which unit, which survive, the masks of a plan).

Example:

>>> import numpy as np
>>> space = UnitSpace()
>>> a, b = space.new(3), space.new(3)
>>> space.union(a, b)
>>> space.find(int(b[1])) == int(a[1])
True
"""

from typing import NamedTuple

import keras
import numpy as np


class Usage(NamedTuple):
    """How one layer touches channels: its weight slices and the channel ids.

    `name` is the layer's name inside the model, prefixed with the layers
    that hold it ("transformer_layer_0/feedforward_gate_dense").
    """

    layer: keras.layers.Layer
    role: str  # "in" (slices indexed by input channel) or "out"
    slices: tuple  # ((variable, axis, repeat), ...)
    ids: np.ndarray  # one channel id per channel of the tensor
    kind: str = ""  # the layer's `ChannelSpec.kind`, or "head"
    name: str = ""


def usage_name(usage):
    """The name of a usage's layer inside the model."""
    return usage.name or usage.layer.name


class ChannelGroup:
    """Coupled channels pruned as one: `units[i]` is removed from every member.

    Attributes:
        index: position in `ChannelGraph.groups`.
        units: the root id of each unit.
        usages: the weight slices of every layer that holds the group's units.
        blocked: why the group is never pruned, or None.
        unit: what one unit is: `"channel"`, `"head"` (an attention head,
            key/value heads included), `"kv_group"` (a key/value head with
            its query heads, under grouped-query attention), `"query_head"`
            (a query head alone, taken evenly from every group) or
            `"hidden"` (a channel that a normalization reads: a
            transformer's residual stream, prunable only on request and
            never output-equivalent).
        blocks: the units fall in this many equal blocks that must keep
            equal sizes (`"query_head"`: one block per key/value head);
            pruning removes the same number from each. 1 otherwise.
    """

    def __init__(self, index, units, usages, blocked, unit="channel", blocks=1):
        self.index = index
        self.units = units
        self.usages = usages
        self.blocked = blocked
        self.unit = unit
        self.blocks = blocks

    @property
    def producers(self):
        """Names of the layers whose output channels (or heads) are this group's units."""
        names = []
        for u in self.usages:
            if u.role == "out" and u.kind in ("producer", "grouped", "head"):
                if usage_name(u) not in names:
                    names.append(usage_name(u))
        return names

    @property
    def layers(self):
        names = []
        for u in self.usages:
            if usage_name(u) not in names:
                names.append(usage_name(u))
        return names

    def __repr__(self):
        state = f"blocked: {self.blocked}" if self.blocked else "prunable"
        what = {"channel": "channels", "hidden": "hidden_channels"}.get(self.unit, f"{self.unit}s")
        return f"ChannelGroup({self.index}, producers={self.producers}, {what}={len(self.units)}, {state})"


class UnitSpace:
    """Channel ids, joined into units and spaces (see the module docstring)."""

    def __init__(self):
        self._parent = []
        self._space = []
        self._space_parent = []
        self._space_info = {}  # space -> {"unit": ..., "blocks": ...}
        self._blocks = []  # (ids, reason)
        self._marks = []  # (ids, unit): spaces whose units are of that kind
        self.usages = []

    def new(self, n, block=None, unit="channel", blocks=1):
        """`n` fresh ids in a space of their own (blocked for `block`, a reason)."""
        start = len(self._parent)
        space = len(self._space_parent)
        self._space_parent.append(space)
        self._parent.extend(range(start, start + n))
        self._space.extend([space] * n)
        if unit != "channel" or blocks != 1:
            self._space_info[space] = {"unit": unit, "blocks": blocks}
        ids = np.arange(start, start + n, dtype=np.int64)
        if block:
            self._blocks.append((ids, block))
        return ids

    def block(self, ids, reason):
        """Never prune the units of `ids` (and of everything coupled to them)."""
        self._blocks.append((ids, reason))

    def mark(self, ids, unit):
        """Make the units of `ids` (and of everything coupled to them) units of kind `unit`."""
        self._marks.append((ids, unit))

    def space_of(self, ids):
        """The space (an int) that channel ids `ids` belong to, as the ids now stand."""
        return self._space_root(self._space[int(ids[0])]) if len(ids) else None

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

    def union(self, a_ids, b_ids):
        """Make `a_ids[k]` and `b_ids[k]` one unit, for every k."""
        for a, b in zip(a_ids.tolist(), b_ids.tolist()):
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self._parent[max(ra, rb)] = min(ra, rb)
            sa, sb = self._space_root(self._space[a]), self._space_root(self._space[b])
            if sa != sb:
                self._space_parent[max(sa, sb)] = min(sa, sb)
                info = self._space_info.pop(max(sa, sb), None)
                if info is not None:
                    self._space_info.setdefault(min(sa, sb), info)

    # ---------------------------------------------------------------- groups
    def finish(self):
        """Form the groups once every usage is recorded."""
        blocked = {}
        for ids, reason in self._blocks:
            for i in ids.tolist():
                blocked.setdefault(self._space_root(self._space[i]), reason)
        for ids, unit in self._marks:
            for i in ids.tolist():
                self._space_info.setdefault(self._space_root(self._space[i]), {})["unit"] = unit
        units_of, usages_of = {}, {}
        for usage in self.usages:
            for i in usage.ids.tolist():
                space = self._space_root(self._space[i])
                units_of.setdefault(space, {}).setdefault(self.find(i), None)
                members = usages_of.setdefault(space, [])
                if not members or members[-1] is not usage:
                    members.append(usage)
        self.groups = []
        for k, space in enumerate(sorted(units_of)):
            info = self._space_info.get(space, {})
            self.groups.append(ChannelGroup(
                k, sorted(units_of[space]), usages_of[space], blocked.get(space),
                info.get("unit", "channel"), info.get("blocks", 1)))
        # The graph is complete: every channel's unit, and every layer's usages.
        self.roots = np.array([self.find(i) for i in range(len(self._parent))], dtype=np.int64)
        self._usages_by_layer = {}
        for usage in self.usages:
            self._usages_by_layer.setdefault(id(usage.layer), []).append(usage)

    def group_of(self, channel_id):
        """The `ChannelGroup` that holds channel id `channel_id`, or None (a
        channel no weight slice touches)."""
        root = self.roots[channel_id]
        for group in self.groups:
            units = group.units
            k = int(np.searchsorted(units, root))
            if k < len(units) and units[k] == root:
                return group
        return None

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

    def unit_costs(self, group):
        """Parameters each unit of `group` holds: the entries of every weight
        slice of it (a head: its query, key, value and output rows)."""
        costs = np.zeros(len(group.units))
        seen = set()
        for usage in group.usages:
            found, unit_of = self.unit_index(group, usage)
            for variable, axis, repeat in usage.slices:
                if (id(variable), axis) in seen:
                    continue
                seen.add((id(variable), axis))
                shape = tuple(variable.shape)
                per_row = int(np.prod(shape)) // max(int(shape[axis]), 1)
                np.add.at(costs, unit_of, per_row * repeat)
        return costs

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
    """The rows of channel positions `keep` when each position spans `repeat` rows.

    >>> rows_of([0, 2], 2).tolist()
    [0, 1, 4, 5]
    """
    keep = np.asarray(keep, np.int64).reshape(-1)
    return (keep[:, None] * repeat + np.arange(repeat, dtype=np.int64)).reshape(-1)
