"""What every per-layer ratio search shares: its result, its run and its state file.

* `SearchResult` -- the outcome: a `kprune.ChannelPlan` (`.plan`), the
  widths and ratios per group, the score, predicted resources against the
  budget, the log of every candidate, and `.to_json()`.
* `SearchRun` -- the driver around a search algorithm: a progress bar
  (`keras.utils.Progbar`) with the current best score, an evaluation and a
  time limit, a JSON log of every candidate (`log_path`), and a state file
  (`state_path`, written atomically after every evaluation) from which an
  interrupted search resumes where it stopped. The algorithm keeps its own
  state in `run.state` (plain JSON data) and calls `run.record(...)` after
  each evaluation.
* `uniform(...)` -- the baseline: one ratio for every group, the smallest
  that meets the budget.

The state file also holds a fingerprint of the model, the searched groups,
the budget and the settings; resuming with anything different raises rather
than mixing two searches. NumPy arrays that a search must keep (NetAdapt's
fine-tuned weights) go to a side file `<state_path>.<n>.npz` that the JSON
names, written before it.

Example:

>>> import keras, kprune
>>> from kprune.search import uniform
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
>>> result = uniform(model, kprune.Budget(macs=0.5))
>>> result.widths, result.resources["macs"] <= result.targets["macs"]
({'c1': 24, 'c2': 16}, True)
"""

import glob
import hashlib
import json
import os
import time

import keras
import numpy as np

from kprune import atomic
from kprune.budget import Budget, Constraint
from kprune.channels import ChannelPlan
from kprune.rescale import fill_budget, rounding_priority, scale_to_budget
from kprune.space import SearchSpace

STATE_VERSION = 1


class SearchResult:
    """The outcome of a per-layer ratio search.

    Attributes:
        method: "uniform", "sensitivity", "netadapt" or "simulated_annealing".
        plan: the `kprune.ChannelPlan` (apply it with `kprune.mask_channels`
            / `kprune.remove_channels`).
        widths / ratios: `{group name: kept channels}` and `{group name:
            pruned fraction}` (a group is named by its first producer).
        score: the evaluation of the chosen candidate (None if not evaluated).
        resources / targets / dense: predicted `{kind: value}` of the chosen
            widths, of the budget and of the dense model.
        log: one dict per evaluated candidate.
        evaluations, seconds: evaluations made and wall time (all sessions).
        stopped: why the search ended ("done", "budget met",
            "max_evaluations", "max_time", "unreachable").
        model: a pruned Keras model with the search's weights, if it trained
            any (NetAdapt), else None.
        space / constraint: the `SearchSpace` and `kprune.budget.Constraint`
            the search ran on (not serialized; None after `from_json`), for
            `kprune.match_latency`.
    """

    def __init__(self, method, plan, widths, ratios, score, resources, targets, dense, log,
                 evaluations, seconds, stopped, model=None, extra=None):
        self.method, self.plan = method, plan
        self.widths, self.ratios = dict(widths), dict(ratios)
        self.score = None if score is None else float(score)
        self.resources, self.targets, self.dense = dict(resources), dict(targets), dict(dense)
        self.log = list(log)
        self.evaluations, self.seconds, self.stopped = int(evaluations), float(seconds), stopped
        self.model = model
        self.extra = dict(extra or {})
        self.space = self.constraint = None

    @property
    def load(self):
        """`max_k resource_k / target_k` (at most 1 when the budget is met)."""
        return max(self.resources[k] / self.targets[k] for k in self.targets)

    def to_dict(self):
        return {
            "method": self.method, "plan": self.plan.to_dict(), "widths": self.widths,
            "ratios": self.ratios, "score": self.score, "resources": self.resources,
            "targets": self.targets, "dense": self.dense, "log": self.log,
            "evaluations": self.evaluations, "seconds": self.seconds, "stopped": self.stopped,
            "extra": self.extra,
        }

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        data["plan"] = ChannelPlan(data["plan"]["groups"])
        return cls(**data)

    def __str__(self):
        score = "not evaluated" if self.score is None else f"{self.score:.4f}"
        lines = [f"{self.method}: score {score}, {self.evaluations} evaluations, "
                 f"{self.seconds:.1f} s, stopped: {self.stopped}"]
        for kind, target in self.targets.items():
            lines.append(f"  {kind:<10} {self.resources[kind]:,.4g} of budget {target:,.4g} "
                         f"({self.resources[kind] / self.dense[kind]:.1%} of dense)")
        lines.append(f"  {'group':<24} {'width':>6} {'ratio':>6}")
        for name, width in self.widths.items():
            lines.append(f"  {name:<24} {width:>6} {self.ratios[name]:>6.2f}")
        return "\n".join(lines)


def make_result(method, space, constraint, widths, score, run, stopped, model=None, plan=None, extra=None):
    """A `SearchResult` for `widths` of `space` under `constraint`."""
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


def check_limit(name, value, kind=int):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
        kind is int and int(value) != value
    ):
        raise ValueError(f"Argument `{name}` must be a positive {kind.__name__} or None. Received: {name}={value!r}")
    return kind(value)


class SearchRun:
    """Progress, limits, log and resumable state of one search.

    Args:
        method: the search's name.
        settings: JSON data that identifies the search (model fingerprint,
            budget, hyper-parameters); a state file saved with other settings
            is refused.
        state_path: the state file (JSON; resumed from if it exists), or None.
        log_path: a JSON file rewritten with every candidate, or None.
        max_evaluations: stop after this many evaluations in total (all
            sessions), or None.
        max_time: stop this session after this many seconds, or None.
        verbose: 1 for a progress bar (to stdout), 0 for none.
        target: the progress bar's length (e.g. the number of evaluations
            expected), or None.

    Attributes:
        state: the algorithm's own JSON data (empty at a fresh start).
        resumed: whether `state` came from the state file.
        log, evaluations, best_score.
    """

    def __init__(self, method, settings, state_path=None, log_path=None, max_evaluations=None,
                 max_time=None, verbose=1, target=None):
        self.method = method
        self.fingerprint = hashlib.sha256(
            json.dumps([method, settings], sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.state_path, self.log_path = state_path, log_path
        self.max_evaluations = check_limit("max_evaluations", max_evaluations)
        self.max_time = check_limit("max_time", max_time, float)
        self.started = time.perf_counter()
        self.state, self.log, self.evaluations = {}, [], 0
        self.previous_seconds, self.best_score, self.resumed = 0.0, None, False
        self.arrays_file = None
        if state_path and os.path.isfile(state_path):
            saved = atomic.read_json(state_path)
            if saved.get("fingerprint") != self.fingerprint or saved.get("method") != method:
                raise ValueError(
                    f"The state file '{state_path}' belongs to another search (method "
                    f"{saved.get('method')!r}, or another model, budget or settings). Pass another "
                    "`state_path`, or delete the file to start over."
                )
            self.state, self.log = saved["state"], saved["log"]
            self.evaluations, self.best_score = saved["evaluations"], saved["best_score"]
            self.previous_seconds, self.arrays_file = saved["seconds"], saved.get("arrays")
            self.resumed = True
        self.progbar = None
        if verbose:
            self.progbar = keras.utils.Progbar(target or self.max_evaluations, stateful_metrics=["best", "load"],
                                               unit_name="evaluation")

    @property
    def seconds(self):
        return self.previous_seconds + time.perf_counter() - self.started

    def stop_reason(self):
        """"max_evaluations" / "max_time" when a limit is reached, else None."""
        if self.max_evaluations is not None and self.evaluations >= self.max_evaluations:
            return "max_evaluations"
        if self.max_time is not None and time.perf_counter() - self.started >= self.max_time:
            return "max_time"
        return None

    def record(self, candidate, score=None, arrays=None, **progress):
        """Log one evaluated candidate (a JSON-ready dict), update the best
        (highest) score, show progress (`progress`: more figures for the bar)
        and save the state (with `arrays`, if given, beside it)."""
        self.evaluations += 1
        entry = {"evaluation": self.evaluations, "seconds": round(self.seconds, 3), **candidate}
        if score is not None:
            entry["score"] = float(score)
            if self.best_score is None or score > self.best_score:
                self.best_score = float(score)
        self.log.append(entry)
        if self.progbar is not None:
            values = [("best", self.best_score)] if self.best_score is not None else []
            values += [(k, float(v)) for k, v in progress.items()]
            self.progbar.update(self.evaluations, values=values)
        self.save(arrays)

    def save(self, arrays=None):
        """Write the state file (and, if given, a list of arrays beside it)."""
        if arrays is not None and self.state_path:
            name = f"{os.path.basename(self.state_path)}.{self.evaluations}.npz"
            atomic.write_arrays(os.path.join(os.path.dirname(os.path.abspath(self.state_path)), name), arrays)
            self.arrays_file = name
        if self.state_path:
            atomic.write_json(self.state_path, {
                "version": STATE_VERSION, "method": self.method, "fingerprint": self.fingerprint,
                "state": self.state, "log": self.log, "evaluations": self.evaluations,
                "best_score": self.best_score, "seconds": self.seconds, "arrays": self.arrays_file,
            })
            self._remove_stale_arrays()
        if self.log_path:
            atomic.write_json(self.log_path, {"method": self.method, "candidates": self.log})

    def load_arrays(self):
        """The arrays saved with the state (None if there are none)."""
        if not (self.state_path and self.arrays_file):
            return None
        return atomic.read_arrays(os.path.join(os.path.dirname(os.path.abspath(self.state_path)), self.arrays_file))

    def _remove_stale_arrays(self):
        pattern = os.path.join(os.path.dirname(os.path.abspath(self.state_path)),
                               glob.escape(os.path.basename(self.state_path)) + ".*.npz")
        for path in glob.glob(pattern):
            if os.path.basename(path) != self.arrays_file:
                os.remove(path)

    def finish(self):
        if self.progbar is not None and self.progbar.target is None:
            self.progbar.update(self.evaluations, finalize=True)


def space_and_constraint(model, budget, round_to, exclude, config_list, latency, importance="l2",
                         data=None, max_ratio=None):
    """The `SearchSpace` and `Constraint` a search runs on."""
    space = SearchSpace(model, round_to=round_to, exclude=exclude, config_list=config_list,
                        max_ratio=max_ratio, importance=importance, data=data)
    return space, constraint_for(space, budget, latency)


def constraint_for(space, budget, latency):
    """The `Constraint` of `budget` on `space` (a config_list's 'total_sparsity'
    becomes `Budget(params=1 - total_sparsity)` when no budget is given)."""
    if budget is None:
        if space.total_sparsity is None:
            raise ValueError("Argument `budget` is required (a kprune.Budget). Received: budget=None")
        budget = Budget(params=1.0 - space.total_sparsity)
    elif space.total_sparsity is not None:
        raise ValueError(
            "Pass either `budget` or a config_list with 'total_sparsity', not both. Received: "
            f"budget={budget!r} and total_sparsity={space.total_sparsity}"
        )
    return Constraint(space, budget, latency=latency)


def uniform(model, budget, round_to=8, exclude=(), config_list=None, latency=None, fill=True):
    """The same pruning ratio for every group: the smallest that meets `budget`.

    Args:
        model: a Sequential or Functional Keras model.
        budget: a `kprune.Budget`.
        round_to, exclude, config_list: as for `kprune.simulated_annealing`.
        latency: the `kprune.LatencyTable` for latency budgets (default: built).
        fill: repair the rounding to `round_to` steps with `kprune.rescale.fill_budget`
            (the groups that lost most to rounding widen one step while the
            budget allows), so the result sits at the budget rather than up
            to a step of every group below it. Defaults to True.

    Returns:
        A `SearchResult` (not evaluated: `score` is None).
    """
    started = time.perf_counter()
    space, constraint = space_and_constraint(model, budget, round_to, exclude, config_list, latency)
    # Ratios beyond a group's narrowest width snap to it.
    c, widths = scale_to_budget(np.ones(len(space)), constraint.load, np.full(len(space), 0.999999),
                                space.widths_from_ratios)
    stopped = "budget met"
    if widths is None:
        widths, stopped = space.min_widths, "unreachable"
    elif fill:
        widths = fill_budget(widths, space.allowed, constraint.load, rounding_priority(space, np.full(len(space), c)))
    result = make_result("uniform", space, constraint, widths, None, None, stopped,
                         extra={"ratio": None if c is None else float(c)})
    result.seconds = time.perf_counter() - started
    return result
