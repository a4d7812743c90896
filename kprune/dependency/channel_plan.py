"""`ChannelPlan`: which channels of which group are pruned, as plain data
that prints as a table, round-trips through JSON and is checked against the
model it is applied to (`kprune.channels` makes and applies plans)."""

import json


class ChannelPlan:
    """Which channels of which group are pruned: plain, inspectable data.

    Attributes:
        groups: a list of dicts `{"group", "producers", "channels", "pruned",
            "reason"}` -- `pruned` holds channel positions within the group,
            `reason` why a group is left whole (or None).

    Example:

    >>> plan = ChannelPlan([{"group": 1, "producers": ["conv"], "channels": 4,
    ...                      "pruned": [0, 2], "reason": None}])
    >>> ChannelPlan.from_json(plan.to_json()).groups == plan.groups
    True
    """

    def __init__(self, groups):
        self.groups = [dict(g) for g in groups]

    def to_dict(self):
        return {"groups": [dict(g) for g in self.groups]}

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        if not isinstance(data, dict) or "groups" not in data:
            raise ValueError("A channel plan is JSON of the form {\"groups\": [...]}.")
        return cls(data["groups"])

    @property
    def num_pruned(self):
        return sum(len(g["pruned"]) for g in self.groups)

    def __str__(self):
        lines = [f"{'group':>5}  {'channels':>8}  {'pruned':>6}  producers / reason"]
        for g in self.groups:
            note = ", ".join(g["producers"]) or "-"
            if g.get("reason"):
                note += f"  [{g['reason']}]"
            lines.append(f"{g['group']:>5}  {g['channels']:>8}  {len(g['pruned']):>6}  {note}")
        return "\n".join(lines)

    def units(self, graph):
        """The root channel ids this plan prunes in `graph` (checked against it)."""
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
            if len(entry["pruned"]) >= len(group.units):
                raise ValueError(
                    f"The plan prunes all {len(group.units)} channels of group {index} "
                    f"({', '.join(group.producers)}); at least one must stay."
                )
            pruned.update(group.units[p] for p in entry["pruned"])
        return pruned
