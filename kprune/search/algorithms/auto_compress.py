"""AutoCompress (Liu et al., AAAI 2020): annealed per-group widths reached by ADMM, in rounds.

Round i of `num_iterations` (N) targets the budget's share
`B_i = D (B / D)^(i/N)` of every budgeted resource (D = the dense model's):
NNI's geometric schedule, `1 - (1 - S)^(i/N)` for a sparsity S, expressed
relative to the original model. In each round:

1. simulated annealing (NNI's rule, `kprune.search.algorithms.annealing`: perturb the ratios,
   keep them sorted by group size, rescale to `B_i`, Metropolis acceptance,
   cool by `cool_down_rate` on acceptance) picks per-group widths, never
   wider than the previous round's; a candidate is scored by `evaluate` on
   the current weights with its channels removed by the base criterion
   (channels earlier rounds pruned are zero and go first);
2. ADMM (`kprune.ADMM`, channel target) trains the model towards the
   chosen widths for `admm_num_iterations` rounds of `admm_training_epochs`
   epochs, with the user's `train`;
3. the model is hard-pruned to those widths (and fine-tuned with the pruned
   channels held at zero for `fine_tune_epochs`, optionally).

The last round's widths meet the budget. NNI's defaults: 3 rounds, SA
(100, 20, 0.9, 0.35), ADMM 30 x 5 epochs, rho 1e-4. Purification and column
pruning from the paper are not done (NNI does neither).

State: an interrupted search resumes at the annealing candidate where it
stopped, or, if ADMM was running, at the start of that round's ADMM phase
(from the weights saved after the previous round).
"""

import numpy as np

from kprune.channels.oneshot import reduced_copy
from kprune.search.algorithms.admm import ADMM
from kprune.search.algorithms.annealing import assign_by_size, metropolis, perturb
from kprune.search.driver import make_result
from kprune.search.evaluation import MaskedCopy, data_evaluator
from kprune.search.options import SearchOptions
from kprune.search.rescale import fill_budget, max_ratios, rounding_priority, scale_to_budget


def round_targets(targets, dense, iteration, num_iterations):
    """`{kind: D (B / D)^(i/N)}`: round i's share of the budget.

    >>> round_targets({"macs": 25.0}, {"macs": 100.0}, 1, 2)
    {'macs': 50.0}
    """
    return {k: float(dense[k] * (targets[k] / dense[k]) ** (iteration / num_iterations)) for k in targets}


def load_function(models, targets):
    """`load(widths) = max_k R_k(widths) / targets[k]` over the resource models."""

    def load(widths):
        return max(models[k](widths) / targets[k] for k in targets)

    return load


def capped_candidate(draw, rng, sizes, load, limits, space, cap, max_draws=1000):
    """Like `kprune.search.algorithms.annealing.feasible_candidate`, with widths at most `cap`
    (a round never widens a group). Returns `(ratios, widths)` or `(None, None)`."""
    allowed = [a[a <= c] for a, c in zip(space.allowed, cap)]

    def widths_of(ratios):
        return np.minimum(space.widths_from_ratios(ratios), cap)

    for attempt in range(max_draws):
        ratios = assign_by_size(draw(rng, attempt), sizes)
        c, widths = scale_to_budget(ratios, load, limits, widths_of)
        if widths is not None:
            ratios = ratios * c
            return ratios, fill_budget(widths, allowed, load, rounding_priority(space, ratios))
    return None, None


def auto_compress(
    model,
    budget=None,
    evaluate=None,
    train=None,
    data=None,
    num_iterations=3,
    cool_down_rate=0.9,
    start_temperature=100.0,
    stop_temperature=20.0,
    perturbation_magnitude=0.35,
    energy_scale=1.0,
    sa_max_evaluations=None,
    admm_num_iterations=30,
    admm_training_epochs=5,
    rho=1e-4,
    fine_tune_epochs=0,
    options=None,
    **shared,
):
    """AutoCompress: rounds of (annealing picks widths -> ADMM reaches them -> hard prune).

    Args:
        model: a Sequential or Functional Keras model (trained; not changed).
        budget: a `kprune.Budget` (or None with a config_list 'total_sparsity').
        evaluate: `evaluate(model) -> float`, higher is better, on held-out
            training data; or None with `data=(x, y)` (top-1 accuracy).
        train: `train(model, epochs, callbacks)`: fits `model` (a copy of the
            model, uncompiled on the first call: compile it in `train` when
            `getattr(model, "optimizer", None) is None`) for
            `epochs` epochs passing `callbacks` to `fit`.
        num_iterations: rounds. Defaults to 3 (NNI).
        cool_down_rate / start_temperature / stop_temperature /
            perturbation_magnitude / energy_scale: the annealing (defaults 0.9
            / 100 / 20 / 0.35 / 1, as `kprune.simulated_annealing`).
        sa_max_evaluations: caps each round's annealing evaluations. Defaults to None.
        admm_num_iterations / admm_training_epochs / rho: ADMM rounds, epochs
            per round and penalty. Defaults to 30 / 5 / 1e-4 (NNI).
        fine_tune_epochs: masked fine-tune after each hard prune. Defaults to 0.
        options: a `kprune.search.SearchOptions` with the settings every search shares, or None.
        **shared: any `SearchOptions` setting by name (`importance`, `round_to`, `exclude`, `config_list`,
            `max_ratio`, `latency`, `seed`, `max_evaluations`, `max_time`, `state_path`, `log_path`,
            `verbose`, `check_latency`), overriding `options`; see `kprune.search.SearchOptions`.
            `seed` seeds the annealing (`train` seeds its own training).

    Returns:
        A `kprune.search.SearchResult`; `.model` is the pruned model (channels
        removed) with the ADMM-trained weights (None if the latency check
        re-fitted the plan). A search stopped by a limit returns the last
        finished round (the dense model if none finished, with `stopped`
        saying why, `met` False and a `UserWarning`); resume it with the
        same `state_path`.

    Example:

    >>> import keras, numpy as np, kprune
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
    >>> x, y = np.random.default_rng(0).normal(size=(32, 8, 8, 3)), np.zeros(32, "int64")
    >>> def train(m, epochs, callbacks):
    ...     if getattr(m, "optimizer", None) is None:
    ...         m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ...     m.fit(x, y, epochs=epochs, verbose=0, callbacks=callbacks)
    >>> score = lambda m: float(-np.abs(m.get_layer("c1").kernel.numpy()).sum())
    >>> result = kprune.auto_compress(model, kprune.Budget(macs=0.5), score, train, num_iterations=2,
    ...     sa_max_evaluations=3, admm_num_iterations=1, admm_training_epochs=1, verbose=0)
    >>> result.load <= 1.0, kprune.count_macs(result.model) <= 0.5 * kprune.count_macs(model)
    (True, True)
    """
    opts = SearchOptions.resolve("auto_compress", options, shared)
    seed = opts.seed
    if not callable(train):
        raise ValueError(f"Argument `train` must be a callable `train(model, epochs, callbacks)`. Received: {train!r}")
    for name, value in (("num_iterations", num_iterations), ("admm_num_iterations", admm_num_iterations),
                        ("admm_training_epochs", admm_training_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Argument `{name}` must be an int >= 1. Received: {name}={value!r}")
    if not 0 < cool_down_rate < 1:
        raise ValueError(f"Argument `cool_down_rate` must be in (0, 1). Received: cool_down_rate={cool_down_rate!r}")
    if not 0 < stop_temperature < start_temperature:
        raise ValueError(
            "Arguments `stop_temperature` and `start_temperature` must satisfy 0 < stop < start. Received: "
            f"stop_temperature={stop_temperature!r}, start_temperature={start_temperature!r}")
    evaluate = data_evaluator(evaluate, data)
    space, constraint = opts.space_and_constraint(model, budget, method="auto_compress")
    if not constraint.met(space.min_widths):
        raise ValueError(f"No widths meet {constraint.budget} with this model's groups (round_to={opts.round_to}).")
    sizes, limits = constraint.sizes(), max_ratios(space)
    settings = {"space": space.fingerprint(), "targets": constraint.targets, "seed": seed,
                "rounds": num_iterations, "T": [start_temperature, stop_temperature, cool_down_rate],
                "m": perturbation_magnitude, "energy_scale": energy_scale, "sa_max": sa_max_evaluations,
                "admm": [admm_num_iterations, admm_training_epochs, rho, fine_tune_epochs],
                "importance": space.importance}
    run = opts.run("auto_compress", settings, budget=constraint.budget)
    state = run.state
    copy = MaskedCopy(space)
    weights = (run.load_arrays() if run.resumed else None) or list(copy.base)
    if not run.resumed:
        state.update(iteration=1, phase="sa", widths=space.describe(space.dense), sa=None, score=None)
    stopped = None
    while state["iteration"] <= num_iterations:
        i = state["iteration"]
        cap = space.from_description(state["widths"])
        load = load_function(constraint.models, round_targets(constraint.targets, constraint.dense, i,
                                                              num_iterations))
        copy.apply(space.plan(cap), weights)
        scores = [space.scores_on(copy.graph, k) for k in range(len(space))]

        def score_of(widths):  # used by anneal() below, in this iteration (before `weights` changes)
            return float(evaluate(copy.apply(space.plan(widths, scores), weights)))  # noqa: B023

        if state["phase"] == "sa":
            stopped = anneal(state, run, space, sizes, load, limits, cap, score_of, seed, start_temperature,
                             stop_temperature, cool_down_rate, perturbation_magnitude, energy_scale,
                             sa_max_evaluations)
            if stopped:
                break
            state["phase"] = "admm"
            run.save()
        stopped = run.stop_reason()
        if stopped:
            break
        widths = space.from_description(state["sa"]["best"]["widths"])
        copy.apply(space.plan(cap, scores), weights)
        callback = ADMM(copy.model, widths=space.describe(widths), rho=rho, admm_epochs=admm_training_epochs,
                        exclude=space.exclude, heads=space.heads)
        train(copy.model, admm_num_iterations * admm_training_epochs, [callback])
        callback.hard_prune()
        if fine_tune_epochs:
            train(copy.model, fine_tune_epochs, [callback.keep_masks()])
        weights = copy.weights()
        score = float(evaluate(copy.model))
        state.update(iteration=i + 1, phase="sa", widths=space.describe(widths), sa=None, score=score)
        run.record({"iteration": i, "phase": "admm", "widths": space.describe(widths), "load": load(widths),
                    "residuals": [h["residual"] for h in callback.history]}, score, arrays=weights,
                   of_budget=constraint.load(widths))
    run.finish()
    if state["iteration"] <= num_iterations:  # interrupted: the last finished round (the dense model before any)
        stopped = stopped or "max_evaluations"
    widths = space.from_description(state["widths"])
    copy.apply(space.plan(space.dense), weights)
    plan = space.plan(widths, [space.scores_on(copy.graph, k) for k in range(len(space))])
    pruned = reduced_copy(copy.apply(plan, weights), plan)
    return make_result("auto_compress", space, constraint, widths, state["score"], run, stopped or "done",
                       model=pruned, plan=plan, extra={"iterations": state["iteration"] - 1},
                       check_latency=opts.check_latency)


def anneal(state, run, space, sizes, load, limits, cap, score_of, seed, start_temperature, stop_temperature,
           cool_down_rate, magnitude0, energy_scale, max_evaluations):
    """One round's simulated annealing, resumable through `state["sa"]`.
    Returns a stop reason of the run, or None when the round's search ended."""
    i = state["iteration"]
    if state["sa"] is None:
        rng = np.random.default_rng([seed, i])
        ratios, widths = capped_candidate(lambda r, attempt: r.uniform(1.0 - 0.95 ** attempt, 1.0, len(space)),
                                          rng, sizes, load, limits, space, cap)
        if widths is None:
            raise ValueError(f"Round {i}: no widths below the previous round's meet its budget share.")
        score = score_of(widths)
        current = {"ratios": ratios.tolist(), "widths": space.describe(widths), "score": score}
        state["sa"] = {"rng": rng.bit_generator.state, "temperature": float(start_temperature),
                       "current": current, "best": dict(current), "evaluations": 1}
        run.record({"iteration": i, "phase": "sa", "widths": current["widths"], "accepted": True,
                    "load": load(widths)}, score)
    sa = state["sa"]
    rng = np.random.default_rng()
    rng.bit_generator.state = sa["rng"]
    while sa["temperature"] >= stop_temperature:
        if max_evaluations is not None and sa["evaluations"] >= max_evaluations:
            break
        stopped = run.stop_reason()
        if stopped:
            return stopped
        temperature = sa["temperature"]
        current = np.array(sa["current"]["ratios"])
        # capped_candidate calls the lambda before it returns (in this iteration).
        ratios, widths = capped_candidate(
            lambda r, _: perturb(current, magnitude0 * temperature / start_temperature, r),  # noqa: B023
            rng, sizes, load, limits, space, cap)
        if widths is None:
            break
        score = score_of(widths)
        accepted, _ = metropolis(score, sa["current"]["score"], temperature, rng, energy_scale)
        candidate = {"ratios": ratios.tolist(), "widths": space.describe(widths), "score": score}
        if accepted:
            sa["current"], sa["temperature"] = candidate, temperature * cool_down_rate
        if score > sa["best"]["score"]:
            sa["best"] = candidate
        sa["evaluations"] += 1
        sa["rng"] = rng.bit_generator.state
        run.record({"iteration": i, "phase": "sa", "widths": candidate["widths"], "accepted": accepted,
                    "temperature": temperature, "load": load(widths)}, score)
    return None
