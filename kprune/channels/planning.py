"""Choosing which units of which groups to prune: from scores to a `ChannelPlan`.

`make_plan` scores the groups of a `kprune.dependency.channel_graph.ChannelGraph`
and keeps the highest-scoring units of each, in one of these rankings:

* local (default): each group loses its own `sparsity` fraction;
* `global_ranking=True`: scores are normalized per group and one
  threshold over all groups decides (a fraction of the units overall);
* `global_ranking="params"`: the same normalized scores, divided by the
  parameters each unit holds (`UnitSpace.unit_costs`: a head's query, key,
  value and output rows weigh more than an FFN unit's three), and the
  lowest go until a `sparsity` fraction of the pooled *parameters* is
  removed -- LLM-Pruner's global head/neuron selection;
* `global_ranking="pooled"`: as `"params"`, but heads and channels in one
  ranking (FLAP's adaptive structure, "AL-AM": attention and MLP compete
  for one parameter budget); `sparsity` is then one fraction.

Normalization (`normalize=`) makes scores of different groups comparable:
`"mean"` divides each group's scores by their mean (the default, None, for
every criterion but one that gives z-scores itself); `"zscore"` standardizes
them, `(s - mean(s)) / std(s)` (`std` with `ddof=1`, as `torch.std`), as
FLAP does per layer before its global selection. A criterion whose scores
are z-scores already (`standardized`: `importance="flap"`) is compared as
it is. A z-score is signed, so z-scores order units by themselves in the
parameter rankings, their parameters counting only toward the budget
(FLAP's head weighs `4 * head_dim / 3` neurons of LLaMA), instead of being
divided by them. Local ranking compares scores within a group, where
normalization changes nothing.

`sparsity` is one fraction for every group, or a dict by unit kind
(`UNIT_KINDS`): `{"heads": 0.5}` prunes half the attention heads and leaves
channels (a transformer's FFN units) whole. The hidden size (groups of unit
`"hidden"`, in a graph read with `hidden=True`) has a fraction of its own,
`hidden`, never taken from `sparsity`. Channels are rounded to
multiples of `round_to`; heads are whole units (`round_to` counts channels,
and a head is already `head_dim` of them). A group of `query_head`s prunes
the same number of heads from each key/value group (`ChannelGroup.blocks`).

Example:

>>> keep_count(64, 0.3, 8), keep_count(64, 0.3, 1), keep_count(6, 0.5, 8)
(48, 45, 6)
>>> sparsity_table({"heads": 0.5})
{'channels': 0.0, 'heads': 0.5}
>>> choose(np.array([4.0, 1.0, 3.0, 2.0, 9.0, 8.0]), keep=4, blocks=2)
[1, 3]
>>> normalized(np.array([1.0, 2.0, 3.0]), "zscore").tolist()
[-1.0, 0.0, 1.0]
"""

import numpy as np

from kprune.dependency.channel_plan import ChannelPlan
from kprune.dependency.unit_space import usage_name
from kprune.utils.validation import check_sparsity

# The `sparsity` dict keys, and the `ChannelGroup.unit`s each covers.
UNIT_KINDS = {"channels": ("channel",), "heads": ("head", "kv_group", "query_head")}
# The kind of the hidden size's units: its fraction is `make_plan`'s `hidden`.
HIDDEN_KIND = "hidden"
RANKINGS = (False, True, "params", "pooled")
NORMALIZATIONS = (None, "mean", "zscore")


def kind_of(group):
    """The `UNIT_KINDS` key of a group's units, or `HIDDEN_KIND`."""
    if group.unit == HIDDEN_KIND:
        return HIDDEN_KIND
    return next(kind for kind, units in UNIT_KINDS.items() if group.unit in units)


def sparsity_table(sparsity):
    """`{"channels": s, "heads": s}` from one fraction or a dict by unit kind
    (missing kinds: 0), each checked."""
    if isinstance(sparsity, dict):
        unknown = sorted(set(sparsity) - set(UNIT_KINDS))
        if unknown:
            hint = (" The hidden size has an argument of its own: plan_channels(model, sparsity, "
                    "hidden=0.25).") if HIDDEN_KIND in unknown else ""
            raise ValueError(
                f"Argument `sparsity` must be a fraction or a dict with keys among "
                f"{sorted(UNIT_KINDS)}. Received: sparsity={sparsity!r} (unknown keys {unknown}).{hint}"
            )
        return {kind: check_sparsity(f"sparsity[{kind!r}]", sparsity.get(kind, 0.0)) for kind in UNIT_KINDS}
    value = check_sparsity("sparsity", sparsity)
    return {kind: value for kind in UNIT_KINDS}


def check_ranking(global_ranking, normalize=None, sparsity=None):
    """Validate `global_ranking` (False, True, "params" or "pooled") and
    `normalize` (None, "mean" or "zscore"), and that a pooled ranking has one
    `sparsity` fraction."""
    if not (global_ranking is False or global_ranking is True or global_ranking in ("params", "pooled")):
        raise ValueError(
            f"Argument `global_ranking` must be one of {list(RANKINGS)}. "
            f"Received: global_ranking={global_ranking!r}"
        )
    if normalize not in NORMALIZATIONS:
        raise ValueError(
            f"Argument `normalize` must be one of {list(NORMALIZATIONS)}. Received: normalize={normalize!r}"
        )
    if normalize is not None and global_ranking is False:
        raise ValueError(
            f"Argument `normalize` applies to global ranking only (within a group it changes no "
            f"order): pass `global_ranking=True`, 'params' or 'pooled', or leave `normalize` at "
            f"None. Received: normalize={normalize!r} with global_ranking=False"
        )
    if global_ranking == "pooled" and isinstance(sparsity, dict):
        raise ValueError(
            "Argument `sparsity` must be one fraction with global_ranking='pooled' (heads and "
            "channels share one parameter budget); use global_ranking='params' for a fraction per "
            f"unit kind. Received: sparsity={sparsity!r}"
        )
    return global_ranking


def _normalization(score_fn, normalize):
    """The normalization global ranking applies: `"as is"` for a criterion
    that gives z-scores (`standardized`), else `normalize` (None: "mean")."""
    if not getattr(score_fn, "standardized", False):
        return normalize or "mean"
    if normalize == "mean":
        name = getattr(score_fn, "__name__", type(score_fn).__name__)
        raise ValueError(
            f"Argument `normalize` cannot be 'mean' with importance {name!r}, whose scores are "
            "z-scores already (signed, with mean 0 per layer): leave `normalize` at None (or "
            "'zscore'), which compares them as they are. Received: normalize='mean'"
        )
    return "as is"


def normalized(scores, normalize):
    """A group's scores made comparable with other groups': divided by their
    mean (`"mean"`), standardized (`"zscore"`, `ddof=1`; equal scores give 0)
    or kept (`"as is"`)."""
    if normalize == "as is":
        return scores
    if normalize == "zscore":
        std = scores.std(ddof=1) if scores.size > 1 else 0.0
        return (scores - scores.mean()) / (std if std > 0 else 1.0)
    return scores / (scores.mean() + 1e-12)


def keep_count(n, sparsity, round_to):
    """Channels kept of `n` at `sparsity`, a multiple of `round_to` (a group of at most
    `round_to` channels is kept whole), at least 1."""
    keep = n * (1.0 - sparsity)
    if round_to > 1:
        if n <= round_to:
            return n
        keep = round_to * max(1, int(np.floor(keep / round_to + 0.5)))
    return int(min(n, max(1, int(np.floor(keep + 0.5)))))


def group_keep(group, sparsity, round_to):
    """Units a group keeps at `sparsity`: channels rounded to `round_to`,
    heads whole, a `query_head` group the same number in each block."""
    n = len(group.units)
    if group.unit == "channel":
        return keep_count(n, sparsity, round_to)
    return group.blocks * keep_count(n // group.blocks, sparsity, 1)


def choose(scores, keep, blocks=1):
    """Positions of the units pruned: the lowest scores (ties by position),
    the same number in each of `blocks` equal blocks."""
    n = len(scores)
    size = n // blocks
    pruned = []
    for b in range(blocks):
        part = scores[b * size:(b + 1) * size]
        drop = size - keep // blocks
        pruned += (b * size + np.argsort(part, kind="stable")[:drop]).tolist()
    return sorted(pruned)


def check_names(graph, model, exclude, ratios):
    """Validate `ratios` and `exclude` against the graph; returns the ratios dict."""
    ratios = dict(ratios or {})
    for name, value in ratios.items():
        check_sparsity(f"ratios[{name!r}]", value)
    if isinstance(exclude, (str, type)):
        exclude = (exclude,)
    known = {usage_name(u) for g in graph.groups for u in g.usages}
    for name in list(ratios) + [e for e in exclude if isinstance(e, str)]:
        if name not in known:
            raise ValueError(
                f"Layer '{name}' (in `ratios` or `exclude`) is not a layer of model "
                f"'{model.name}' that channel pruning can reach."
            )
    for name in ratios:
        writes = [g for g in graph.groups if name in g.producers]
        if not writes:
            raise ValueError(
                f"Layer '{name}' (in `ratios`) makes no channels of its own, so it has no "
                "channel ratio; give the ratio to the convolution or Dense layer before it."
            )
        if all(g.blocked for g in writes):
            raise ValueError(
                f"Layer '{name}' (in `ratios`) cannot be channel-pruned: its channels are "
                f"tied to {writes[0].blocked}. Remove it from `ratios`."
            )
    return ratios


def is_excluded(group, exclude):
    """Whether an excluded layer writes this group's channels (it keeps its width;
    its inputs may still shrink)."""
    for usage in group.usages:
        if usage.role != "out":
            continue
        for item in exclude:
            if isinstance(item, str) and usage_name(usage) == item:
                return True
            if isinstance(item, type) and isinstance(usage.layer, item):
                return True
    return False


def _entry(group):
    return {"group": group.index, "producers": group.producers, "channels": len(group.units),
            "pruned": [], "reason": group.blocked, "unit": group.unit}


def make_plan(graph, sparsity, score_fn, global_ranking, round_to, skip, ratios, normalize=None, hidden=0.0):
    """Score the groups of `graph` and choose the units to prune (see the
    module docstring).

    `sparsity` is a fraction or a dict by unit kind; `skip(group)` returns a
    reason to leave a group whole, or None; `ratios` maps producer names to
    the sparsity of their groups; `normalize` is None, `"mean"` or `"zscore"`;
    `hidden` is the fraction of the hidden size's groups (`graph.hidden`).
    """
    table = {**sparsity_table(sparsity), HIDDEN_KIND: hidden}
    check_ranking(global_ranking, normalize, sparsity)
    normalize = _normalization(score_fn, normalize)
    entries, scored = [], []
    for group in graph.groups:
        entry = _entry(group)
        entries.append(entry)
        if group.blocked or not group.producers:
            entry["reason"] = entry["reason"] or "no producer"
            continue
        reason = skip(group)
        if reason:
            entry["reason"] = reason
            continue
        local = next((ratios[n] for n in group.producers if n in ratios), None)
        if local is None and table[kind_of(group)] == 0.0:
            continue
        scores = score_fn(graph, group)
        if scores is None:
            name = getattr(score_fn, "__name__", type(score_fn).__name__)
            entry["reason"] = f"importance {name!r} gives it no scores"
            continue
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(group.units),):
            raise ValueError(
                f"Importance returned {scores.shape} scores for group {group.index} "
                f"with {len(group.units)} channels."
            )
        scored.append((group, entry, scores, local))

    fractions = _global_fractions(graph, scored, table, global_ranking, normalize) if global_ranking else {}
    for group, entry, scores, local in scored:
        group_sparsity = local if local is not None else fractions.get(
            group.index, table[kind_of(group)])
        keep = group_keep(group, group_sparsity, round_to)
        entry["pruned"] = choose(scores, keep, group.blocks)
    return ChannelPlan(entries, heads=graph.heads, hidden=getattr(graph, "hidden", False))


def _global_fractions(graph, scored, table, ranking, normalize):
    """`{group index: fraction of its units below the global threshold}`, one
    threshold per unit kind (or one for all, `"pooled"`) over the groups
    without a ratio of their own."""
    fractions = {}
    if ranking == "pooled":
        pools = [(tuple(UNIT_KINDS), table["channels"])]  # one fraction: every kind's
    else:
        pools = [((kind,), target) for kind, target in table.items()]
    for kinds, target in pools:
        pool = [(group, scores) for group, _, scores, local in scored
                if local is None and kind_of(group) in kinds]
        if not pool:
            continue
        keys = [normalized(s, normalize) for _, s in pool]
        if ranking in ("params", "pooled"):
            costs = [graph.unit_costs(group) for group, _ in pool]
            if normalize == "mean":  # z-scores are signed: never divided by a cost
                keys = [s / np.maximum(c, 1) for s, c in zip(keys, costs)]
            ratio = np.concatenate(keys)
            cost = np.concatenate(costs)
            order = np.argsort(ratio, kind="stable")
            cut = int(np.searchsorted(np.cumsum(cost[order]), target * cost.sum(), side="right"))
            chosen = np.zeros(len(ratio), bool)
            chosen[order[:cut]] = True
        else:
            values = np.concatenate(keys)
            cut = int(np.floor(values.size * target + 0.5))
            threshold = np.sort(values)[cut - 1] if cut else -np.inf
            chosen = values <= threshold
        start = 0
        for (group, scores) in pool:
            fractions[group.index] = float(np.mean(chosen[start:start + len(scores)]))
            start += len(scores)
    return fractions
