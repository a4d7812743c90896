"""`ChannelPlan`: which channels of which group are pruned, as plain data
that prints as a table, round-trips through JSON and is checked against the
model it is applied to (`kprune.channels` makes and applies plans)."""

import json


class ChannelPlan:
    """Which channels of which group are pruned: plain, inspectable data.

    Attributes:
        groups: a list of dicts `{"group", "producers", "channels", "pruned",
            "reason", "unit"}` -- `channels` counts the group's units,
            `pruned` holds unit positions within the group, `reason` why a
            group is left whole (or None), `unit` what one unit is
            (`"channel"`, `"head"`, `"kv_group"`, `"query_head"`,
            `"hidden"`; missing means `"channel"`).
        heads: how the plan's model was read (`ChannelGraph(model, heads=...)`):
            `"kv"` or `"query"`, the unit of grouped-query attention.
        hidden: whether the model was read with its hidden size prunable
            (`ChannelGraph(model, hidden=True)`, `plan_channels(...,
            hidden=...)`): the groups differ, so the plan is applied to a
            graph read the same way.

    Example:

    >>> plan = ChannelPlan([{"group": 1, "producers": ["conv"], "channels": 4,
    ...                      "pruned": [0, 2], "reason": None}])
    >>> ChannelPlan.from_json(plan.to_json()).groups == plan.groups
    True
    """

    def __init__(self, groups, heads="kv", hidden=False):
        self.groups = [dict(g) for g in groups]
        self.heads = heads
        self.hidden = bool(hidden)

    def to_dict(self):
        return {"groups": [dict(g) for g in self.groups], "heads": self.heads, "hidden": self.hidden}

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        if not isinstance(data, dict) or "groups" not in data:
            raise ValueError("A channel plan is JSON of the form {\"groups\": [...]}.")
        return cls(data["groups"], data.get("heads", "kv"), data.get("hidden", False))

    @property
    def num_pruned(self):
        return sum(len(g["pruned"]) for g in self.groups)

    def __str__(self):
        lines = [f"{'group':>5}  {'channels':>8}  {'pruned':>6}  producers / reason"]
        for g in self.groups:
            note = ", ".join(g["producers"]) or "-"
            if g.get("unit", "channel") != "channel":
                note += " (hidden size)" if g["unit"] == "hidden" else f" ({g['unit']}s)"
            if g.get("reason"):
                note += f"  [{g['reason']}]"
            lines.append(f"{g['group']:>5}  {g['channels']:>8}  {len(g['pruned']):>6}  {note}")
        return "\n".join(lines)

    def units(self, graph):
        """The root channel ids this plan prunes in `graph` (checked against it)."""
        if getattr(graph, "heads", "kv") != self.heads and any(
                g.get("unit", "channel") != "channel" and g["pruned"] for g in self.groups):
            raise ValueError(
                f"The plan prunes heads read with heads={self.heads!r}, but the graph reads "
                f"them with heads={graph.heads!r}: build it with ChannelGraph(model, "
                f"heads={self.heads!r})."
            )
        if getattr(graph, "hidden", False) != self.hidden:
            raise ValueError(
                f"The plan was made with hidden={'a fraction' if self.hidden else None} (its model read "
                f"with ChannelGraph(model, hidden={self.hidden})), but the graph was read with "
                f"hidden={graph.hidden}: build it with ChannelGraph(model, hidden={self.hidden})."
            )
        pruned = set()
        for entry in self.groups:
            if not entry["pruned"]:
                continue
            index = entry["group"]
            if not 0 <= index < len(graph.groups):
                raise ValueError(
                    f"The plan names group {index}, but the model has {len(graph.groups)} "
                    "channel groups: the plan was made for another model."
                )
            group = graph.groups[index]
            if group.producers != list(entry["producers"]) or len(group.units) != entry["channels"]:
                raise ValueError(
                    f"Group {index} of the plan has producers {entry['producers']} and "
                    f"{entry['channels']} channels; the model's has {group.producers} and "
                    f"{len(group.units)}: the plan was made for another model."
                )
            if group.blocked:
                raise ValueError(f"Group {index} cannot be pruned: {group.blocked}.")
            if group.blocks > 1 and not _balanced(entry["pruned"], len(group.units), group.blocks):
                raise ValueError(
                    f"The plan prunes query heads {entry['pruned']} of group {index} "
                    f"({', '.join(group.producers)}), not the same number from each of its "
                    f"{group.blocks} key/value groups: the query heads would no longer "
                    "be a multiple of the key/value heads."
                )
            if len(entry["pruned"]) >= len(group.units):
                raise ValueError(
                    f"The plan prunes all {len(group.units)} channels of group {index} "
                    f"({', '.join(group.producers)}); at least one must stay."
                )
            pruned.update(group.units[p] for p in entry["pruned"])
        return pruned


def _balanced(pruned, n, blocks):
    """Whether `pruned` positions take as many from each of `blocks` equal blocks,
    leaving each at least one."""
    size = n // blocks
    counts = [sum(1 for p in pruned if b * size <= p < (b + 1) * size) for b in range(blocks)]
    return len(set(counts)) == 1 and counts[0] < size
