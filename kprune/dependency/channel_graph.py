"""Channel dependency graph: which channels of a Keras model must be pruned together.

Every channel of every tensor in the model gets an id; layers relate ids
according to their `ChannelSpec` (a residual Add makes channel c of
both branches one id, a depthwise convolution gives its output the ids of its
input, a Concatenate lays ids side by side, ...). A union-find joins coupled
ids into *units* -- one unit is one prunable channel, removed from every layer
that touches it -- and units created by coupled producers form a *group*, the
set of layers whose channels are scored and pruned together (Torch-Pruning's
DepGraph vocabulary; the bookkeeping is `kprune.dependency.unit_space`).

Transformers join the same vocabulary:

* a layer that holds layers and has no record of its own (a KerasHub
  transformer block, a user's residual block) is traced
  (`kprune._internal.tracing.trace_graph`) and its calls are walked like
  a nested model's, so that a gated FFN's gate and up projections, tied by
  their product, are one group of FFN units, read by the down projection;
* an attention layer's heads (`kprune.registry.attention.HeadSpec`) are
  units of their own: with `heads="kv"` (the default) one unit is a
  key/value head with the query heads that read it (a plain head without
  grouped-query attention), with `heads="query"` one unit is a query head
  and the group prunes the same number from every key/value group, so that
  `Hq` stays a multiple of `Hkv`.

Channels that reach a model input or output, or a layer kprune has no channel
rule for (Reshape, Lambda, LayerNormalization, ...), are *blocked*: their
group is never pruned, and `ChannelGroup.blocked` says why. In a
transformer, the residual stream reaches normalizations and the embedding:
its width (the hidden size) stays -- unless `hidden=True`: then the layers'
hidden-size rules (`kprune.registry.rules.LayerRule.hidden`) apply, a
normalization slices its scale and offset, a `ReversibleEmbedding`'s lookup
makes the channels its LM-head call reads, and the channels a normalization
reads form a group of unit `"hidden"` (never output-equivalent: the
normalization's statistics change). A KerasHub backbone's output is its
hidden states: with `hidden=True` it shrinks with them.

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

Attention heads are groups too:

>>> x = keras.Input((6, 8))
>>> y = keras.layers.MultiHeadAttention(num_heads=4, key_dim=2, name="mha")(x, x)
>>> [(g.unit, len(g.units)) for g in ChannelGraph(keras.Model(x, y)).prunable_groups]
[('head', 4)]

The residual stream, on request:

>>> x = keras.Input((6, 4))
>>> h = keras.layers.Dense(8, name="embed")(x)
>>> h = keras.layers.Add()([h, keras.layers.Dense(8, name="ffn")(keras.layers.LayerNormalization()(h))])
>>> model = keras.Model(x, keras.layers.Dense(2, name="head")(h))
>>> [(g.unit, g.producers) for g in ChannelGraph(model, hidden=True).prunable_groups]
[('hidden', ['embed', 'ffn'])]
"""

import contextlib
from typing import NamedTuple

import keras
import numpy as np

from kprune._internal import functional, tracing
from kprune.dependency.unit_space import UnitSpace, Usage
from kprune.registry import keras_layers
from kprune.registry import ops as ops_rules
from kprune.registry.model_builders import model_builder

HEAD_MODES = ("kv", "query")


class Traced(NamedTuple):
    """A layer walked through its calls: its name in the model, the layer, and
    the channel ids of its inputs and outputs (a transformer block's first
    input and output are the residual stream)."""

    name: str
    layer: object
    input_ids: list
    output_ids: list


class Attention:
    """An attention layer's heads in the graph: its `HeadSpec` and the ids of
    its units (one per key/value head, or per query head)."""

    def __init__(self, layer, spec, ids, mode):
        self.layer = layer
        self.spec = spec
        self.ids = ids
        self.mode = mode

    def query_heads(self, flags):
        """The query heads removed when the units flagged in `flags` (per id,
        `UnitSpace.pruned_flags`) are."""
        gone = np.flatnonzero(flags[self.ids])
        if self.mode == "query":
            return gone
        group = self.spec.num_query // self.spec.num_kv
        return (gone[:, None] * group + np.arange(group)).reshape(-1)


class ChannelGraph(UnitSpace):
    """The channel groups of a Sequential or Functional model (nested ones,
    and layers that hold layers, included).

    Args:
        model: a Sequential or Functional model.
        heads: how grouped-query attention is pruned: `"kv"` (default) -- a
            unit is a key/value head with its query heads -- or `"query"` --
            query heads, the same number from every key/value group.
        hidden: whether the channels normalizations read (the hidden size)
            may be pruned (see the module docstring). Defaults to False.
    """

    def __init__(self, model, heads="kv", hidden=False):
        super().__init__()
        if heads not in HEAD_MODES:
            raise ValueError(f"Argument `heads` must be one of {HEAD_MODES}. Received: heads={heads!r}")
        if not isinstance(hidden, bool):
            raise ValueError(f"Argument `hidden` must be True or False. Received: hidden={hidden!r}")
        self.model = model
        self.heads = heads
        self.hidden = hidden
        self._hidden_ids = []  # ids a normalization reads (hidden mode)
        self._layer_in = {}
        self._layer_out = {}
        self._prefix = ""
        self.model_inputs = {}  # id(nested model) -> channel ids of its inputs
        self.widths = {}  # id(layer) -> (config key of its width, its output usage)
        self.head_widths = {}  # id(layer) -> [(config key, usage, heads per unit)]
        self.attention = {}  # id(layer) -> Attention
        self.traced = []  # `Traced` records of the layers walked through their calls
        # Every operation walked, held for the graph's life: the tables above are
        # keyed by `id(op)`, and a traced call's `keras.ops` operations would
        # otherwise be freed once walked, their ids reused by the next block's
        # (which would then look like the same operation called again).
        self._operations = []
        # Tensors (of the top-level model) that a layer with weights reads,
        # with their channel ids: where data criteria measure activations.
        self.read_tensors = []
        function = functional.function_of(model)
        self.function = function
        inputs = [self.new(_channels(t), block="model input") for t in function.inputs]
        outputs = self._walk(function.inputs, list(functional.nodes(function)), function.outputs,
                             inputs, top=True)
        hidden_spaces = {self.space_of(ids) for ids in self._hidden_ids}
        for ids in outputs:
            # A rebuilt backbone's output is its hidden states: its width is the hidden size.
            if not (hidden_spaces and self.space_of(ids) in hidden_spaces and model_builder(model) is not None):
                self.block(ids, "model output")
        self.finish()

    # ------------------------------------------------------------------ walk
    def _walk(self, input_tensors, nodes, output_tensors, input_ids, top=False):
        ids_of = {id(t): ids for t, ids in zip(input_tensors, input_ids)}
        for node in nodes:
            outs = self._apply(node, ids_of)
            if top and node.input_tensors and self._reads(node.operation):
                self.read_tensors.append((node.input_tensors[0], self._ids(ids_of, node.input_tensors[0])))
            for t, ids in zip(node.outputs, outs):
                ids_of[id(t)] = ids
        return [self._ids(ids_of, t) for t in output_tensors]

    def _ids(self, ids_of, tensor):
        ids = ids_of.get(id(tensor))
        if ids is None:  # a tensor made outside the walk (a constant's node)
            ids = self.new(_channels(tensor), block="a tensor kprune does not follow")
            ids_of[id(tensor)] = ids
        return ids

    @staticmethod
    def _reads(op):
        if not functional.is_layer(op) or functional.is_nested_graph(op):
            return False
        return keras_layers.channel_spec(op).kind in ("producer", "grouped", "depthwise")

    def _record(self, layer, role, slices, ids, kind):
        if slices:
            self.usages.append(Usage(layer, role, tuple(slices), ids, kind, self._prefix + layer.name))

    def _shared(self, table, key, ids):
        """Ids of a layer called more than once are tied across its calls."""
        if key in table:
            self.union(table[key], ids)
            return table[key], False
        table[key] = ids
        return ids, True

    def _apply(self, node, ids_of):
        """Relate the channel ids of one node's inputs and outputs; returns the
        ids of its outputs."""
        op = keras_layers.unwrap(node.operation)
        self._operations.append(op)
        if functional.is_layer(op):
            tensors = functional.ordered_input_tensors(node)
        else:
            tensors = list(node.input_tensors)
        ins = [self._ids(ids_of, t) for t in tensors]
        if functional.is_nested_graph(op):
            self.model_inputs[id(op)] = ins
            with self._prefixed(""):
                return self._walk(op.inputs, list(functional.nodes(op)), op.outputs, ins)
        if functional.is_layer(op):
            if keras_layers.rule_for(op) is None and functional.sublayers(op, recursive=False):
                return self._composite(op, node, ids_of)
            shape = tuple(tensors[0].shape) if tensors else None
            spec = keras_layers.channel_spec(op, shape, hidden=self.hidden)
        else:
            spec = ops_rules.channel_spec(node)
        if spec.inexact and ins:
            self._hidden_ids.append(ins[0])
            self.mark(ins[0], "hidden")
        step = getattr(self, f"_{spec.kind}")
        return step(op, spec, ins, node.outputs, node, ids_of)

    def _composite(self, op, node, ids_of):
        """A layer that holds layers: walk the calls it makes."""
        try:
            trace = tracing.trace_graph(op, node.arguments.args, node.arguments.kwargs)
        except Exception as e:  # the layer's own code, run symbolically
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            spec = keras_layers.block(f"its call could not be traced ({message})")
            ins = [self._ids(ids_of, t) for t in node.input_tensors]
            return self._block(op, spec, ins, node.outputs, node, ids_of)
        name = self._prefix + op.name
        inputs, input_ids = [], []
        for original in node.input_tensors:
            fresh = trace.inputs[id(original)]
            ids = self._ids(ids_of, original)
            if len(ids) != _channels(fresh):  # an axis of unknown size traced as 1
                ids = self.new(_channels(fresh), block=f"an input of {op.name} of unknown width")
            inputs.append(fresh)
            input_ids.append(ids)
        with self._prefixed(name + "/"):
            outputs = self._walk(inputs, trace.nodes, trace.outputs, input_ids)
        self.traced.append(Traced(name, op, input_ids, outputs))
        return outputs

    @contextlib.contextmanager
    def _prefixed(self, prefix):
        """Record layers under `prefix` (the names of the layers holding them)."""
        saved, self._prefix = self._prefix, prefix
        try:
            yield
        finally:
            self._prefix = saved

    def _inputs_read(self, spec, node, ins, ids_of):
        """`[(key, ids, slices)]`: the inputs a producer reads and their slices."""
        if not spec.input_slices:
            return [(0, ins[0], spec.in_slices)] if spec.in_slices and ins else []
        named = functional.call_arguments(node)
        order = list(named)
        found = []
        for arguments, slices in spec.input_slices:
            for argument in arguments:
                name = order[argument] if isinstance(argument, int) and argument < len(order) else argument
                value = named.get(name)
                if isinstance(value, keras.KerasTensor):
                    found.append((arguments, self._ids(ids_of, value), slices))
                    break
        return found

    def _producer(self, op, spec, ins, outs, node, ids_of):
        for key, ids, slices in self._inputs_read(spec, node, ins, ids_of):
            in_ids, first = self._shared(self._layer_in, (id(op), key), ids)
            if first:
                self._record(op, "in", slices, in_ids, spec.kind)
        out_ids = self._layer_out.get(id(op))
        if out_ids is None:
            out_ids = self.new(_channels(outs[0]))
            self._layer_out[id(op)] = out_ids
            self._record(op, "out", spec.out_slices, out_ids, spec.kind)
            self.widths[id(op)] = (spec.width_key, Usage(op, "out", (), out_ids, spec.kind))
            if spec.heads is not None:
                self._heads(op, spec.heads)
        return [out_ids] + [self.new(_channels(t), block=f"output of {op.name}") for t in outs[1:]]

    def _reader(self, op, spec, ins, outs, node, ids_of):
        """Reads its input's channels into outputs kprune does not prune (an LM head)."""
        for key, ids, slices in self._inputs_read(spec, node, ins, ids_of):
            in_ids, first = self._shared(self._layer_in, (id(op), "reader", key), ids)
            if first:
                self._record(op, "in", slices, in_ids, spec.kind)
        return [self.new(_channels(t)) for t in outs]

    def _heads(self, op, heads):
        """An attention layer's heads: units of their own (see the module docstring)."""
        group = heads.num_query // heads.num_kv
        query = tuple((v, a, 1) for v, a in heads.query_slices)
        output = tuple((v, a, 1) for v, a in heads.output_slices)
        kv = tuple((v, a, 1) for v, a in heads.kv_slices)
        if self.heads == "kv" or group == 1:
            ids = self.new(heads.num_kv, unit="head" if group == 1 else "kv_group")
            query = tuple((v, a, group) for v, a, _ in query)
            output = tuple((v, a, group) for v, a, _ in output)
            written, mode, per_unit = query + kv, "kv", group
        else:
            ids = self.new(heads.num_query, unit="query_head", blocks=heads.num_kv)
            written, mode, per_unit = query, "query", 1
        self._record(op, "out", written, ids, "head")
        self._record(op, "in", output, ids, "head")
        self.attention[id(op)] = Attention(op, heads, ids, mode)
        widths = [(heads.query_key, Usage(op, "out", (), ids, "head"), per_unit)]
        if mode == "kv" and heads.kv_key not in (None, heads.query_key):
            widths.append((heads.kv_key, Usage(op, "out", (), ids, "head"), 1))
        self.head_widths[id(op)] = [w for w in widths if w[0] is not None]

    def _grouped(self, op, spec, ins, outs, node, ids_of):
        """A grouped convolution: row r of the kernel reads channel r of every
        group, so those channels are one unit; likewise filter j of every
        group. Pruning whole units keeps the groups equal in size."""
        groups = spec.multiplier
        in_ids, first = self._shared(self._layer_in, (id(op), 0), ins[0])
        rows = in_ids.reshape(groups, -1)
        for k in range(1, groups):
            self.union(rows[0], rows[k])
        out_ids = self._layer_out.get(id(op))
        if out_ids is None:
            out_ids = self.new(_channels(outs[0]))
            filters = out_ids.reshape(groups, -1)
            for k in range(1, groups):
                self.union(filters[0], filters[k])
            self._layer_out[id(op)] = out_ids
            self._record(op, "in", spec.in_slices, rows[0], spec.kind)
            self._record(op, "out", spec.out_slices, out_ids, spec.kind)
            self.widths[id(op)] = (spec.width_key, Usage(op, "out", (), out_ids, spec.kind))
        return [out_ids]

    def _depthwise(self, op, spec, ins, outs, node, ids_of):
        in_ids, first = self._shared(self._layer_in, (id(op), 0), ins[0])
        if spec.multiplier == 1:
            out_ids = in_ids
        else:
            out_ids = self.new(len(in_ids) * spec.multiplier)
            self.union(np.repeat(in_ids, spec.multiplier), out_ids)
        if first:
            self._record(op, "in", spec.in_slices, in_ids, spec.kind)
            self._record(op, "out", spec.out_slices, out_ids, spec.kind)
            if spec.width_key:
                self.widths[id(op)] = (spec.width_key, Usage(op, "out", (), out_ids, spec.kind))
        return [out_ids]

    def _pass(self, op, spec, ins, outs, node, ids_of):
        in_ids, first = self._shared(self._layer_in, (id(op), 0), ins[0])
        if first:
            self._record(op, "out", spec.out_slices, in_ids, spec.kind)
            if spec.width_key:  # a width in its config (Reshape's target_shape, LayerScale)
                self.widths[id(op)] = (spec.width_key, Usage(op, "out", (), in_ids, spec.kind))
        return [ins[0]] + [self.new(_channels(t), block=f"output of {op.name}") for t in outs[1:]]

    def _merge(self, op, spec, ins, outs, node, ids_of):
        widest = max(ins, key=len)
        for ids in ins:
            if len(ids) == len(widest):
                self.union(widest, ids)
            elif len(ids) != 1:  # one channel broadcasts and ties nothing
                self.block(ids, f"broadcast in {op.name}")
                self.block(widest, f"broadcast in {op.name}")
        return [widest]

    def _concat(self, op, spec, ins, outs, node, ids_of):
        return [np.concatenate(ins)]

    def _flatten(self, op, spec, ins, outs, node, ids_of):
        return [np.tile(ins[0], _positions(outs[0], ins[0]))]

    def _block(self, op, spec, ins, outs, node, ids_of):
        reason = f"{self._prefix}{op.name} ({type(op).__name__}): {spec.reason}"
        for ids in ins:
            self.block(ids, reason)
        return [self.new(_channels(t), block=f"output of {reason}") for t in outs]


def _positions(flat, ids):
    """Positions per channel of a channels-last Flatten output."""
    return int(flat.shape[-1]) // max(len(ids), 1)


def _channels(tensor):
    shape = tensor.shape
    return int(shape[-1]) if shape and shape[-1] is not None else 0
