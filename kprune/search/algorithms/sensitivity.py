"""Sensitivity scan: the metric after pruning one channel group at a time.

For every searched group and every ratio, the group alone is pruned by the
base criterion (one-shot, no fine-tuning) and the model is evaluated. The
table shows which layers tolerate pruning; `allocate` turns it into per-group
widths that meet a budget with the smallest *predicted* loss, assuming the
losses of groups add up:

    minimize  sum_k loss_k(w_k)   subject to  load(w) <= 1,

solved greedily: starting from the dense widths, repeatedly narrow the group
whose next allowed width costs the least predicted loss per unit of budget
load saved, until the budget is met; then widen again, one step at a time,
the groups whose widening saves the most predicted loss while the budget
stays met (`kprune.search.rescale.fill_budget`: the last narrowing may have cut
more than needed). `loss_k` interpolates the scan linearly
in the kept fraction (0 at the full width), is made non-decreasing as the
group narrows, and is infinite below the narrowest width scanned: the
allocation never goes where the scan did not look.
"""

import json

import numpy as np

from kprune.search.driver import constraint_for, make_result
from kprune.search.evaluation import MaskedCopy, data_evaluator
from kprune.search.latency_check import check_options
from kprune.search.options import SearchOptions
from kprune.search.rescale import fill_budget
from kprune.search.space import SearchSpace
from kprune.utils import user_warnings

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def loss_curves(channels, allowed, scanned_widths, metrics, baseline):
    """Predicted loss at every allowed width of every group.

    Args:
        channels: per group, its channel count.
        allowed: per group, the ascending allowed widths.
        scanned_widths / metrics: per group, the widths evaluated and the metric there.
        baseline: the dense model's metric.

    Returns:
        Per group, an array over `allowed` of `baseline - metric`, interpolated
        in the kept fraction, non-decreasing as the width shrinks, and
        infinite below the narrowest width scanned (nothing predicts it).

    Example:

    >>> np.round(loss_curves([40], [np.array([8, 16, 24, 32, 40])], [[32, 16]], [[0.9, 0.5]], 1.0)[0], 6).tolist()
    [inf, 0.5, 0.3, 0.1, 0.0]
    """
    curves = []
    for n, widths, scanned, values in zip(channels, allowed, scanned_widths, metrics):
        xs = np.concatenate([np.asarray(scanned, float) / n, [1.0]])
        ys = np.concatenate([baseline - np.asarray(values, float), [0.0]])
        order = np.argsort(xs)
        loss = np.interp(np.asarray(widths, float) / n, xs[order], ys[order])
        # narrower never predicts less loss than wider
        loss = np.maximum.accumulate(loss[::-1])[::-1]
        # no prediction below the narrowest width scanned
        loss[np.asarray(widths) < np.min(scanned)] = np.inf
        curves.append(loss)
    return curves


def allocate(curves, allowed, load, start=None):
    """Greedy widths meeting `load(widths) <= 1` with the least summed loss.

    Args:
        curves: per group, predicted loss at each allowed width (`loss_curves`).
        allowed: per group, the ascending allowed widths.
        load: `load(widths) -> float`, at most 1 when the budget is met.
        start: the starting widths (default: the widest).

    Returns:
        The widths (an int array), or None if even the narrowest miss the budget.

    Example (two groups; narrowing the first costs less loss per load):

    >>> allowed = [np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4])]
    >>> curves = [np.array([0.3, 0.2, 0.1, 0.0]), np.array([3.0, 2.0, 1.0, 0.0])]
    >>> allocate(curves, allowed, lambda w: (w[0] + w[1]) / 5.0).tolist()
    [1, 4]
    """
    index = np.array([len(a) - 1 for a in allowed]) if start is None else np.array(
        [int(np.searchsorted(a, w)) for a, w in zip(allowed, start)])

    def widths_at(idx):
        return np.array([a[i] for a, i in zip(allowed, idx)], dtype=np.int64)

    current = load(widths_at(index))
    while current > 1.0:
        best, best_cost, best_load = None, np.inf, None
        for k in range(len(allowed)):
            if index[k] == 0:
                continue
            trial = index.copy()
            trial[k] -= 1
            trial_load = load(widths_at(trial))
            saved = current - trial_load
            if saved <= 0:
                continue
            cost = (curves[k][trial[k]] - curves[k][index[k]] + 1e-9) / saved
            if cost < best_cost:
                best, best_cost, best_load = k, cost, trial_load
        if best is None:
            return None
        index[best] -= 1
        current = best_load
    return widths_at(index)


class SensitivityResult:
    """A sensitivity table, and (with a budget) the allocation it predicts.

    Attributes:
        baseline: the dense model's metric.
        names / channels: the scanned groups and their channel counts.
        ratios: the requested ratios; `widths[k][j]` the width group k got
            at `ratios[j]`, `metrics[k][j]` the metric there.
        log: every evaluation.
        scanned / candidates: the candidates evaluated (the dense model
            included) and those the complete scan evaluates.
        stopped: "scanned" when the scan is complete, else the limit that
            stopped it ("max_evaluations", "max_time").
        allocation: a `kprune.search.SearchResult` when a budget was given
            and the scan completed (`plan`, `widths`, `met`, `to_json()`
            ...), else None.
        plan: `allocation.plan` (None without a budget).
    """

    def __init__(self, baseline, names, channels, ratios, widths, metrics, log, allocation=None, space=None,
                 candidates=None, stopped="scanned"):
        self.baseline, self.names, self.channels = float(baseline), list(names), [int(c) for c in channels]
        self.ratios, self.widths = [float(r) for r in ratios], [[int(w) for w in ws] for ws in widths]
        self.metrics = [[float(m) for m in ms] for ms in metrics]
        self.log, self.allocation, self.space = list(log), allocation, space
        self.scanned = len(self.log)
        self.candidates = self.scanned if candidates is None else int(candidates)
        self.stopped = stopped

    @property
    def plan(self):
        return None if self.allocation is None else self.allocation.plan

    def to_dict(self):
        return {"baseline": self.baseline, "names": self.names, "channels": self.channels,
                "ratios": self.ratios, "widths": self.widths, "metrics": self.metrics,
                "scanned": self.scanned, "candidates": self.candidates, "stopped": self.stopped,
                "allocation": None if self.allocation is None else self.allocation.to_dict()}

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self):
        head = f"{'group':<24} {'ch':>4} " + " ".join(f"{r:>6.2f}" for r in self.ratios)
        if self.stopped == "scanned":
            scan = f"scanned {self.scanned} candidates"
        else:
            scan = (f"INCOMPLETE: scanned {self.scanned} of {self.candidates} candidates, stopped at its limit "
                    f"`{self.stopped}`")
        lines = [f"sensitivity ({scan}; baseline {self.baseline:.4f}; metric after pruning one group by each "
                 "ratio)", head]
        for name, n, ms in zip(self.names, self.channels, self.metrics):
            lines.append(f"{name:<24} {n:>4} " + " ".join(f"{m:>6.3f}" for m in ms))
        if self.allocation is not None:
            lines.append(str(self.allocation))
        return "\n".join(lines)

    def plot(self, ax=None):
        """Metric vs ratio, one line per group (matplotlib); returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax or plt.gca()
        for name, ws, ms, n in zip(self.names, self.widths, self.metrics, self.channels):
            ax.plot([1 - w / n for w in ws], ms, marker="o", ms=3, label=name)
        ax.axhline(self.baseline, color="k", lw=0.8, ls="--")
        ax.set_xlabel("fraction of the group's channels pruned")
        ax.set_ylabel("metric (one-shot)")
        return ax

    def allocate(self, budget, latency=None, check_latency=True, verbose=1):
        """The widths meeting `budget` with the least predicted loss (a
        `SearchResult`; `latency`, `check_latency` and `verbose` as for
        `kprune.simulated_annealing`)."""
        if self.stopped != "scanned":
            raise ValueError(f"The scan is incomplete ({self.scanned} of {self.candidates} candidates, stopped at "
                             f"`{self.stopped}`): resume it with the same `state_path` before allocating.")
        check_options(check_latency)
        return allocate_scan(self, self.space, budget, latency, None, check_latency, verbose)


def allocate_scan(result, space, budget, latency, run, check_latency=True, verbose=0):
    """The allocation of a complete scan under `budget` (a `SearchResult`)."""
    constraint = constraint_for(space, budget, latency, verbose=verbose, method="sensitivity")
    curves = loss_curves(space.channels, space.allowed, result.widths, result.metrics, result.baseline)
    widths = allocate(curves, space.allowed, constraint.load)
    stopped = "scanned"
    if widths is None:
        widths, stopped = space.min_widths, "unreachable"
    else:  # the last greedy step may overshoot: widen the groups that gain most, while the budget allows
        def gain(k, w):
            i = int(np.searchsorted(space.allowed[k], w[k]))
            return curves[k][i] - curves[k][i + 1]

        widths = fill_budget(widths, space.allowed, constraint.load, gain)
    predicted = result.baseline - sum(c[int(np.searchsorted(a, w))] for c, a, w in zip(curves, space.allowed, widths))
    allocation = make_result("sensitivity", space, constraint, widths, None, run, stopped,
                             extra={"predicted_score": float(predicted)}, check_latency=check_latency,
                             verbose=verbose)
    if run is None:  # allocated again from a finished scan
        allocation.log, allocation.evaluations = list(result.log), len(result.log)
    return allocation


def sensitivity(
    model,
    evaluate=None,
    ratios=DEFAULT_RATIOS,
    *,
    data=None,
    budget=None,
    options=None,
    **shared,
):
    """Evaluate the model with each channel group pruned alone at each ratio.

    Args:
        model: a Sequential or Functional Keras model (trained).
        evaluate: `evaluate(model) -> float`, higher is better (use a held-out
            part of the training data), or None with `data`.
        ratios: the pruning ratios to try per group. Defaults to 0.1, ..., 0.9.
            Ratios that round to the same width are evaluated once.
        data: `(x, y)` for the built-in top-1 accuracy. Defaults to None.
        budget: a `kprune.Budget`; if given, `result.allocation` holds the
            widths that meet it with the smallest predicted loss.
        options: a `kprune.search.SearchOptions` with the settings every search shares, or None.
        **shared: any `SearchOptions` setting by name (`importance`, `round_to`, `exclude`, `config_list`,
            `max_ratio`, `latency`, `seed`, `max_evaluations`, `max_time`, `state_path`, `log_path`,
            `verbose`, `check_latency`), overriding `options`; see `kprune.search.SearchOptions`.
            The scan evaluates every candidate once; `max_evaluations` / `max_time` stop it early (resume it
            with the same `state_path`).

    Returns:
        A `SensitivityResult` (print it, `.to_json()`, `.plot()`, `.allocate(budget)`).

    Example:

    >>> import keras, numpy as np, kprune
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
    >>> kept = lambda m: float(np.count_nonzero(m.get_layer("c2").kernel.numpy()))
    >>> table = kprune.sensitivity(model, kept, ratios=(0.25, 0.5), verbose=0,
    ...                            budget=kprune.Budget(macs=0.5))
    >>> table.widths, table.allocation.load <= 1.0
    ([[24, 16], [24, 16]], True)
    """
    opts = SearchOptions.resolve("sensitivity", options, shared)
    latency, verbose = opts.latency, opts.verbose
    ratios = [float(r) for r in ratios]
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ValueError(
            f"Argument `ratios` must be a non-empty list of numbers in (0, 1). Received: ratios={ratios!r}"
        )
    evaluate = data_evaluator(evaluate, data)
    space = SearchSpace(model, round_to=opts.round_to, exclude=opts.exclude, config_list=opts.config_list,
                        importance=opts.importance, heads=opts.heads)
    if budget is not None:  # validate (and build a latency table) before scanning
        constraint = constraint_for(space, budget, latency, verbose=verbose, method="sensitivity")
        latency = constraint.models.get("latency_ms", latency)
    settings = {"space": space.fingerprint(), "ratios": ratios, "importance": space.importance}
    widths_table = [[int(space.widths_from_ratios(np.where(np.arange(len(space)) == k, r, 0.0))[k])
                     for r in ratios] for k in range(len(space))]
    candidates = 1 + sum(len(set(ws)) for ws in widths_table)
    run = opts.run("sensitivity", settings, target=min(candidates, opts.max_evaluations or candidates), budget=budget,
                    legend=f"the dense model, then each of {len(space)} groups pruned alone at each ratio")
    copy = MaskedCopy(space)
    done = run.state.setdefault("scores", {})  # "k:width" -> metric
    stopped = None
    if "baseline" not in run.state:
        run.state["baseline"] = float(evaluate(copy.apply(space.plan(space.dense))))
        run.record({"group": None, "width": None, "metric": run.state["baseline"]})
    baseline = run.state["baseline"]
    for k, name in enumerate(space.names):
        for width in widths_table[k]:
            key = f"{k}:{width}"
            if key in done:
                continue
            stopped = run.stop_reason()
            if stopped:
                break
            widths = space.dense
            widths[k] = width
            done[key] = float(evaluate(copy.apply(space.plan(widths))))
            run.record({"group": name, "width": width, "metric": done[key]})
        if stopped:
            break
    run.finish()
    metrics = [[done.get(f"{k}:{w}", np.nan) for w in widths_table[k]] for k in range(len(space))]
    result = SensitivityResult(baseline, space.names, space.channels, ratios, widths_table, metrics, run.log,
                               space=space, candidates=candidates, stopped=stopped or "scanned")
    if stopped:  # incomplete: resume with the same state_path
        run.save(result={"method": "sensitivity", "met": False, "stopped": stopped, "scanned": result.scanned,
                         "candidates": candidates})
        user_warnings.warn(
            f"sensitivity stopped at its limit `{stopped}` after {result.scanned} of {candidates} candidates: "
            f"the scan is incomplete{' and no plan was allocated (result.plan is None)' if budget else ''}. "
            f"Raise `{stopped}` and run again with the same `state_path` to resume.", UserWarning)
        return result
    if budget is not None:
        result.allocation = allocate_scan(result, space, budget, latency, run, opts.check_latency, verbose)
    return result
