"""Close the loop on latency budgets: measure the exported file, correct, re-fit.

A search meets a latency budget (`Budget(latency=...)` or
`Budget(max_latency_ms=...)`) on the prediction of a
`kprune.LatencyTable` (per-layer LiteRT times, calibrated on a few whole
files). On models whose invoke takes a fraction of a millisecond the
prediction of one width vector can miss the whole file's latency by 5-20%
(the ops outside the table, XNNPack's kernel choice at each width).
`match_latency` checks the search's plan on the exported file and, while the
measurement misses the budget by more than `tolerance`, corrects the target
the table is asked to meet by the measured error at the current plan,

    T_{i+1} = B * p_i / m_i,

(`B` the budget, `p_i` and `m_i` the predicted and measured latency of plan
i, both as fractions of the dense model's for a relative budget, in ms for
an absolute one), and re-fits the plan to `T_{i+1}`: the plan's per-group
ratios are scaled by one factor until the corrected load is met
(`kprune.search.rescale.scale_to_budget`, ratios clipped at each group's narrowest
width), then the rounding is repaired (`kprune.search.rescale.fill_budget`). If a
corrected target leaves the bracket of targets already measured below and
above the budget, it is bisected instead. On small models the file's latency
is a staircase in the widths (XNNPack adds a tile of output channels at a
time), so when `max_iterations` re-fits do not land, up to `max_neighbours`
one-group moves from the closest plan are measured (`neighbours`). Every
check is recorded in `result.extra["latency_checks"]`; the plan is measured
once more at the end, and the spread of the two measurements of that file is
`result.extra["latency_noise"]`. If no plan lands within tolerance, the one
that came closest is returned (`result.extra["latency_within"]` False), with
a `UserWarning`; `result.met` is False when that plan's file is above the
budget by more than the tolerance.

Every search runs this loop before it returns when its budget has a latency
target (`kprune.search.driver.make_result`; `check_latency=False` skips it), so
the plan a search returns is the checked one.

Measurements are relative by default: `FileLatency` exports the pruned and
the dense model (`LatencyTable.export`) and times them in interleaved
rounds (`kprune.litert.timing.interleaved_latency`), so that load from other jobs
on a shared machine hits both files alike.

Example (`refit` moves a plan to a tighter load, here 80% of a MACs budget;
no group ends wider than the plan had it):

>>> import keras, numpy as np, kprune
>>> from kprune.search.budget import Constraint
>>> from kprune.search.space import SearchSpace
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
>>> space = SearchSpace(model, round_to=4)
>>> constraint = Constraint(space, kprune.Budget(macs=0.5))
>>> widths = refit(space, np.array([28, 16]), lambda w: constraint.load(w) / 0.8)
>>> widths.tolist(), constraint.load(widths) <= 0.8
([20, 16], True)
"""

import inspect
import time

import numpy as np

from kprune.channels.oneshot import masked_copy
from kprune.search.file_latency import FileLatency
from kprune.search.rescale import fill_budget, rounding_priority, scale_to_budget
from kprune.search.result import predicted_met, result_for, warn_if_missed
from kprune.utils.progress import Progress


def refit(space, widths, load):
    """`widths` rescaled to `load <= 1`, keeping the shape of the plan.

    The plan's pruning ratios are multiplied by the smallest factor that meets
    the load (ratios clipped at each group's narrowest width, so a group
    already there does not block the others), then groups widen where the
    budget allows (`fill_budget`). A dense plan scales uniform ratios.
    Returns the narrowest widths if even they miss the load.

    The move is monotone: a plan that misses the load only narrows (no group
    ends wider than the plan had it, so a group the search kept narrow is not
    widened to pay for narrowing another), and a plan under the load only
    widens. The search chose the plan's shape from accuracy; the rounding
    repair must not undo it.
    """
    widths = np.asarray(widths, dtype=np.int64)
    ratios = space.ratios(widths)
    if not np.any(ratios > 0):
        ratios = np.full(len(space), 0.5)
    limits = space.ratios(space.min_widths)
    shrink = load(widths) > 1.0
    if shrink:  # every group at most as wide as the plan had it
        allowed = [a[a <= w] for a, w in zip(space.allowed, widths)]
    else:  # every group at least as wide
        allowed = [a[a >= w] for a, w in zip(space.allowed, widths)]

    def widths_of(r):
        new = space.widths_from_ratios(np.minimum(r, limits))
        return np.minimum(new, widths) if shrink else np.maximum(new, widths)

    c, new = scale_to_budget(ratios, load, np.full(len(space), 1e6), widths_of)
    if new is None:
        return space.min_widths.copy()
    return fill_budget(new, allowed, load, rounding_priority(space, np.minimum(c * ratios, limits)))


def neighbours(space, widths, needed, wider, table, load, tried):
    """One-group moves from `widths` towards a predicted latency `needed`, best first.

    For each group, the allowed width (wider if `wider`, else narrower) whose
    plan the table predicts closest to `needed` with the other groups kept
    (and `load <= 1` for the budget's other resources); the moves are sorted
    by that distance, plans already in `tried` left out. On small models
    the file's latency jumps where XNNPack's kernels add a tile of output
    channels, which the table's interpolation smooths over; a one-group move
    crosses such a step where a rescaling of every group cannot land.
    """
    out = []
    for k, allowed in enumerate(space.allowed):
        options = allowed[allowed > widths[k]] if wider else allowed[allowed < widths[k]]
        best = None
        for w in options:
            trial = widths.copy()
            trial[k] = w
            if tuple(int(v) for v in trial) in tried or load(trial) > 1.0 + 1e-12:
                continue
            distance = abs(table(trial) - needed)
            if best is None or distance < best[0]:
                best = (distance, trial)
        if best is not None:
            out.append(best)
    return [trial for _, trial in sorted(out, key=lambda item: item[0])]


def match_latency(result, tolerance=0.03, max_iterations=3, max_neighbours=4, measure=None, rounds=9, runs=200,
                  evaluate=None, timer=None, verbose=1):
    """Check a search's plan on the measured latency of its file and re-fit it until it lands.

    Every search with a latency budget runs this before it returns (unless
    given `check_latency=False`; `check_latency={...}` passes these
    arguments); call it yourself on a result searched without the check.

    Args:
        result: a `kprune.search.SearchResult` of any search (uniform too)
            with a latency budget, as the search returned it (it keeps the
            search's space and constraint).
        tolerance: the largest relative miss `|m / B - 1|` accepted. Defaults to 0.03.
        max_iterations: re-fits at most. Defaults to 3.
        max_neighbours: if no re-fit lands, one-group moves from the closest
            plan measured at most (see `neighbours`). Defaults to 4.
        measure: `measure(widths) -> float`, the measured latency of the
            model pruned to `widths` (a width per searched group) in the
            budget's unit: a fraction of the dense model's for
            `Budget(latency=...)`, ms for `Budget(max_latency_ms=...)`.
            Defaults to `FileLatency`.
        rounds / runs: for the default `FileLatency`. Defaults to 9 and 200.
        timer: for the default `FileLatency`: `timer(tflite) -> ms` in place
            of LiteRT's clock (e.g. `kprune.search.latency_table.MacsTimer`). Defaults to
            None: the `LatencyTable`'s own timer if it was built with one
            (the same clock as the prediction), else LiteRT.
        evaluate: `evaluate(model) -> float` to score a re-fitted plan (on
            the search's model masked to it), or None to leave it unscored.
        verbose: 1 for a progress bar (one step per measurement; "of budget"
            is the measured latency over the budget), 0 for none. Defaults to 1.

    Returns:
        The result (the same one if the first check passes, else a new
        `SearchResult` for the re-fitted plan, with the search's log, `score`
        None unless `evaluate` is given, and `model` None since the search's
        trained weights belong to the old plan). `met` says whether the
        returned plan's file meets the budget (`m <= B (1 + tolerance)`);
        when no plan lands within `tolerance`, a `UserWarning` says by how
        much it missed. `extra["latency_check"]` sums the check up (`goal`,
        `unit`, `measured`, `tolerance`, `within`, `measurements`,
        `seconds`), `extra["latency_checks"]` lists `{"iteration", "widths",
        "predicted", "measured", "error", "target"}` per check and
        `extra["latency_noise"]` the relative difference of two measurements
        of the returned plan's file.

    Example (a synthetic measurement: the prediction, 25% higher; the loop
    corrects the target to `0.6 / 1.25` of the table's and re-fits):

    >>> import keras, kprune
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
    >>> table = kprune.LatencyTable(kprune.SearchSpace(model, round_to=4), points=2, cache_dir=False,
    ...                             timer=kprune.search.latency_table.MacsTimer(), verbose=0)
    >>> result = kprune.search.uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table,
    ...                                check_latency=False, verbose=0)
    >>> dense = table(result.space.dense)
    >>> checked = kprune.match_latency(result, measure=lambda w: 1.25 * table(w) / dense, verbose=0)
    >>> [round(c["measured"], 3) for c in checked.extra["latency_checks"]], checked.met
    ([0.679, 0.588], True)
    """
    checked = closed_loop(result, tolerance=tolerance, max_iterations=max_iterations,
                          max_neighbours=max_neighbours, measure=measure, rounds=rounds, runs=runs,
                          evaluate=evaluate, timer=timer, verbose=verbose)
    warn_if_missed(checked)
    return checked


OPTIONS = tuple(name for name in inspect.signature(match_latency).parameters if name not in ("result", "verbose"))


def check_options(check_latency):
    """The `kprune.match_latency` keyword arguments a search's
    `check_latency` asks for (`{}` for True), or None for False."""
    if check_latency is True:
        return {}
    if check_latency is False:
        return None
    if isinstance(check_latency, dict) and set(check_latency) <= set(OPTIONS):
        return dict(check_latency)
    raise ValueError(
        "Argument `check_latency` must be True, False, or a dict of kprune.match_latency's keyword arguments "
        f"({', '.join(OPTIONS)}). Received: check_latency={check_latency!r}")


def closed_loop(result, tolerance=0.03, max_iterations=3, max_neighbours=4, measure=None, rounds=9, runs=200,
                evaluate=None, timer=None, verbose=1):
    """`match_latency` without its warning (a search warns once, at its end)."""
    started = time.perf_counter()
    space, constraint = result.space, result.constraint
    if space is None or constraint is None:
        raise ValueError("Argument `result` must be a SearchResult as a search returned it (it keeps "
                         "the search's space and constraint; a result read back with from_json does not). "
                         f"Received: result={result.method!r} without a space.")
    if "latency_ms" not in constraint.targets:
        raise ValueError("Argument `result` must come from a search with a latency budget (`latency=` or "
                         f"`max_latency_ms=`). Received: budget {constraint.budget!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise ValueError(f"Argument `tolerance` must be a number in (0, 1). Received: tolerance={tolerance!r}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 0:
        raise ValueError(f"Argument `max_iterations` must be an int >= 0. Received: max_iterations={max_iterations!r}")
    table = constraint.models["latency_ms"]
    goal = constraint.budget.value("latency_ms")
    relative = constraint.budget.relative("latency_ms")
    scale = table(space.dense) if relative else 1.0  # predicted units per budget unit
    own = measure is None
    if own:
        measure = FileLatency(space, table, relative=relative, rounds=rounds, runs=runs,
                              timer=table.timer if timer is None else timer)
    elif timer is not None:
        raise ValueError("Arguments `measure` and `timer` cannot both be given: `timer` is for the default "
                         f"FileLatency. Received: measure={measure!r}, timer={timer!r}")
    others = [k for k in constraint.targets if k != "latency_ms"]

    def load_for(target_ms):
        def load(widths):
            values = [table(widths) / target_ms] + [constraint.models[k](widths) / constraint.targets[k]
                                                     for k in others]
            return max(values)
        return load

    widths = space.from_description(result.widths)
    target = constraint.targets["latency_ms"]
    checks, tried = [], set()
    unit = "of dense" if relative else "ms"
    at_most = 2 + max_iterations + max_neighbours
    bar = Progress(f"Latency check on exported files: budget {goal:g} {unit}, tolerance {tolerance:.0%}, at most "
                   f"{at_most} measurements ('of budget': the file's latency over the budget)",
                   target=at_most, unit_name="measurement", verbose=verbose)

    def check(widths, target, phase):
        predicted = table(widths) / scale
        measured = float(measure(widths))
        checks.append({"iteration": len(checks), "phase": phase, "widths": space.describe(widths),
                       "target": target / scale, "predicted": predicted, "measured": measured,
                       "error": measured / goal - 1.0, **({"file": measure.last} if own else {})})
        tried.add(tuple(int(w) for w in widths))
        bar.update(len(checks), **{"of budget": measured / goal})
        return abs(checks[-1]["error"]) <= tolerance

    try:
        landed = check(widths, target, "search")
        while not landed and len(checks) <= max_iterations:
            last = checks[-1]
            target = goal * last["predicted"] / last["measured"] * scale
            below = [c["target"] * scale for c in checks if c["error"] < 0]
            above = [c["target"] * scale for c in checks if c["error"] > 0]
            if below and above and not max(below) < target < min(above):
                target = 0.5 * (max(below) + min(above))  # the correction left the bracket: bisect
            new = refit(space, widths, load_for(target))
            if tuple(int(w) for w in new) in tried:
                break  # the rounding cannot move it further
            widths = new
            landed = check(widths, target, "refit")
        for _ in range(max_neighbours):
            if landed:
                break
            best = min(checks, key=lambda c: abs(c["error"]))
            candidates = neighbours(space, space.from_description(best["widths"]),
                                    goal * best["predicted"] / best["measured"] * scale, best["error"] < 0,
                                    table, load_for(np.inf), tried)
            if not candidates:
                break
            landed = check(candidates[0], table(candidates[0]), "neighbour")
        best = min(checks, key=lambda c: abs(c["error"]))
        widths = space.from_description(best["widths"])
        repeat = float(measure(widths))
        noise = abs(repeat - best["measured"]) / best["measured"]
        bar.update(len(checks) + 1, **{"of budget": repeat / goal})
        bar.finish()
    finally:
        if own:
            measure.close()
    within = abs(best["error"]) <= tolerance
    summary = {"goal": goal, "unit": unit, "measured": best["measured"], "tolerance": tolerance, "within": within,
               "measurements": len(checks) + 1, "seconds": time.perf_counter() - started}
    extra = dict(result.extra, latency_checks=checks, latency_noise=noise, latency_repeat=repeat,
                 latency_within=within, latency_check=summary)
    if best["iteration"] == 0:
        new_result = result
        new_result.extra = extra
    else:
        score = None
        if evaluate is not None:
            score = float(evaluate(masked_copy(space.model, space.plan(widths))))
        new_result = result_for(result.method, space, constraint, widths, score, None, result.stopped,
                                extra=dict(extra, search_score=result.score, search_widths=result.widths))
        new_result.log, new_result.evaluations, new_result.seconds = result.log, result.evaluations, result.seconds
    new_result.met = predicted_met({k: new_result.resources[k] for k in others},
                                   {k: constraint.targets[k] for k in others}) and (
        best["measured"] <= goal * (1.0 + tolerance))
    return new_result
