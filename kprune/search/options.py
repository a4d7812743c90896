"""What every search shares, stated once: `SearchOptions`.

Every search (`uniform`, `sensitivity`, `netadapt`, `simulated_annealing`,
`auto_compress`, `amc`) takes the same fourteen settings -- how the space is
built, how the budget is predicted and checked, when the search stops, where
it keeps its state and log, what it shows. They are documented here once; a
search takes them as keyword arguments (`kprune.netadapt(...,
max_evaluations=40)`), as an `options=SearchOptions(...)` object shared by
several searches, or both (keywords win):

>>> import kprune
>>> shared = kprune.search.SearchOptions(round_to=4, max_evaluations=20, verbose=0)
>>> shared.replace(max_evaluations=5).max_evaluations, shared.round_to
(5, 4)
>>> kprune.search.SearchOptions(round_to=0)
Traceback (most recent call last):
...
ValueError: Argument `round_to` must be an integer >= 1. Received: round_to=0
"""

import numbers

from kprune.dependency.channel_graph import HEAD_MODES
from kprune.search.driver import SearchRun, check_limit, space_and_constraint
from kprune.search.latency_check import check_options
from kprune.utils.validation import check_round_to


class SearchOptions:
    """The settings every search shares.

    Args:
        importance: the criterion choosing which channels of a group go at a
            given width (`"l2"`, `"l1"`, `"fpgm"`, `"bn_scale"`, a data
            criterion with the search's `data`, or a callable). Defaults to "l2".
        round_to: widths are multiples of this (a group of at most
            `round_to` channels is kept whole). Defaults to 8.
        exclude: layer names whose groups keep their width. Defaults to ().
        heads: the unit of a transformer's grouped-query attention, as in
            `kprune.plan_channels`: `"kv"` (a key/value head with its query
            heads) or `"query"` (query heads, the same number from every
            key/value group; what a KerasHub model with grouped-query
            attention needs for per-layer widths). Defaults to "kv".
        config_list: NNI's `config_list` (`'op_types'`, `'op_names'`,
            `'exclude'`, `'max_sparsity_per_layer'` caps a group,
            `'total_sparsity'` is a parameter budget). Defaults to None.
        max_ratio: the largest fraction of any group's channels a search may
            prune, or None for no bound (down to `round_to` channels).
            Defaults to None (AMC's own default is 0.8).
        latency: the `kprune.LatencyTable` for a latency budget, or None to
            build one for the model (or read it from its on-disk cache).
        seed: seeds every random draw of the search. Defaults to 0.
        max_evaluations: stop after this many evaluations (all sessions
            counted), or None. A search stopped above its budget warns and
            returns `result.met` False.
        max_time: stop this session after this many seconds, or None. A
            search's verdict never depends on it in kprune's tests; prefer
            `max_evaluations` for reproducible runs.
        state_path: a JSON state file written after every evaluation; an
            interrupted search given the same file resumes where it stopped.
            Defaults to None.
        log_path: a JSON file listing every candidate and, at the end, the
            verdict (`"result"`: met, stopped, ...). Defaults to None.
        verbose: 1 for progress bars -- the latency table's (when it is
            built), the search's (the best score so far, and "of budget": the
            candidate's predicted resources over the budget, at most 1 when
            met; the total is the number of evaluations when it is known in
            advance, else the count alone) and the latency check's -- or 0
            for none. Defaults to 1.
        check_latency: with a latency budget, check the chosen plan on its
            exported file and re-fit it until it lands within 3% of the
            budget (`kprune.match_latency`, run with the `LatencyTable`'s
            clock) before returning. True (default), False to return the
            table's prediction unchecked, or a dict of `kprune.match_latency`
            keyword arguments (`{"tolerance": 0.02, "timer": ...}`).
    """

    def __init__(self, importance="l2", round_to=8, exclude=(), config_list=None, max_ratio=None, latency=None,
                 seed=0, max_evaluations=None, max_time=None, state_path=None, log_path=None, verbose=1,
                 check_latency=True, heads="kv"):
        self.importance = importance
        self.round_to = check_round_to(round_to)
        if isinstance(exclude, str):
            exclude = (exclude,)
        self.exclude = tuple(exclude)
        self.config_list = config_list
        if max_ratio is not None and (isinstance(max_ratio, bool) or not isinstance(max_ratio, numbers.Real)
                                      or not 0 < max_ratio < 1):
            raise ValueError(
                f"Argument `max_ratio` must be a number in (0, 1) or None. Received: max_ratio={max_ratio!r}"
            )
        self.max_ratio = max_ratio
        self.latency = latency
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"Argument `seed` must be an integer >= 0. Received: seed={seed!r}")
        self.seed = int(seed)
        self.max_evaluations = check_limit("max_evaluations", max_evaluations)
        self.max_time = check_limit("max_time", max_time, float)
        self.state_path, self.log_path = state_path, log_path
        if not isinstance(verbose, numbers.Integral) or verbose < 0:
            raise ValueError(
                f"Argument `verbose` must be 0 (silent) or 1 (progress bars). Received: verbose={verbose!r}"
            )
        self.verbose = int(bool(verbose))
        check_options(check_latency)
        self.check_latency = check_latency
        if heads not in HEAD_MODES:
            raise ValueError(f"Argument `heads` must be one of {HEAD_MODES}. Received: heads={heads!r}")
        self.heads = heads

    NAMES = ("importance", "round_to", "exclude", "config_list", "max_ratio", "latency", "seed", "max_evaluations",
             "max_time", "state_path", "log_path", "verbose", "check_latency", "heads")

    def replace(self, **changes):
        """A copy with some settings changed (validated as in the constructor)."""
        return SearchOptions(**{**{name: getattr(self, name) for name in self.NAMES}, **changes})

    def __repr__(self):
        defaults = SearchOptions()
        changed = [f"{n}={getattr(self, n)!r}" for n in self.NAMES if getattr(self, n) != getattr(defaults, n)]
        return f"SearchOptions({', '.join(changed)})"

    @classmethod
    def resolve(cls, method, options=None, overrides=None, defaults=None):
        """The options a search runs with: `defaults` (the search's own, e.g.
        AMC's `max_ratio=0.8`), then `options`, then keyword `overrides`.

        Raises a `TypeError` naming the search for a keyword that is not a
        shared setting (a misspelt argument must not be ignored).
        """
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(cls.NAMES))
        if unknown:
            raise TypeError(
                f"{method}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}. Its own "
                f"arguments are listed in its docstring; the shared ones are {', '.join(cls.NAMES)} "
                "(kprune.search.SearchOptions).")
        if options is not None and not isinstance(options, SearchOptions):
            raise TypeError(f"Argument `options` must be a kprune.search.SearchOptions or None. "
                            f"Received: options={options!r}")
        base = options if options is not None else SearchOptions(**(defaults or {}))
        return base.replace(**overrides) if overrides else base

    def space_and_constraint(self, model, budget, data=None, method=None):
        """The `SearchSpace` and `Constraint` a search runs on (`method`: the
        search's name, for its errors)."""
        return space_and_constraint(model, budget, self.round_to, self.exclude, self.config_list, self.latency,
                                    importance=self.importance, data=data, max_ratio=self.max_ratio,
                                    check_latency=self.check_latency, verbose=self.verbose, heads=self.heads,
                                    method=method)

    def run(self, method, settings, budget=None, **kwargs):
        """The `SearchRun` (progress, limits, log, state file) of a search."""
        return SearchRun(method, settings, self.state_path, self.log_path, self.max_evaluations, self.max_time,
                         self.verbose, budget=budget, **kwargs)

