"""What every per-layer ratio search shares: its run, its state file and its verdict.

* `SearchRun` -- the driver around a search algorithm: a progress bar
  (`keras.utils.Progbar`, below a heading that names the search and its
  budget) with the best score so far ("best") and the candidate's predicted
  resources over the budget ("of budget": `max_k R_k / B_k`, at most 1 when
  the candidate meets the budget), an evaluation and a time limit, a JSON
  log of every candidate (`log_path`) and of the verdict, and a state file
  (`state_path`, written atomically after every evaluation) from which an
  interrupted search resumes where it stopped. The algorithm keeps its own
  state in `run.state` (plain JSON data) and calls `run.record(...)` after
  each evaluation. The bar's total is the number of evaluations when it is
  known in advance (`max_evaluations`, AMC's episodes, the sensitivity
  scan's candidates); a search that stops on a condition (annealing cooled,
  NetAdapt at the budget) shows the count alone.
* `make_result(...)` -- how every search ends: the `SearchResult`
  (`kprune.search.result`), its latency budget checked on the exported file
  (`kprune.match_latency`, unless `check_latency=False`), its verdict
  `result.met` written to the log, and a `UserWarning` when the plan misses
  the budget (a search stopped by `max_evaluations`/`max_time` above it, a
  latency check that did not land).

The searches take these settings through `kprune.search.options.SearchOptions`;
the uniform baseline is `kprune.search.algorithms.uniform`.

The state file also holds a fingerprint of the model, the searched groups,
the budget and the settings; resuming with anything different raises rather
than mixing two searches. NumPy arrays that a search must keep (NetAdapt's
fine-tuned weights) go to a side file `<state_path>.<n>.npz` that the JSON
names, written before it.

Example (a search's run: limits, progress and log):

>>> run = SearchRun("my_search", {"settings": 1}, max_evaluations=2, verbose=0)
>>> run.max_evaluations, run.evaluations, run.state
(2, 0, {})
"""

import glob
import hashlib
import json
import os
import time

from kprune.search.budget import Budget, Constraint
from kprune.search.latency_check import check_options, closed_loop
from kprune.search.result import result_for, warn_if_missed
from kprune.search.space import SearchSpace
from kprune.utils import atomic
from kprune.utils.progress import Progress

STATE_VERSION = 1
LEGEND = ("'best' is the best score so far, 'of budget' the candidate's predicted resources over the budget (at "
          "most 1 when it meets it)")


class SearchRun:
    """Progress, limits, log and resumable state of one search.

    Args:
        method: the search's name.
        settings: JSON data that identifies the search (model fingerprint,
            budget, hyper-parameters); a state file saved with other settings
            is refused.
        state_path: the state file (JSON; resumed from if it exists), or None.
        log_path: a JSON file rewritten with every candidate (and, at the end,
            the verdict: `"result": SearchResult.summary()`), or None.
        max_evaluations: stop after this many evaluations in total (all
            sessions), or None.
        max_time: stop this session after this many seconds, or None.
        verbose: 1 for a progress bar (to stdout), 0 for none.
        target: the progress bar's total when the search knows it (e.g. the
            scan's candidates), or None: then `max_evaluations` if given,
            else the count alone.
        budget: the `kprune.Budget`, named in the bar's heading. Defaults to None.
        legend: what the bar's figures mean, for its heading. Defaults to
            the scored searches' "best" and "of budget".

    Attributes:
        state: the algorithm's own JSON data (empty at a fresh start).
        resumed: whether `state` came from the state file.
        log, evaluations, best_score.
    """

    def __init__(self, method, settings, state_path=None, log_path=None, max_evaluations=None,
                 max_time=None, verbose=1, target=None, budget=None, legend=LEGEND):
        self.method = method
        self.fingerprint = hashlib.sha256(
            json.dumps([method, settings], sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.state_path, self.log_path = state_path, log_path
        self.max_evaluations = check_limit("max_evaluations", max_evaluations)
        self.max_time = check_limit("max_time", max_time, float)
        self.verbose = int(bool(verbose))
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
        total = target if target is not None else self.max_evaluations
        limits = ", ".join(f"{name}={value:g}" for name, value in (("max_evaluations", self.max_evaluations),
                                                                  ("max_time", self.max_time)) if value is not None)
        title = method + (f" under {budget!r}" if budget is not None else "") + (f" ({limits})" if limits else "")
        self.progress = Progress(f"{title}: {legend}", target=total, unit_name="evaluation", verbose=verbose)
        if self.resumed and self.evaluations:
            self.progress.update(self.evaluations, best=self.best_score)

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

    def record(self, candidate, score=None, arrays=None, of_budget=None):
        """Log one evaluated candidate (a JSON-ready dict), update the best
        (highest) score, show progress (`of_budget`: the candidate's load,
        `kprune.search.budget.Constraint.load`) and save the state (with `arrays`,
        if given, beside it)."""
        self.evaluations += 1
        entry = {"evaluation": self.evaluations, "seconds": round(self.seconds, 3), **candidate}
        if score is not None:
            entry["score"] = float(score)
            if self.best_score is None or score > self.best_score:
                self.best_score = float(score)
        self.log.append(entry)
        self.progress.update(self.evaluations, best=self.best_score, **{"of budget": of_budget})
        self.save(arrays)

    def save(self, arrays=None, result=None):
        """Write the state file (and, if given, a list of arrays beside it),
        and the log (with the verdict `result`, a dict, if given)."""
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
            atomic.write_json(self.log_path, {"method": self.method, "candidates": self.log,
                                              **({"result": result} if result is not None else {})})

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
        """End the progress bar's line (the search stopped, at its total or not)."""
        self.progress.finish()


def make_result(method, space, constraint, widths, score, run, stopped, model=None, plan=None, extra=None,
                check_latency=True, evaluate=None, verbose=None):
    """How every search ends: the `SearchResult` for `widths`, checked and judged.

    1. `kprune.search.result.result_for` builds the result (predicted
       resources, `met` from the prediction).
    2. A latency budget is checked on the exported file by
       `kprune.match_latency`'s loop (`check_latency`: True, or a dict of its
       keyword arguments; False to skip), which may re-fit the plan; a plan
       that misses the budget on the prediction already (a search stopped
       by a limit) is not checked. `evaluate` scores a re-fitted plan.
    3. The verdict (`result.summary()`) goes to the run's log file, and a
       result that misses its budget warns (`UserWarning`, see
       `kprune.search.result.missed_message`).

    `verbose` defaults to the run's (0 without a run).
    """
    result = result_for(method, space, constraint, widths, score, run, stopped, model=model, plan=plan, extra=extra)
    options = check_options(check_latency)
    if verbose is None:
        verbose = run.verbose if run is not None else 0
    if "latency_ms" in constraint.targets:
        if options is None:
            result.extra["latency_check_skipped"] = "check_latency=False"
        elif not result.met:
            result.extra["latency_check_skipped"] = "the plan misses the budget on the table's prediction"
        else:
            options.setdefault("evaluate", evaluate)
            result = closed_loop(result, verbose=verbose, **options)
            result.seconds += result.extra["latency_check"]["seconds"]
    if run is not None:
        run.save(result=result.summary())
    warn_if_missed(result)
    return result


def check_limit(name, value, kind=int):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
        kind is int and int(value) != value
    ):
        raise ValueError(f"Argument `{name}` must be a positive {kind.__name__} or None. Received: {name}={value!r}")
    return kind(value)


def space_and_constraint(model, budget, round_to, exclude, config_list, latency, importance="l2",
                         data=None, max_ratio=None, check_latency=True, verbose=0, heads="kv", method=None):
    """The `SearchSpace` and `Constraint` a search runs on (`check_latency`
    is validated here, before the search runs; `verbose` shows the progress
    of a `LatencyTable` built for a latency budget; `method` names the
    search in the errors of what it cannot do)."""
    check_options(check_latency)
    space = SearchSpace(model, round_to=round_to, exclude=exclude, config_list=config_list,
                        max_ratio=max_ratio, importance=importance, data=data, heads=heads)
    return space, constraint_for(space, budget, latency, verbose=verbose, method=method)


def constraint_for(space, budget, latency, verbose=0, method=None):
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
    return Constraint(space, budget, latency=latency, verbose=verbose, method=method)
