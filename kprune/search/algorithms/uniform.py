"""The baseline every search is compared with: the same pruning ratio for every group.

Example:

>>> import keras, kprune
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
>>> result = kprune.search.uniform(model, kprune.Budget(macs=0.5), verbose=0)
>>> result.widths, result.met
({'c1': 24, 'c2': 16}, True)
"""

import time

import numpy as np

from kprune.search.driver import make_result
from kprune.search.options import SearchOptions
from kprune.search.rescale import fill_budget, rounding_priority, scale_to_budget


def uniform(model, budget, fill=True, options=None, **shared):
    """The same pruning ratio for every group: the smallest that meets `budget`.

    Args:
        model: a Sequential or Functional Keras model.
        budget: a `kprune.Budget`.
        fill: repair the rounding to `round_to` steps with `kprune.search.rescale.fill_budget`
            (the groups that lost most to rounding widen one step while the
            budget allows), so the result sits at the budget rather than up
            to a step of every group below it. Defaults to True.
        options: a `kprune.search.SearchOptions`, or None.
        **shared: any `SearchOptions` setting by name, overriding `options`;
            `uniform` uses `round_to`, `exclude`, `config_list`, `latency`,
            `check_latency` and `verbose` (progress of the latency table and
            check), and evaluates no candidate.

    Returns:
        A `SearchResult` (not evaluated: `score` is None).
    """
    started = time.perf_counter()
    opts = SearchOptions.resolve("uniform", options, shared)
    space, constraint = opts.space_and_constraint(model, budget, method="uniform")
    # Ratios beyond a group's narrowest width snap to it.
    c, widths = scale_to_budget(np.ones(len(space)), constraint.load, np.full(len(space), 0.999999),
                                space.widths_from_ratios)
    stopped = "budget met"
    if widths is None:
        widths, stopped = space.min_widths, "unreachable"
    elif fill:
        widths = fill_budget(widths, space.allowed, constraint.load, rounding_priority(space, np.full(len(space), c)))
    seconds = time.perf_counter() - started
    result = make_result("uniform", space, constraint, widths, None, None, stopped,
                         extra={"ratio": None if c is None else float(c)}, check_latency=opts.check_latency,
                         verbose=opts.verbose)
    result.seconds += seconds
    return result
