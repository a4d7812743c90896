"""Budgets on parameters, MACs or LiteRT latency, and the models that predict them.

A `Budget` states a target on each resource either as a fraction of the
dense model's figure (`params=`, `macs=`, `latency=`, in (0, 1]) or as an
absolute figure (`max_params=`, `max_macs=`: counts; `max_latency_ms=`:
milliseconds). A search asks a `Constraint` (built from a `SearchSpace` and
a budget) for the resources of a width vector and for its *load*

    load(w) = max_k R_k(w) / B_k,

the largest ratio of predicted resource to target over the budget's
resources: the budget is met when `load(w) <= 1`.

Resources are predicted without building the pruned model:

* `params` and `macs`: `LayerCostModel` fits, for every layer, the bilinear
  form `c0 + c1 f_in + c2 f_out + c3 f_in f_out` in the kept fractions of its
  input and output channels (exact for convolutions, Dense, depthwise and
  separable convolutions, BatchNormalization: their weights and MACs are
  products of an input and an output width; an attention layer, whose heads
  count among its outputs, is linear in its heads) to
  `kprune.stats.layer_stats` of a few pruned copies (a layer's rows with
  those of the layers it holds: an attention layer's query, key, value and
  output projections), and sums the layers;
* `latency_ms`: `kprune.search.latency_table.LatencyTable`, a per-layer lookup table
  measured in LiteRT and calibrated on whole exported files.

Example:

>>> import keras
>>> from kprune.search.space import SearchSpace
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(16, 3, name="c2"),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
>>> space = SearchSpace(model)
>>> constraint = Constraint(space, Budget(macs=0.5))
>>> constraint.dense["macs"], constraint.targets["macs"]
(104992.0, 52496.0)
>>> constraint.resources([16, 16])["macs"]
52576.0
>>> constraint.load([16, 8]) <= 1.0
True
"""

import warnings

import numpy as np

from kprune.channels.oneshot import remove_channels
from kprune.search.latency_table import LatencyTable, check_timeable
from kprune.search.space import LayerFractions
from kprune.stats.keras_stats import layer_stats

RESOURCES = ("params", "macs", "latency_ms")


# resource kind -> (fraction argument, absolute argument, what the absolute figure is)
ARGUMENTS = {
    "params": ("params", "max_params", "a parameter count"),
    "macs": ("macs", "max_macs", "multiply-accumulates for one example"),
    "latency_ms": ("latency", "max_latency_ms", "milliseconds"),
}


def _number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))


class Budget:
    """A target on parameters, MACs and/or LiteRT latency (all given targets must be met).

    Each resource takes either a fraction of the dense model's figure or an
    absolute figure, under two different names, so that no value is read
    two ways:

    | resource | fraction of dense, in (0, 1] | absolute |
    |---|---|---|
    | parameters | `params=0.5` | `max_params=120_000` (count) |
    | MACs | `macs=0.5` | `max_macs=2e6` (one example) |
    | latency | `latency=0.6` | `max_latency_ms=0.05` (ms) |

    Parameters count conv/dense weights and biases, BatchNorm included;
    latency is LiteRT's on the exported float32 file, one thread.

    Args:
        params / macs / latency: a fraction of the dense model's figure, in
            (0, 1]. Defaults to None.
        max_params / max_macs: an absolute count, >= 1. Defaults to None.
        max_latency_ms: an absolute latency in milliseconds, > 0 (below 1 ms
            too). Defaults to None.
        latency_ms: deprecated (it was a fraction below 1 and milliseconds
            from 1). A value from 1 still means milliseconds, with a
            `FutureWarning` naming `max_latency_ms`; a value below 1 raises,
            since it was a fraction and reads as milliseconds: write
            `latency=` or `max_latency_ms=`. Defaults to None.

    At least one must be given, and at most one per resource. The former
    spelling of an absolute count, `params=` or `macs=` above 1, still works
    with a `FutureWarning` naming `max_params=` / `max_macs=`.

    Example:

    >>> budget = Budget(macs=0.5, max_latency_ms=0.05)
    >>> budget
    Budget(macs=0.5, max_latency_ms=0.05)
    >>> budget.targets({"macs": 1000, "params": 40, "latency_ms": 0.09})
    {'macs': 500.0, 'latency_ms': 0.05}
    >>> budget.relative("macs"), budget.relative("latency_ms")
    (True, False)
    >>> Budget.from_config(budget.get_config()) == budget
    True
    """

    def __init__(self, params=None, macs=None, latency=None, max_params=None, max_macs=None, max_latency_ms=None,
                 latency_ms=None):
        given = {"params": params, "macs": macs, "latency": latency, "max_params": max_params,
                 "max_macs": max_macs, "max_latency_ms": max_latency_ms, "latency_ms": latency_ms}
        for key, value in given.items():
            if value is not None and not (_number(value) and value > 0):
                raise ValueError(f"Argument `{key}` must be a number > 0{_meaning(key)}. Received: {key}={value!r}")
        if latency_ms is not None:
            if latency_ms < 1:
                raise ValueError(
                    f"Argument `latency_ms` is ambiguous below 1: kprune read it as a fraction of the dense "
                    f"model's latency, and it reads as milliseconds. Received: latency_ms={latency_ms!r}. "
                    f"Write `latency={latency_ms!r}` for {latency_ms:.0%} of the dense model's latency, or "
                    f"`max_latency_ms={latency_ms!r}` for {latency_ms!r} ms."
                )
            warnings.warn(f"Argument `latency_ms` is deprecated. Received: latency_ms={latency_ms!r}, read as "
                          f"milliseconds; write `max_latency_ms={latency_ms!r}`.", FutureWarning, stacklevel=2)
            given["max_latency_ms"] = _one_of("latency_ms", latency_ms, "max_latency_ms", max_latency_ms)
        for fraction, absolute in (("params", "max_params"), ("macs", "max_macs")):
            value = given[fraction]
            if value is not None and value > 1:
                warnings.warn(
                    f"Argument `{fraction}` is a fraction of the dense model's figure, in (0, 1]; an absolute "
                    f"count above 1 is deprecated. Received: {fraction}={value!r}, read as a count; write "
                    f"`{absolute}={value!r}`.", FutureWarning, stacklevel=2)
                given[absolute] = _one_of(fraction, value, absolute, given[absolute])
                given[fraction] = None
        if given["latency"] is not None and given["latency"] > 1:
            raise ValueError(
                "Argument `latency` must be a fraction of the dense model's latency, in (0, 1]. Received: "
                f"latency={latency!r}. For milliseconds write `max_latency_ms={latency!r}`.")
        for key in ("max_params", "max_macs"):
            if given[key] is not None and given[key] < 1:
                fraction = key[len("max_"):]
                raise ValueError(
                    f"Argument `{key}` must be an absolute count >= 1. Received: {key}={given[key]!r}. For a "
                    f"fraction of the dense model's write `{fraction}={given[key]!r}`.")
        for fraction, absolute, _ in ARGUMENTS.values():
            if given[fraction] is not None and given[absolute] is not None:
                raise ValueError(
                    f"Pass either `{fraction}` (a fraction of the dense model's) or `{absolute}` (an absolute "
                    f"figure), not both. Received: {fraction}={given[fraction]!r}, "
                    f"{absolute}={given[absolute]!r}")
        names = [a for kind in ARGUMENTS.values() for a in kind[:2]]
        if all(given[n] is None for n in names):
            raise ValueError(
                "A Budget needs at least one of `params`, `macs`, `latency` (fractions of the dense model's) "
                "or `max_params`, `max_macs`, `max_latency_ms` (absolute). Received: none of them."
            )
        for name in names:
            setattr(self, name, None if given[name] is None else float(given[name]))

    @property
    def kinds(self):
        """The budgeted resources, in the order `params`, `macs`, `latency_ms`."""
        return [k for k, (f, a, _) in ARGUMENTS.items() if getattr(self, f) is not None or getattr(self, a) is not None]

    def relative(self, kind):
        """Whether the target on `kind` is a fraction of the dense model's."""
        return getattr(self, ARGUMENTS[kind][0]) is not None

    def value(self, kind):
        """The target on `kind` as given: a fraction or an absolute figure."""
        fraction, absolute, _ = ARGUMENTS[kind]
        return getattr(self, fraction) if self.relative(kind) else getattr(self, absolute)

    def targets(self, dense):
        """Absolute targets given the dense model's figures `{kind: value}`."""
        return {kind: self.value(kind) * float(dense[kind]) if self.relative(kind) else self.value(kind)
                for kind in self.kinds}

    def get_config(self):
        return {name: getattr(self, name) for kind in ARGUMENTS.values() for name in kind[:2]}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, Budget) and self.get_config() == other.get_config()

    def __repr__(self):
        parts = [f"{k}={v:g}" for k, v in self.get_config().items() if v is not None]
        return f"Budget({', '.join(parts)})"


def _meaning(key):
    for fraction, absolute, unit in ARGUMENTS.values():
        if key == fraction:
            return " (a fraction of the dense model's figure, in (0, 1])"
        if key == absolute:
            return f" ({unit})"
    return ""


def _one_of(old, old_value, new, new_value):
    if new_value is not None:
        raise ValueError(f"Pass either `{old}` (deprecated) or `{new}`, not both. Received: {old}={old_value!r}, "
                         f"{new}={new_value!r}")
    return old_value


# ------------------------------------------------------------ resource models


def bilinear_features(f_in, f_out):
    """The design matrix `[1, f_in, f_out, f_in f_out]` (one row per sample)."""
    f_in, f_out = np.asarray(f_in, np.float64), np.asarray(f_out, np.float64)
    return np.stack([np.ones_like(f_in), f_in, f_out, f_in * f_out], axis=-1)


def design_points(space, samples=0, seed=0):
    """Width vectors that identify every layer's bilinear cost, plus `samples` random ones.

    Random widths alone can leave a layer's coefficients unidentified (a
    group with two allowed widths may sit at the same one in every sample,
    or two groups move together); the least-squares fit then matches the
    samples but not the narrow plans a search reaches (it predicted 0.49999
    of MobileNetV2's MACs for a plan at 0.505). The design: the dense and the
    narrowest widths, and for every bit b of the group index the groups
    whose bit b is 1 at their narrowest (the others full), and the
    complement. Any two groups differ in some bit, so every layer reading
    group A and writing group B sees all four corners of (A, B).

    >>> import keras
    >>> from kprune.search.space import SearchSpace
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(16, 3, name="a"),
    ...     keras.layers.Conv2D(16, 3, name="b"), keras.layers.Conv2D(16, 3, name="c"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="head")])
    >>> [p.tolist() for p in design_points(SearchSpace(model))]
    [[16, 16, 16], [8, 8, 8], [16, 8, 16], [8, 16, 8], [16, 16, 8], [8, 8, 16]]
    """
    n = len(space)
    points = [space.dense, space.min_widths.copy()]
    index = np.arange(n)
    for bit in range(max(1, int(np.ceil(np.log2(max(n, 2)))))):
        narrow = (index >> bit) & 1 == 1
        for side in (narrow, ~narrow):
            points.append(np.where(side, space.min_widths, space.dense))
    rng = np.random.default_rng(seed)
    points += [np.array([rng.choice(a) for a in space.allowed]) for _ in range(samples)]
    unique, seen = [], set()
    for p in points:
        if tuple(p) not in seen:
            seen.add(tuple(p))
            unique.append(p)
    return unique


class LayerCostModel:
    """Parameters or MACs of the pruned model as a function of the widths.

    Fits each layer's bilinear cost (see the module docstring) to
    `kprune.stats.layer_stats` of pruned copies at the widths of
    `design_points` (which put the input and output groups of every layer at
    all four corners narrowest/full, so that each layer's four coefficients
    are identified), then predicts by summing the layers. `max_fit_error` is
    the largest absolute residual of the fit (0 when the cost is bilinear,
    as it is for every layer kprune counts).

    Args:
        space: a `kprune.search.space.SearchSpace`.
        kind: "params" or "macs".
        samples: random pruned copies fitted on besides the design. Defaults to 2.
        seed: for the random widths. Defaults to 0.
    """

    def __init__(self, space, kind, samples=2, seed=0, fractions=None):
        if kind not in ("params", "macs"):
            raise ValueError(f"Argument `kind` must be 'params' or 'macs'. Received: kind={kind!r}")
        self.kind = kind
        self.space = space
        self.fractions = fractions or LayerFractions(space)
        points = design_points(space, samples, seed)
        names = self.fractions.layers
        ys, feats = [], []
        self.other = 0.0
        for widths in points:
            model = (space.model if np.array_equal(widths, space.dense)
                     else remove_channels(space.model, space.plan(widths)))
            cost = {}
            for row in layer_stats(model):  # a layer's rows: its own and those of the layers it holds
                name = self.fractions.layer_of(row.name) or row.name
                cost[name] = cost.get(name, 0) + getattr(row, kind)
            ys.append([cost.pop(n, 0) for n in names])
            if widths is points[0]:
                self.other = float(sum(cost.values()))  # layers no group touches
            feats.append(bilinear_features(*self.fractions.fractions(widths)))
        ys = np.array(ys, dtype=np.float64)  # (samples, layers)
        feats = np.array(feats)  # (samples, layers, 4)
        self.coef = np.zeros((len(names), 4))
        residual = 0.0
        for j in range(len(names)):
            coef, *_ = np.linalg.lstsq(feats[:, j, :], ys[:, j], rcond=None)
            self.coef[j] = coef
            residual = max(residual, float(np.max(np.abs(feats[:, j, :] @ coef - ys[:, j]))))
        self.max_fit_error = residual
        self.dense = float(self(space.dense))

    def per_layer(self, widths):
        return np.sum(bilinear_features(*self.fractions.fractions(widths)) * self.coef, axis=-1)

    def __call__(self, widths):
        # Costs are integers; rounding drops the fit's floating-point noise.
        return float(np.round(np.sum(self.per_layer(widths)) + self.other))


class Constraint:
    """A budget over a search space: resources, targets and load of width vectors.

    Args:
        space: a `kprune.search.space.SearchSpace`.
        budget: a `Budget`.
        latency: the `kprune.search.latency_table.LatencyTable` for latency budgets
            (default: built for `space`, or read from its cache).
        verbose: the progress bar of a table built here (1) or none (0).
            Defaults to 0.
        method: the search's name, for the error of a latency budget on a
            model the table cannot time. Defaults to None.

    Attributes:
        models: `{kind: callable(widths) -> value}`.
        dense / targets: `{kind: value}` of the dense model and the budget.
    """

    def __init__(self, space, budget, latency=None, verbose=0, method=None):
        if not isinstance(budget, Budget):
            raise ValueError(f"Argument `budget` must be a kprune.Budget. Received: budget={budget!r}")
        self.space, self.budget = space, budget
        fractions = LayerFractions(space)
        self.models = {}
        for kind in budget.kinds:
            if kind == "latency_ms":
                check_timeable(space, method)
                latency = LatencyTable(space, verbose=verbose) if latency is None else latency
                # The table may cover more widths than the search (a search's `max_ratio`).
                if not isinstance(latency, LatencyTable) or latency.space.names != space.names or any(
                        not np.isin(b, a).all() for a, b in zip(latency.space.allowed, space.allowed)):
                    raise ValueError(
                        "Argument `latency` must be a kprune.search.latency_table.LatencyTable built for the same "
                        "model, round_to and excluded layers as the search. Received: "
                        f"latency={latency!r}"
                    )
                self.models[kind] = latency
            else:
                self.models[kind] = LayerCostModel(space, kind, fractions=fractions)
        self.dense = {kind: float(m(space.dense)) for kind, m in self.models.items()}
        self.targets = budget.targets(self.dense)
        # The tightest resource (highest dense load) sizes the groups for the annealing prior.
        self.primary = max(budget.kinds, key=lambda k: self.dense[k] / self.targets[k])

    def resources(self, widths):
        """Predicted `{kind: value}` of the model pruned to `widths`."""
        return {kind: float(m(widths)) for kind, m in self.models.items()}

    def load(self, widths):
        """`max_k R_k(widths) / B_k`: at most 1 when the budget is met."""
        return max(m(widths) / self.targets[kind] for kind, m in self.models.items())

    def met(self, widths):
        return self.load(widths) <= 1.0 + 1e-12

    def sizes(self):
        """Per group: the primary resource saved by shrinking it alone to its
        narrowest width (the "layer size" of the annealing prior)."""
        model = self.models[self.primary]
        dense = model(self.space.dense)
        out = []
        for k in range(len(self.space)):
            widths = self.space.dense
            widths[k] = self.space.min_widths[k]
            out.append(dense - model(widths))
        return np.array(out)
