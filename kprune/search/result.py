"""The outcome of a per-layer ratio search, and whether it met its budget.

* `SearchResult` -- a `kprune.ChannelPlan` (`.plan`), the widths and ratios
  per group, the score, predicted resources against the budget, `met`
  (whether the budget is met), the log of every candidate, `.to_json()`.
* `result_for(...)` -- a `SearchResult` for a width vector of a search space.
* `missed_message(result)` / `warn_if_missed(result)` -- what a result that
  misses its budget (or whose latency check did not land) says, loudly.

`met` is the budget verdict every search gives: the predicted resources of
the plan against the budget's targets (`load <= 1`: exact for parameters
and MACs, the `kprune.LatencyTable`'s prediction for latency), and for a
latency budget checked on the exported file (`kprune.match_latency`, run
by every search unless `check_latency=False`) the measured latency against
the budget, `m <= B (1 + tolerance)`.

Example:

>>> import keras, kprune
>>> from kprune.search.algorithms.uniform import uniform
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
>>> result = uniform(model, kprune.Budget(macs=0.5))
>>> result.met, missed_message(result)
(True, None)
>>> print(str(result).splitlines()[1])
  budget met (predicted: 0.881 of the budget)
"""

import json

import numpy as np

from kprune.dependency.channel_plan import ChannelPlan
from kprune.utils import user_warnings

LIMITS = ("max_evaluations", "max_time", "max_iterations")
_EPSILON = 1e-9


def predicted_met(resources, targets):
    """Whether every predicted resource is within its target."""
    return all(resources[k] <= targets[k] * (1.0 + _EPSILON) for k in targets)


class SearchResult:
    """The outcome of a per-layer ratio search.

    Attributes:
        method: "uniform", "sensitivity", "netadapt", "simulated_annealing",
            "auto_compress" or "amc".
        plan: the `kprune.ChannelPlan` (apply it with `kprune.mask_channels`
            / `kprune.remove_channels`).
        widths / ratios: `{group name: kept channels}` and `{group name:
            pruned fraction}` (a group is named by its first producer).
        score: the evaluation of the chosen candidate (None if not evaluated).
        resources / targets / dense: predicted `{kind: value}` of the chosen
            widths, of the budget and of the dense model (kinds "params",
            "macs", "latency_ms"; absolute figures).
        met: whether the plan meets the budget: predicted resources within
            the targets, and for a latency budget checked on the exported
            file, the measured latency at most `budget * (1 + tolerance)`
            (see the module docstring). A search that returns a plan with
            `met` False also warns (`UserWarning`).
        log: one dict per evaluated candidate.
        evaluations, seconds: evaluations made and wall time (all sessions).
        stopped: why the search ended: "done" (it ran its course), "budget
            met" (NetAdapt reached it), "scanned" (the sensitivity scan),
            "max_evaluations" / "max_time" / "max_iterations" (a limit: the
            plan may miss the budget, see `met`) or "unreachable" (no
            candidate meets the budget).
        model: a pruned Keras model with the search's weights, if it trained
            any (NetAdapt, AutoCompress, AMC with `reconstruct=`), else None.
        extra: method-specific figures; a latency check adds
            "latency_check" (`{"goal", "unit", "measured", "tolerance",
            "within", "measurements", "seconds"}`) and the keys of
            `kprune.match_latency`.
        space / constraint: the `SearchSpace` and `kprune.search.budget.Constraint`
            the search ran on (not serialized; None after `from_json`), for
            `kprune.match_latency`.
    """

    def __init__(self, method, plan, widths, ratios, score, resources, targets, dense, log,
                 evaluations, seconds, stopped, model=None, extra=None, met=None):
        self.method, self.plan = method, plan
        self.widths, self.ratios = dict(widths), dict(ratios)
        self.score = None if score is None else float(score)
        self.resources, self.targets, self.dense = dict(resources), dict(targets), dict(dense)
        self.log = list(log)
        self.evaluations, self.seconds, self.stopped = int(evaluations), float(seconds), stopped
        self.model = model
        self.extra = dict(extra or {})
        self.met = predicted_met(self.resources, self.targets) if met is None else bool(met)
        self.space = self.constraint = None

    @property
    def load(self):
        """`max_k resource_k / target_k` of the predicted resources (at most 1
        when the prediction meets the budget)."""
        return max(self.resources[k] / self.targets[k] for k in self.targets)

    def to_dict(self):
        return {
            "method": self.method, "plan": self.plan.to_dict(), "widths": self.widths,
            "ratios": self.ratios, "score": self.score, "resources": self.resources,
            "targets": self.targets, "dense": self.dense, "log": self.log,
            "evaluations": self.evaluations, "seconds": self.seconds, "stopped": self.stopped,
            "extra": self.extra, "met": self.met,
        }

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        data["plan"] = ChannelPlan(data["plan"]["groups"])
        return cls(**data)

    def summary(self):
        """The verdict as JSON data: met, stopped, load, evaluations, seconds
        (and the latency check's figures, if it ran)."""
        out = {"method": self.method, "met": self.met, "stopped": self.stopped, "predicted_load": self.load,
               "evaluations": self.evaluations, "seconds": round(self.seconds, 3), "score": self.score}
        if "latency_check" in self.extra:
            out["latency_check"] = self.extra["latency_check"]
        return out

    def __str__(self):
        score = "not evaluated" if self.score is None else f"{self.score:.4f}"
        lines = [f"{self.method}: score {score}, {self.evaluations} evaluations, {self.seconds:.1f} s, "
                 f"{describe_stop(self)}"]
        verdict = "budget met" if self.met else "budget NOT met"
        check = self.extra.get("latency_check")
        if check is None:
            lines.append(f"  {verdict} (predicted: {self.load:.3f} of the budget)")
        else:
            lines.append(f"  {verdict} (predicted: {self.load:.3f} of the budget; latency measured on the "
                         "exported file)")
        for kind, target in self.targets.items():
            lines.append(f"  {kind:<10} {self.resources[kind]:,.4g} of budget {target:,.4g} "
                         f"({self.resources[kind] / self.dense[kind]:.1%} of dense, predicted)")
        if check is not None:
            unit = " ms" if check["unit"] == "ms" else " of dense"
            lines.append(f"  {'':<10} measured {_figure(check['measured'], check)}{unit} for a budget of "
                         f"{_figure(check['goal'], check)}{unit} ({check['measured'] / check['goal'] - 1:+.1%}; "
                         f"{'within' if check['within'] else 'NOT within'} {check['tolerance']:.0%}), "
                         f"{check['measurements']} measurements in {check['seconds']:.0f} s")
        elif "latency_ms" in self.targets:
            why = self.extra.get("latency_check_skipped")
            lines.append(f"  {'':<10} latency predicted by the LatencyTable, not checked on the exported file"
                         + (f" ({why})" if why else ""))
        column = max([24] + [len(name) for name in self.widths])  # a transformer's names are long
        lines.append(f"  {'group':<{column}} {'width':>6} {'ratio':>6}")
        for name, width in self.widths.items():
            lines.append(f"  {name:<{column}} {width:>6} {self.ratios[name]:>6.2f}")
        return "\n".join(lines)


def _figure(value, check):
    """A fraction of dense to 3 decimals; milliseconds to 4 significant digits (0.0327 ms)."""
    return f"{value:.4g}" if check["unit"] == "ms" else f"{value:.3f}"


def describe_stop(result):
    """How the search ended, in words."""
    stopped = result.stopped
    if stopped == "scanned":
        return f"scanned {result.evaluations} candidates, allocated by the predicted loss"
    if stopped in LIMITS:
        return f"stopped at its limit `{stopped}`"
    return {"done": "finished", "budget met": "stopped at the budget",
            "unreachable": "stopped: no candidate meets the budget"}.get(stopped, f"stopped: {stopped}")


def result_for(method, space, constraint, widths, score, run, stopped, model=None, plan=None, extra=None):
    """A `SearchResult` for `widths` of `space` under `constraint` (`run`: the
    `kprune.search.driver.SearchRun`, for the log, evaluations and time, or None)."""
    widths = np.asarray(widths)
    result = SearchResult(
        method=method, plan=plan if plan is not None else space.plan(widths),
        widths=space.describe(widths),
        ratios={n: float(r) for n, r in zip(space.names, space.ratios(widths))},
        score=score, resources=constraint.resources(widths), targets=constraint.targets,
        dense=constraint.dense, log=run.log if run else [], evaluations=run.evaluations if run else 0,
        seconds=run.seconds if run else 0.0, stopped=stopped, model=model, extra=extra,
    )
    result.space, result.constraint = space, constraint
    return result


def _over(result):
    """The resources predicted over their target, in words."""
    parts = []
    for kind, target in result.targets.items():
        value = result.resources[kind]
        if value > target * (1.0 + _EPSILON):
            parts.append(f"{kind} {value / result.dense[kind]:.1%} of dense for a budget of "
                         f"{target / result.dense[kind]:.1%}")
    return ", ".join(parts)


def missed_message(result):
    """What to tell the user about a result that misses its budget (or whose
    latency check did not land within its tolerance); None if all is well."""
    check = result.extra.get("latency_check")
    if not predicted_met(result.resources, result.targets) and not (check and result.met):
        where = f"{result.evaluations} evaluations, {result.seconds:.0f} s"
        if result.stopped in LIMITS:
            return (f"{result.method} stopped at its limit `{result.stopped}` ({where}) with a plan at "
                    f"{result.load:.2f} of its budget ({_over(result)}): the budget is NOT met "
                    f"(result.met is False). Raise `{result.stopped}` (or run again with the same `state_path` "
                    "to resume), or use this plan knowingly.")
        if result.stopped == "unreachable":
            return (f"{result.method}: no candidate meets the budget ({_over(result)} at the narrowest widths "
                    "searched): the budget is NOT met (result.met is False). Loosen the budget, or lower "
                    "`round_to`, `max_ratio` or the excluded layers.")
        return (f"{result.method} returned a plan at {result.load:.2f} of its budget ({_over(result)}): the "
                "budget is NOT met (result.met is False).")
    if check and not check["within"]:
        ms = check["unit"] == "ms"
        measured = _figure(check["measured"], check) + (" ms" if ms else " of the dense model's latency")
        goal = _figure(check["goal"], check) + (" ms" if ms else "")
        figures = (f"the exported file measured {measured} for a budget of {goal} "
                   f"({check['measured'] / check['goal'] - 1:+.1%}, tolerance "
                   f"{check['tolerance']:.0%}) after {check['measurements']} measurements")
        if not result.met:
            return (f"{result.method}: {figures}: the latency budget is NOT met (result.met is False). Pass "
                    "`check_latency={'max_iterations': 6, 'max_neighbours': 8}` for more re-fits, a looser "
                    "`tolerance`, or use this plan knowingly.")
        return (f"{result.method}: {figures}: the budget is met, but the check could not land within "
                "its tolerance, so the plan prunes more than the budget needs.")
    return None


def warn_if_missed(result):
    """Warn (`UserWarning`, pointing at the user's call) if `missed_message`
    has something to say. Returns the message or None."""
    message = missed_message(result)
    if message:
        user_warnings.warn(message, UserWarning)
    return message
