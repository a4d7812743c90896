"""Budgets on parameters, MACs or LiteRT latency, and the models that predict them.

`Budget(params=None, macs=None, latency_ms=None)` states a target; a float
below 1 is a fraction of the dense model's figure, a number >= 1 an absolute
one. A search asks a `Constraint` (built from a `SearchSpace` and a budget)
for the resources of a width vector and for its *load*

    load(w) = max_k R_k(w) / B_k,

the largest ratio of predicted resource to target over the budget's
resources: the budget is met when `load(w) <= 1`.

Resources are predicted without building the pruned model:

* `params` and `macs`: `LayerCostModel` fits, for every layer, the bilinear
  form `c0 + c1 f_in + c2 f_out + c3 f_in f_out` in the kept fractions of its
  input and output channels (exact for convolutions, Dense, depthwise and
  separable convolutions, BatchNormalization: their weights and MACs are
  products of an input and an output width) to `kprune.stats.layer_stats` of
  a few pruned copies, and sums the layers;
* `latency_ms`: `kprune.latency.LatencyTable`, a per-layer lookup table
  measured in LiteRT and calibrated on whole exported files.

Example:

>>> import keras
>>> from kprune.space import SearchSpace
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

import numpy as np

from kprune.channels import remove_channels
from kprune.latency import LatencyTable
from kprune.space import LayerFractions
from kprune.stats import layer_stats

RESOURCES = ("params", "macs", "latency_ms")


class Budget:
    """A target on parameters, MACs and/or LiteRT latency (all must be met).

    Args:
        params: parameter count (conv/dense weights and biases, BatchNorm
            included), or a fraction (< 1) of the dense model's. Defaults to None.
        macs: multiply-accumulates for one example, or a fraction (< 1).
            Defaults to None.
        latency_ms: LiteRT latency of the exported float32 file on one
            thread, or a fraction (< 1) of the dense file's. Defaults to None.

    At least one must be given. (An absolute target below 1, such as 0.5 ms,
    cannot be written: give it as a fraction of the dense model's.)

    Example:

    >>> budget = Budget(macs=0.5)
    >>> budget
    Budget(macs=0.5)
    >>> budget.targets({"macs": 1000, "params": 40})
    {'macs': 500.0}
    >>> Budget.from_config(budget.get_config()) == budget
    True
    """

    def __init__(self, params=None, macs=None, latency_ms=None):
        values = {"params": params, "macs": macs, "latency_ms": latency_ms}
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not value > 0:
                raise ValueError(
                    f"Argument `{key}` must be a number > 0 (below 1: a fraction of the dense "
                    f"model's; from 1: an absolute figure). Received: {key}={value!r}"
                )
        if all(v is None for v in values.values()):
            raise ValueError(
                "A Budget needs at least one of `params`, `macs`, `latency_ms`. "
                "Received: params=None, macs=None, latency_ms=None"
            )
        self.params = None if params is None else float(params)
        self.macs = None if macs is None else float(macs)
        self.latency_ms = None if latency_ms is None else float(latency_ms)

    @property
    def kinds(self):
        """The budgeted resources, in the order `params`, `macs`, `latency_ms`."""
        return [k for k in RESOURCES if getattr(self, k) is not None]

    def targets(self, dense):
        """Absolute targets given the dense model's figures `{kind: value}`."""
        out = {}
        for kind in self.kinds:
            value = getattr(self, kind)
            out[kind] = value * float(dense[kind]) if value < 1.0 else value
        return out

    def get_config(self):
        return {"params": self.params, "macs": self.macs, "latency_ms": self.latency_ms}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, Budget) and self.get_config() == other.get_config()

    def __repr__(self):
        parts = [f"{k}={getattr(self, k):g}" for k in self.kinds]
        return f"Budget({', '.join(parts)})"


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
    >>> from kprune.space import SearchSpace
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
        space: a `kprune.space.SearchSpace`.
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
            model = space.model if np.array_equal(widths, space.dense) else remove_channels(space.model, space.plan(widths))
            cost = {}
            for row in layer_stats(model):
                cost[row.name] = cost.get(row.name, 0) + getattr(row, kind)
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
        space: a `kprune.space.SearchSpace`.
        budget: a `Budget`.
        latency: the `kprune.latency.LatencyTable` for `latency_ms` budgets
            (default: built for `space`, or read from its cache).

    Attributes:
        models: `{kind: callable(widths) -> value}`.
        dense / targets: `{kind: value}` of the dense model and the budget.
    """

    def __init__(self, space, budget, latency=None):
        if not isinstance(budget, Budget):
            raise ValueError(f"Argument `budget` must be a kprune.Budget. Received: budget={budget!r}")
        self.space, self.budget = space, budget
        fractions = LayerFractions(space)
        self.models = {}
        for kind in budget.kinds:
            if kind == "latency_ms":
                latency = LatencyTable(space) if latency is None else latency
                # The table may cover more widths than the search (a search's `max_ratio`).
                if not isinstance(latency, LatencyTable) or latency.space.names != space.names or any(
                        not np.isin(b, a).all() for a, b in zip(latency.space.allowed, space.allowed)):
                    raise ValueError(
                        "Argument `latency` must be a kprune.latency.LatencyTable built for the same "
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
