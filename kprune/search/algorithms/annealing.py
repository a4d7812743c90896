"""Simulated annealing over per-group pruning ratios (NNI's SimulatedAnnealingPruner).

The state is a ratio vector `s` (one pruning ratio per searched group).
Following NNI (and AutoCompress' prior that larger layers tolerate more
pruning), the ratios are kept sorted in the order of the groups' sizes --
here a group's size is the budgeted resource it saves when shrunk alone to
its narrowest width. A candidate is

    s' = rescale(assign_by_size(sort(max(0, s + u)))),   u_k ~ U(-m_T, m_T),
    m_T = perturbation_magnitude * T / start_temperature,

where `rescale` multiplies `s'` by the smallest factor that meets the budget
(`kprune.search.rescale.scale_to_budget`; NNI's closed form for a weight-count
budget, a bisection for any resource); candidates that cannot meet it with
every ratio below its group's maximum are redrawn, never clipped. Widths
move in `round_to` steps, so the rescaled widths then widen the groups that
lost most to rounding while the budget allows (`kprune.search.rescale.fill_budget`;
NNI prunes single weights and needs no such repair). The
candidate's channels are chosen by the base criterion (`importance`), the
pruned model is evaluated, and it is accepted when its score is higher, or
else with probability `exp(-|dE| / T)`, `dE = energy_scale * (score' -
score)` (Metropolis). On acceptance the temperature cools, `T <- T *
cool_down_rate`; the search stops at `T < stop_temperature`. The best
candidate seen is returned.

NNI's defaults are kept (`start_temperature=100`, `stop_temperature=20`,
`cool_down_rate=0.9`, `perturbation_magnitude=0.35`, `energy_scale=1`).
With accuracy in [0, 1] and T in [20, 100], `exp(-|dE|/T) > 0.95` for any
dE, so almost every candidate is accepted and the search is a random walk
that keeps the best: use `energy_scale=100` (accuracy in percent) or more
for a selective search. Rejections do not cool, so cap the evaluations
(`max_evaluations`).
"""

import numpy as np

from kprune.search.driver import make_result
from kprune.search.evaluation import MaskedCopy, data_evaluator
from kprune.search.options import SearchOptions
from kprune.search.rescale import fill_budget, max_ratios, rounding_priority, scale_to_budget


def assign_by_size(values, sizes):
    """`values` sorted ascending and handed out so that the smallest group
    (by `sizes`, ties by position) gets the smallest value.

    >>> assign_by_size([0.5, 0.1, 0.3], sizes=[30, 10, 20]).tolist()
    [0.5, 0.1, 0.3]
    >>> assign_by_size([0.1, 0.3, 0.5], sizes=[30, 10, 20]).tolist()
    [0.5, 0.1, 0.3]
    """
    values = np.sort(np.asarray(values, dtype=np.float64))
    order = np.argsort(np.asarray(sizes, dtype=np.float64), kind="stable")
    out = np.empty_like(values)
    out[order] = values
    return out


def perturb(ratios, magnitude, rng):
    """`max(0, s + u)` with `u_k ~ U(-magnitude, magnitude)`."""
    return np.maximum(0.0, np.asarray(ratios) + rng.uniform(-magnitude, magnitude, size=len(ratios)))


def metropolis(score, current, temperature, rng, energy_scale=1.0):
    """Accept a candidate (maximizing the score)? Returns `(accepted, probability)`.

    A better score is always accepted; a worse one with probability
    `exp(-energy_scale * |score - current| / temperature)`, decided by one
    `rng.uniform()` draw (made only for a worse score, as in NNI).

    >>> rng = np.random.default_rng(0)
    >>> metropolis(0.9, 0.8, 50.0, rng)
    (True, 1.0)
    >>> accepted, p = metropolis(0.5, 0.8, 10.0, np.random.default_rng(0), energy_scale=100)
    >>> accepted, round(p, 4)  # the draw is 0.637 > 0.0498
    (False, 0.0498)
    """
    if score > current:
        return True, 1.0
    probability = float(np.exp(-energy_scale * abs(score - current) / temperature))
    return bool(rng.uniform() < probability), probability


def feasible_candidate(draw, sizes, load, limits, space, rng, max_draws=1000):
    """Redraw `draw(rng, attempt)` until the sorted, size-assigned and rescaled
    ratios meet the budget with every ratio at most `limits`; the widths then
    get `fill_budget`'s rounding repair. Returns `(ratios, widths)` or
    `(None, None)` after `max_draws`."""
    for attempt in range(max_draws):
        ratios = assign_by_size(draw(rng, attempt), sizes)
        c, widths = scale_to_budget(ratios, load, limits, space.widths_from_ratios)
        if widths is not None:
            ratios = ratios * c
            return ratios, fill_budget(widths, space.allowed, load, rounding_priority(space, ratios))
    return None, None


def simulated_annealing(
    model,
    budget=None,
    evaluate=None,
    data=None,
    start_temperature=100.0,
    stop_temperature=20.0,
    cool_down_rate=0.9,
    perturbation_magnitude=0.35,
    energy_scale=1.0,
    options=None,
    **shared,
):
    """Search per-group pruning ratios under a budget by simulated annealing.

    Args:
        model: a Sequential or Functional Keras model (trained).
        budget: a `kprune.Budget` (or None with a config_list 'total_sparsity',
            which means `Budget(params=1 - total_sparsity)`).
        evaluate: `evaluate(model) -> float`, higher is better, run on the
            pruned candidate (one-shot, no fine-tuning); use a held-out part of
            the training data. Or None with `data`.
        data: `(x, y)` for the built-in top-1 accuracy. Defaults to None.
        start_temperature / stop_temperature / cool_down_rate /
            perturbation_magnitude: NNI's settings (defaults 100 / 20 / 0.9 / 0.35).
        energy_scale: multiplies score differences in the acceptance rule.
            Defaults to 1 (NNI); see the module docstring.
        options: a `kprune.search.SearchOptions` with the settings every search shares, or None.
        **shared: any `SearchOptions` setting by name (`importance`, `round_to`, `exclude`, `config_list`,
            `max_ratio`, `latency`, `seed`, `max_evaluations`, `max_time`, `state_path`, `log_path`,
            `verbose`, `check_latency`), overriding `options`; see `kprune.search.SearchOptions`.
            Without `max_evaluations` the bar's total is unknown: rejections do not cool.

    Returns:
        A `kprune.search.SearchResult` for the best candidate (the re-fitted
        plan if the latency check moved it). `result.met` says whether it
        meets the budget; a plan that does not also warns (`UserWarning`).

    Example:

    >>> import keras, numpy as np, kprune
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
    >>> score = lambda m: float(-np.abs(m.get_layer("c1").kernel.numpy()).sum())
    >>> result = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), score,
    ...                                     max_evaluations=10, verbose=0)
    >>> result.evaluations, result.load <= 1.0
    (10, True)
    """
    opts = SearchOptions.resolve("simulated_annealing", options, shared)
    seed = opts.seed
    for name, value in (("start_temperature", start_temperature), ("stop_temperature", stop_temperature),
                        ("perturbation_magnitude", perturbation_magnitude), ("energy_scale", energy_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"Argument `{name}` must be a number > 0. Received: {name}={value!r}")
    if not stop_temperature < start_temperature:
        raise ValueError(
            "Argument `stop_temperature` must be below `start_temperature`. Received: "
            f"stop_temperature={stop_temperature!r}, start_temperature={start_temperature!r}"
        )
    if not 0 < cool_down_rate < 1:
        raise ValueError(f"Argument `cool_down_rate` must be in (0, 1). Received: cool_down_rate={cool_down_rate!r}")
    evaluate = data_evaluator(evaluate, data)
    space, constraint = opts.space_and_constraint(model, budget, method="simulated_annealing")
    sizes = constraint.sizes()
    limits = max_ratios(space)
    settings = {"space": space.fingerprint(), "targets": constraint.targets, "seed": seed,
                "T": [start_temperature, stop_temperature, cool_down_rate], "m": perturbation_magnitude,
                "energy_scale": energy_scale, "importance": space.importance}
    run = opts.run("simulated_annealing", settings, budget=constraint.budget)
    state = run.state
    copy = MaskedCopy(space)

    def score_of(widths):
        return float(evaluate(copy.apply(space.plan(widths))))

    if not run.resumed:
        state.update(rng=np.random.default_rng(seed).bit_generator.state, temperature=float(start_temperature),
                     current=None, best=None)
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    stopped = None
    if state["current"] is None:  # always evaluated, whatever the limits
        # Initial state: uniform draws in [low, 1), raising `low` by 5% of the gap per retry (NNI v2).
        def initial(rng_, attempt):
            low = 1.0 - 0.95 ** attempt
            return rng_.uniform(low, 1.0, size=len(space))

        ratios, widths = feasible_candidate(initial, sizes, constraint.load, limits, space, rng)
        if widths is None:
            raise ValueError(
                f"No ratios meet {constraint.budget} with this model's groups (round_to={opts.round_to}): "
                "the budget is below what the narrowest widths give."
            )
        score = score_of(widths)
        state["current"] = {"ratios": ratios.tolist(), "widths": space.describe(widths), "score": score}
        state["best"] = dict(state["current"])
        state["rng"] = rng.bit_generator.state
        load = constraint.load(widths)
        run.record({"widths": space.describe(widths), "ratios": ratios.tolist(), "accepted": True,
                    "temperature": state["temperature"], "load": load}, score, of_budget=load)
    while state["current"] is not None and state["temperature"] >= stop_temperature:
        stopped = run.stop_reason()
        if stopped:
            break
        temperature = state["temperature"]
        magnitude = perturbation_magnitude * temperature / start_temperature
        current = np.array(state["current"]["ratios"])
        # feasible_candidate calls the lambda before it returns (in this iteration).
        ratios, widths = feasible_candidate(lambda r, _: perturb(current, magnitude, r), sizes,  # noqa: B023
                                            constraint.load, limits, space, rng)
        if widths is None:
            stopped = "unreachable"
            break
        score = score_of(widths)
        accepted, probability = metropolis(score, state["current"]["score"], temperature, rng, energy_scale)
        candidate = {"ratios": ratios.tolist(), "widths": space.describe(widths), "score": score}
        if accepted:
            state["current"] = candidate
            state["temperature"] = temperature * cool_down_rate
        if score > state["best"]["score"]:
            state["best"] = candidate
        state["rng"] = rng.bit_generator.state
        load = constraint.load(widths)
        run.record({"widths": candidate["widths"], "ratios": candidate["ratios"], "accepted": accepted,
                    "probability": probability, "temperature": temperature, "load": load}, score,
                   of_budget=load)
    stopped = stopped or run.stop_reason() or "done"
    run.finish()
    if state.get("best") is None:
        raise ValueError("The search stopped before evaluating any candidate: raise `max_evaluations`/`max_time`.")
    best = space.from_description(state["best"]["widths"])
    return make_result("simulated_annealing", space, constraint, best, state["best"]["score"], run, stopped,
                       extra={"temperature": state["temperature"]}, check_latency=opts.check_latency, evaluate=evaluate)
