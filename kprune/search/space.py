"""The search space of per-layer ratio searches: one width per channel group.

A `SearchSpace` lists the channel groups a search may shrink (the prunable
groups of `kprune.dependency.channel_graph.ChannelGraph`, minus excluded ones) and, for each, the
widths it may take: multiples of `round_to` below its channel count, plus the
count itself (`kprune.channels.planning.keep_count` gives the same widths).
A transformer's head groups count whole units instead (`round_to` counts
channels, and a head is already `head_dim` of them, as in
`kprune.plan_channels`): any number of heads or of key/value groups with
their query heads (`heads="kv"`), or of query heads a multiple of the
key/value heads (`heads="query"`: the same number from every key/value
group), so that every width is one the smaller model can be rebuilt with
(`unit_widths`). A point of
the space is an integer vector `widths` (one entry per searched group); it
converts to and from per-group pruning ratios `1 - width / channels` and to a
`kprune.ChannelPlan` that prunes the lowest-scoring channels of each group.

The searches (`kprune.sensitivity`, `kprune.netadapt`,
`kprune.simulated_annealing`) and the resource models (`kprune.search.budget`) all
speak in these width vectors.

Example:

>>> import keras
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(16, 3, name="c2"),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
>>> space = SearchSpace(model, round_to=8)
>>> space.names, space.channels.tolist()
(['c1', 'c2'], [32, 16])
>>> [a.tolist() for a in space.allowed]
[[8, 16, 24, 32], [8, 16]]
>>> space.widths_from_ratios([0.5, 0.5]).tolist()
[16, 8]
>>> space.plan([16, 16]).num_pruned
16

Attention heads are whole units:

>>> x = keras.Input((6, 8))
>>> y = keras.layers.MultiHeadAttention(num_heads=4, key_dim=2, name="mha")(x, x)
>>> space = SearchSpace(keras.Model(x, y))
>>> space.names, [a.tolist() for a in space.allowed]
(['mha'], [[1, 2, 3, 4]])
"""

import hashlib
import json

import numpy as np

from kprune._internal.functional import sublayers
from kprune.channels import config_list as config_list_lib
from kprune.channels.planning import is_excluded, keep_count, make_plan
from kprune.criteria import catalog
from kprune.dependency.channel_graph import HEAD_MODES, ChannelGraph
from kprune.dependency.unit_space import usage_name
from kprune.registry.model_builders import model_builder
from kprune.sparsity.prune import collect_wrappers, strip_pruning
from kprune.utils.validation import check_round_to, check_sparsity


def allowed_widths(n, round_to):
    """The widths `kprune.channels.planning.keep_count` gives a group of `n` channels
    (multiples of `round_to` below `n`), and `n` itself (which keep_count
    rounds away when `n % round_to < round_to / 2`).

    >>> allowed_widths(20, 8), allowed_widths(6, 8), allowed_widths(3, 1)
    ([8, 16, 20], [6], [1, 2, 3])
    """
    if n <= round_to:
        return [n]
    return sorted({keep_count(n, 1.0 - w / n, round_to) for w in range(round_to, n, round_to)} | {n})


def unit_widths(group, round_to):
    """The widths a group may take: `allowed_widths` of its channels, or for
    attention heads every whole number of units (`round_to` counts channels),
    a multiple of `group.blocks` for query heads taken evenly from every
    key/value group (`kprune.channels.planning.group_keep` keeps those).

    >>> from kprune.dependency.unit_space import ChannelGroup
    >>> unit_widths(ChannelGroup(0, list(range(8)), [], None, unit="query_head", blocks=2), 8)
    [2, 4, 6, 8]
    >>> unit_widths(ChannelGroup(0, list(range(3)), [], None, unit="kv_group"), 8)
    [1, 2, 3]
    """
    n = len(group.units)
    if group.unit == "channel":
        return allowed_widths(n, round_to)
    return list(range(group.blocks, n + 1, group.blocks))


def is_rebuilt(model):
    """Whether `model` is, or holds, a model kprune rebuilds with a registered
    builder (a KerasHub backbone or task) rather than clones layer by layer."""
    return model_builder(model) is not None or any(model_builder(layer) is not None for layer in sublayers(model))


def check_kv_groups(model, groups):
    """Refuse per-layer key/value groups where the rebuild keeps one number of
    key/value heads for every layer (KerasHub's grouped-query backbones keep
    one KV cache): a search would choose widths the smaller model cannot
    have."""
    kv = [g.producers[0] for g in groups if g.unit == "kv_group"]
    if len(kv) > 1 and is_rebuilt(model):
        raise ValueError(
            f"A search cannot give the attention layers of model '{model.name}' ({type(model).__name__}) "
            f"different numbers of key/value groups ({', '.join(kv)}): kprune rebuilds it with one number of "
            "key/value heads for every layer (KerasHub keeps one KV cache). Search the query heads of each "
            "layer with heads='query' (the key/value heads stay), or keep the attention whole with "
            f"exclude={kv!r}."
        )


class SearchSpace:
    """The channel groups a search sets widths for, and their allowed widths.

    Args:
        model: a Sequential or Functional Keras model (pruning wrappers are
            stripped first).
        round_to: widths are multiples of this (a group of at most `round_to`
            channels is not searched). Defaults to 8.
        exclude: layer names or classes whose groups keep their width.
        config_list: NNI's format (see `kprune.channels.config_list`) instead of
            `exclude`: layers no config matches are excluded, and
            'max_sparsity_per_layer' caps the groups it matches. Defaults to None.
        max_ratio: the largest pruning ratio of any group, in [0, 1).
            Defaults to None (down to `round_to` channels, or one head).
        importance: the criterion that picks which channels of a group go
            (`"l2"` by default; see `kprune.plan_channels`).
        data: inputs for data-driven criteria. Defaults to None.
        heads: the unit of grouped-query attention, as in
            `kprune.plan_channels`: `"kv"` (default; a key/value head with
            its query heads) or `"query"` (query heads, the same number from
            every key/value group). A KerasHub model with grouped-query
            attention keeps one number of key/value heads for every layer,
            so its per-layer widths need `"query"` (`"kv"` raises).

    Attributes:
        groups: the searched `ChannelGroup`s.
        names: the first producer of each group (its name in tables).
        channels: each group's channel count (an int array).
        allowed: per group, the ascending int array of widths it may take.
        graph: the model's `ChannelGraph`.
    """

    def __init__(self, model, round_to=8, exclude=(), config_list=None, max_ratio=None,
                 importance="l2", data=None, heads="kv"):
        self.model = strip_pruning(model) if collect_wrappers(model) else model
        self.round_to = check_round_to(round_to)
        if heads not in HEAD_MODES:
            raise ValueError(f"Argument `heads` must be one of {HEAD_MODES}. Received: heads={heads!r}")
        self.heads = heads
        self.graph = ChannelGraph(self.model, heads=heads)
        caps = {}
        self.total_sparsity = None
        if config_list is not None:
            if exclude:
                raise ValueError(
                    "Pass either `config_list` or `exclude`, not both. Received: "
                    f"exclude={exclude!r} with config_list={config_list!r}"
                )
            args = config_list_lib.channel_arguments(self.graph, config_list)
            if args["ratios"]:
                raise ValueError(
                    "A search chooses the per-layer ratios itself: give config_list entries "
                    "'total_sparsity' or 'exclude', not per-layer 'sparsity'. Received ratios for "
                    f"{sorted(args['ratios'])}."
                )
            exclude, caps, self.total_sparsity = args["exclude"], args["max_ratios"], args["total_sparsity"]
        if isinstance(exclude, (str, type)):
            exclude = (exclude,)
        if max_ratio is not None:
            max_ratio = check_sparsity("max_ratio", max_ratio)
        self.exclude = tuple(exclude)
        self.groups, self.allowed = [], []
        for group in self.graph.prunable_groups:
            if not group.producers or is_excluded(group, self.exclude):
                continue
            n = len(group.units)
            cap = min([caps[p] for p in group.producers if p in caps] + [max_ratio if max_ratio is not None else 1.0])
            widths = unit_widths(group, self.round_to)
            widths = [w for w in widths if w >= n * (1.0 - cap) - 1e-9] or [n]
            if len(widths) < 2:
                continue  # nothing to choose
            self.groups.append(group)
            self.allowed.append(np.array(widths, dtype=np.int64))
        check_kv_groups(self.model, self.groups)
        if not self.groups:
            raise ValueError(
                f"Model '{self.model.name}' has no channel group a search can shrink with "
                f"round_to={self.round_to} (see kprune.plan_channels(model, 0.5) for the "
                "reason of each group)."
            )
        self.names = [g.producers[0] for g in self.groups]
        self.channels = np.array([len(g.units) for g in self.groups], dtype=np.int64)
        self.min_widths = np.array([a[0] for a in self.allowed], dtype=np.int64)
        self._score_fn = catalog.get(importance, data=data)
        if getattr(self._score_fn, "needs_model", False):
            self._score_fn = self._score_fn.bind(self.model)
        self.importance = importance if isinstance(importance, str) else getattr(importance, "__name__", "custom")
        self._scores = None

    def __len__(self):
        return len(self.groups)

    # ---------------------------------------------------------------- widths
    def snap(self, widths):
        """The nearest allowed width of each group (ties go to the wider)."""
        widths = np.asarray(widths, dtype=np.float64)
        out = np.empty(len(self), dtype=np.int64)
        for k, allowed in enumerate(self.allowed):
            out[k] = allowed[np.argmin(np.abs(allowed - widths[k]) - 1e-9 * allowed)]
        return out

    def widths_from_ratios(self, ratios):
        """Allowed widths for per-group pruning ratios (a scalar applies to all)."""
        ratios = np.broadcast_to(np.asarray(ratios, dtype=np.float64), (len(self),))
        return self.snap(self.channels * (1.0 - ratios))

    def ratios(self, widths):
        """Per-group pruning ratios `1 - width / channels`."""
        return 1.0 - np.asarray(widths, dtype=np.float64) / self.channels

    @property
    def dense(self):
        """The unpruned widths."""
        return self.channels.copy()

    def describe(self, widths):
        """`{group name: width}` (JSON-ready)."""
        return {name: int(w) for name, w in zip(self.names, widths)}

    def from_description(self, described):
        """Inverse of `describe` (for state files)."""
        missing = [n for n in self.names if n not in described]
        if missing:
            raise ValueError(f"The widths name no group {missing}: they were saved for another model.")
        return self.snap([described[n] for n in self.names])

    # ------------------------------------------------------------------ plans
    def scores(self):
        """The importance of each channel of each searched group (computed once)."""
        if self._scores is None:
            self._scores = [np.asarray(self._score_fn(self.graph, g), dtype=np.float64) for g in self.groups]
        return self._scores

    def scores_on(self, graph, k):
        """The importance of group k's channels in `graph` (the graph of a copy
        of the model, e.g. with fine-tuned weights)."""
        group = graph.groups[self.groups[k].index]
        if group.producers != self.groups[k].producers:
            raise ValueError(f"The graph's group {group.index} is not group '{self.names[k]}': another model.")
        return np.asarray(self._score_fn(graph, group), dtype=np.float64)

    def plan(self, widths, scores=None):
        """The `ChannelPlan` keeping the `widths[k]` highest-scoring channels of
        group k (`scores` defaults to `self.scores()`; -inf marks channels that
        must go first)."""
        widths = np.asarray(widths)
        scores = self.scores() if scores is None else scores
        by_index = {g.index: k for k, g in enumerate(self.groups)}
        ratios = {}
        for k, group in enumerate(self.groups):
            w = int(widths[k])
            if not 1 <= w <= self.channels[k]:
                raise ValueError(
                    f"Width {w} for group '{self.names[k]}' is outside [1, {self.channels[k]}]."
                )
            ratios[group.producers[0]] = 1.0 - w / self.channels[k]

        def score_fn(graph, group):
            return scores[by_index[group.index]]

        def skip(group):
            return None if group.index in by_index else "not searched"

        return make_plan(self.graph, 0.0, score_fn, False, 1, skip, ratios)

    def fingerprint(self):
        """A hash of the model's architecture and the searched groups (for state files and caches)."""
        text = json.dumps(
            {"model": self.model.to_json(), "groups": self.names, "allowed": [a.tolist() for a in self.allowed],
             **({"heads": self.heads} if self.heads != "kv" else {})},  # the default: earlier files still match
            sort_keys=True, default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class LayerFractions:
    """For each layer that a searched group touches: the kept fraction of its
    input and output channels as a function of the width vector.

    `fractions(widths)` returns two arrays `(f_in, f_out)` over `self.layers`
    (the layers' names inside the model, `usage_name`: a transformer block's
    "transformer_layer_0/self_attention"). A layer that reads or writes
    several things counts every position of all of them: a tensor whose
    channels come from several groups (Concatenate, Flatten), an attention
    layer's heads beside its output channels (its heads count as outputs
    only, though its output projection reads them: its weights and MACs are
    linear in the heads). So the fraction is linear in every group's width.
    """

    def __init__(self, space):
        self.space = space
        graph = space.graph
        group_of = {}
        for k, group in enumerate(space.groups):
            for unit in group.units:
                group_of[unit] = k
        self.layers, self.shapes = [], {}
        rows = {"in": {}, "out": {}}
        seen = set()
        for usage in graph.usages:
            name = usage_name(usage)
            key = (name, usage.role, tuple(usage.ids.tolist()))
            # Heads count once, as outputs: an attention layer also reads them (its
            # output projection), and a cost in both fractions would look quadratic.
            if key not in seen and not (usage.kind == "head" and usage.role == "in"):
                seen.add(key)
                counts = np.zeros(len(space), dtype=np.float64)
                for i in usage.ids.tolist():
                    k = group_of.get(graph.find(i))
                    if k is not None:
                        counts[k] += 1
                before, total = rows[usage.role].get(name, (np.zeros(len(space)), 0.0))
                rows[usage.role][name] = (before + counts, total + float(len(usage.ids)))
                shapes = self.shapes.setdefault(name, {})
                shapes[usage.role] = shapes.get(usage.role, 0) + len(usage.ids)
            if name not in self.layers:
                self.layers.append(name)
        empty = (np.zeros(len(space)), 1.0)
        self.in_counts = np.array([rows["in"].get(n, empty)[0] for n in self.layers]).reshape(-1, len(space))
        self.in_total = np.array([rows["in"].get(n, empty)[1] for n in self.layers])
        self.out_counts = np.array([rows["out"].get(n, empty)[0] for n in self.layers]).reshape(-1, len(space))
        self.out_total = np.array([rows["out"].get(n, empty)[1] for n in self.layers])

    def fractions(self, widths):
        pruned = 1.0 - np.asarray(widths, dtype=np.float64) / self.space.channels
        f_in = 1.0 - self.in_counts @ pruned / self.in_total
        f_out = 1.0 - self.out_counts @ pruned / self.out_total
        return f_in, f_out

    def kept(self, widths):
        """Kept input and output channel counts per layer (rounded)."""
        f_in, f_out = self.fractions(widths)
        return np.rint(f_in * self.in_total).astype(np.int64), np.rint(f_out * self.out_total).astype(np.int64)

    def layer_of(self, name):
        """The layer of `self.layers` that a `kprune.stats.layer_stats` row
        named `name` belongs to: the layer itself, or the one holding it
        ("block/attention/query" belongs to "block/attention"), or None."""
        if not hasattr(self, "_known"):
            self._known = set(self.layers)
        parts = name.split("/")
        for end in range(len(parts), 0, -1):
            prefix = "/".join(parts[:end])
            if prefix in self._known:
                return prefix
        return None
