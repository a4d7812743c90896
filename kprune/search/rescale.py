"""Budget arithmetic on width vectors: scale ratios to a budget, repair the rounding.

Pure functions of a `load(widths) -> float` (at most 1 when the budget is met,
see `kprune.search.budget.Constraint`): `scale_to_budget` generalizes NNI's
rescaling of a sparsity vector to any monotone resource, `fill_budget`
repairs what rounding widths to `round_to` steps loses. The searches use them;
so can a new search (AutoCompress' annealing, AMC's action clipping).
"""

import numpy as np


def scale_to_budget(ratios, load, max_ratios, widths_of, iterations=40):
    """The smallest `c >= 0` with `load(widths_of(c * ratios)) <= 1`, and those widths.

    Generalizes NNI's rescaling (which multiplies the sparsities so that their
    weighted sum is the target) to any monotone resource: bisection on `c`
    over `[0, c_max]`, `c_max = min_k max_ratios[k] / ratios[k]`. Returns
    `(None, None)` when even `c_max` misses the budget (NNI rejects such a
    candidate; it is never clipped).

    Example (a linear resource, where NNI's closed form is c = 0.5 / 0.35):

    >>> import numpy as np
    >>> n = np.array([10.0, 30.0])
    >>> load = lambda r: np.sum(n * (1 - r)) / (0.5 * n.sum())
    >>> c, r = scale_to_budget(np.array([0.2, 0.4]), load, np.array([0.99, 0.99]), lambda r: r)
    >>> round(c, 6), round(float(load(r)), 6)
    (1.428571, 1.0)
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    positive = ratios > 0
    if not positive.any():
        return (0.0, widths_of(ratios)) if load(widths_of(ratios)) <= 1.0 else (None, None)
    high = float(np.min(np.asarray(max_ratios, dtype=np.float64)[positive] / ratios[positive]))
    if load(widths_of(high * ratios)) > 1.0:
        return None, None
    low = 0.0
    if load(widths_of(low * ratios)) <= 1.0:
        return 0.0, widths_of(0.0 * ratios)
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if load(widths_of(mid * ratios)) <= 1.0:
            high = mid
        else:
            low = mid
    return high, widths_of(high * ratios)


def fill_budget(widths, allowed, load, priority, slack=0.01, max_swaps=3):
    """Widen groups one allowed step at a time while the budget stays met.

    Channel widths move in `round_to` steps, so scaling ratios to a budget
    (or a greedy allocation) stops at the first vector that meets it, which
    can sit a whole step of some group below the budget. This repairs the
    rounding: among the groups whose next wider width keeps `load <= 1`, it
    widens the one with the highest `priority(k, widths)`, until none can.
    If the load is then still more than `slack` below 1, it tries *swaps*
    (one group a step narrower, another a step wider) and takes the one that
    brings the load closest to 1 without exceeding it, then widens again;
    at most `max_swaps` swaps. Defaults: slack 0.01, 3 swaps.

    Example (widths of 1..4; the second group has priority):

    >>> import numpy as np
    >>> allowed = [np.array([1, 2, 3, 4])] * 2
    >>> fill_budget(np.array([1, 1]), allowed, lambda w: w.sum() / 5.0, lambda k, w: k).tolist()
    [1, 4]
    >>> fill_budget(np.array([2, 2]), [np.array([2, 4]), np.array([1, 2])], lambda w: (w[0] + w[1]) / 5.0,
    ...             lambda k, w: 0).tolist()
    [4, 1]
    """
    widths = np.array(widths, dtype=np.int64)

    def step(k, direction):
        options = allowed[k]
        moved = options[options > widths[k]] if direction > 0 else options[options < widths[k]][::-1]
        return int(moved[0]) if len(moved) else None

    def widen():
        while True:
            best, best_priority = None, -np.inf
            for k in range(len(allowed)):
                wider = step(k, +1)
                if wider is None:
                    continue
                trial = widths.copy()
                trial[k] = wider
                if load(trial) <= 1.0 + 1e-12:
                    p = priority(k, widths)
                    if p > best_priority:
                        best, best_priority = (k, wider), p
            if best is None:
                return
            widths[best[0]] = best[1]

    widen()
    for _ in range(max_swaps):
        current = load(widths)
        if current >= 1.0 - slack:
            break
        best, best_load = None, current
        for up in range(len(allowed)):
            wider = step(up, +1)
            if wider is None:
                continue
            for down in range(len(allowed)):
                narrower = step(down, -1) if down != up else None
                if narrower is None:
                    continue
                trial = widths.copy()
                trial[up], trial[down] = wider, narrower
                trial_load = load(trial)
                if best_load < trial_load <= 1.0 + 1e-12:
                    best, best_load = trial, trial_load
        if best is None:
            break
        widths = best
        widen()
    return widths


def rounding_priority(space, ratios):
    """A `fill_budget` priority: the group whose width fell furthest below
    `channels * (1 - ratio)` (relative to its channel count) widens first."""
    goal = space.channels * (1.0 - np.asarray(ratios, dtype=np.float64))

    def priority(k, widths):
        return (goal[k] - widths[k]) / space.channels[k]

    return priority


def max_ratios(space):
    """Per group, the largest ratio its narrowest allowed width gives."""
    return space.ratios(space.min_widths)
