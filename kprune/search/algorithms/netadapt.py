"""NetAdapt (Yang et al., ECCV 2018): shrink one group per iteration until the budget is met.

Iteration i lowers the budget load (`kprune.search.budget.Constraint.load`, 1 =
budget met) by a decaying step, as NetAdapt's resource reduction schedule
`dR_i = dR_1 d^(i-1)` does for one resource:

    T_i = max(L_{i-1} - initial_reduction * L_0 * decay^(i-1), 1).

For every searched group it proposes the widest allowed width that brings the
load to `T_i` with the other groups unchanged (the fewest channels removed),
prunes the lowest-scoring channels of the current, fine-tuned weights by the
base criterion, fine-tunes the proposal briefly (every proposal from the same
weights, with the same steps and data order) and evaluates it. The best
proposal becomes the next network. When no group alone can reach `T_i`, each
group proposes its narrowest width (NetAdapt's code then still accepts the
best proposal that reduced the resource). The search stops at the budget; in
the last iteration only the proposals that land within `tolerance` of it
compete when there are any (the winner could otherwise overshoot by one
`round_to` step of a large group).

Selection (`selection=`): "accuracy" keeps the proposal with the best score
(the paper); "ratio" keeps the smallest `(score drop + 1e-6) / (load drop +
1e-5)` (NetAdapt's official code).
"""

import numpy as np

from kprune.channels.oneshot import reduced_copy
from kprune.search.driver import make_result
from kprune.search.evaluation import MaskedCopy, data_evaluator
from kprune.search.options import SearchOptions


def reduction_target(previous_load, dense_load, initial_reduction, decay, iteration):
    """This iteration's target load `max(L_{i-1} - r L_0 d^(i-1), 1)` (iteration from 1).

    >>> reduction_target(2.0, 2.0, 0.1, 0.5, 1), reduction_target(1.5, 2.0, 0.1, 0.5, 3)
    (1.8, 1.45)
    >>> reduction_target(1.02, 2.0, 0.1, 0.5, 1)
    1.0
    """
    return max(previous_load - initial_reduction * dense_load * decay ** (iteration - 1), 1.0)


def propose(widths, allowed, load, target):
    """Per group: the widest allowed width below the current one with
    `load <= target` (others unchanged), or None when even its narrowest
    width misses. Returns a list of `(group, width or None)`.

    >>> allowed = [np.array([1, 2, 3, 4]), np.array([2, 4])]
    >>> propose(np.array([4, 4]), allowed, lambda w: (w[0] + 2 * w[1]) / 8.0, 1.2)
    [(0, 1), (1, 2)]
    >>> propose(np.array([4, 4]), allowed, lambda w: (w[0] + 2 * w[1]) / 8.0, 1.0)
    [(0, None), (1, 2)]
    """
    out = []
    for k, options in enumerate(allowed):
        choice = None
        for width in options[::-1]:
            if width >= widths[k]:
                continue
            trial = np.array(widths)
            trial[k] = width
            if load(trial) <= target + 1e-12:
                choice = int(width)
                break
        out.append((k, choice))
    return out


def selection_key(rule, score, load, base_score, base_load):
    """A sort key (lower is better) for a proposal under `rule`.

    >>> selection_key("accuracy", 0.9, 1.5, 0.95, 2.0)
    -0.9
    >>> round(selection_key("ratio", 0.9, 1.5, 0.95, 2.0), 4)
    0.1
    """
    if rule == "accuracy":
        return -score
    return (base_score - score + 1e-6) / (base_load - load + 1e-5)


def netadapt(
    model,
    budget=None,
    evaluate=None,
    data=None,
    fine_tune=10,
    fine_tune_data=None,
    fine_tune_batch_size=32,
    learning_rate=1e-3,
    loss=None,
    initial_reduction=0.025,
    decay=0.96,
    max_iterations=None,
    selection="accuracy",
    tolerance=0.03,
    final_fine_tune=None,
    options=None,
    **shared,
):
    """NetAdapt: iteratively shrink the group whose proposal scores best.

    Args:
        model: a Sequential or Functional Keras model (trained).
        budget: a `kprune.Budget` (or None with a config_list 'total_sparsity').
        evaluate: `evaluate(model) -> float`, higher is better, on held-out
            training data; or None with `data=(x, y)` (top-1 accuracy).
        fine_tune: short-term fine-tuning of each proposal: a number of Adam
            steps on `fine_tune_data` (0 for none), or a callable
            `fine_tune(model, callbacks)` that trains `model` passing
            `callbacks` to `fit` (they keep the pruned channels at zero).
            Defaults to 10 steps.
        fine_tune_data: `(x, y)` for the built-in steps.
        fine_tune_batch_size / learning_rate / loss: the built-in steps'
            settings (the loss defaults to the compiled model's).
        initial_reduction: the first iteration's step as a fraction of the
            dense model's load. Defaults to 0.025 (NetAdapt's code).
        decay: the step's decay per iteration. Defaults to 0.96.
        max_iterations: stop after this many iterations (a limit: the plan
            may then miss the budget, see `result.met`). Defaults to None.
        selection: "accuracy" (default) or "ratio" (see the module docstring).
        tolerance: in the last iteration (target = the budget), only
            proposals that land within this fraction below the budget compete,
            if there are any. Defaults to 0.03.
        final_fine_tune: a callable `final_fine_tune(model)` run on the
            pruned (smaller) model at the end (NetAdapt's long-term
            fine-tune); its return value, if a model, replaces it.
        options: a `kprune.search.SearchOptions` with the settings every search shares, or None.
        **shared: any `SearchOptions` setting by name (`importance`, `round_to`, `exclude`, `config_list`,
            `max_ratio`, `latency`, `seed`, `max_evaluations`, `max_time`, `state_path`, `log_path`,
            `verbose`, `check_latency`), overriding `options`; see `kprune.search.SearchOptions`.
            `seed` seeds the fine-tuning data order.

    Returns:
        A `kprune.search.SearchResult`; `.model` is the pruned model (channels
        removed) with the fine-tuned weights (None if the latency check
        re-fitted the plan: the weights belong to the search's widths).
    """
    opts = SearchOptions.resolve("netadapt", options, shared)
    seed = opts.seed
    if selection not in ("accuracy", "ratio"):
        raise ValueError(f"Argument `selection` must be 'accuracy' or 'ratio'. Received: selection={selection!r}")
    if not (isinstance(initial_reduction, (int, float)) and 0 < initial_reduction < 1):
        raise ValueError(
            f"Argument `initial_reduction` must be in (0, 1). Received: initial_reduction={initial_reduction!r}")
    if not (isinstance(decay, (int, float)) and 0 < decay <= 1):
        raise ValueError(f"Argument `decay` must be in (0, 1]. Received: decay={decay!r}")
    if not (callable(fine_tune) or (isinstance(fine_tune, int) and not isinstance(fine_tune, bool) and fine_tune >= 0)):
        raise ValueError(
            "Argument `fine_tune` must be a number of steps >= 0 or a callable "
            f"`fine_tune(model, callbacks)`. Received: fine_tune={fine_tune!r}")
    if isinstance(fine_tune, int) and fine_tune > 0 and fine_tune_data is None:
        raise ValueError(
            f"Built-in fine-tuning ({fine_tune} steps) needs `fine_tune_data=(x, y)`; or pass fine_tune=0.")
    evaluate = data_evaluator(evaluate, data)
    space, constraint = opts.space_and_constraint(model, budget, method="netadapt")
    settings = {"space": space.fingerprint(), "targets": constraint.targets, "seed": seed,
                "schedule": [initial_reduction, decay, max_iterations], "selection": selection,
                "fine_tune": fine_tune if isinstance(fine_tune, int) else "callable",
                "importance": space.importance}
    run = opts.run("netadapt", settings, budget=constraint.budget)
    copy = MaskedCopy(space)
    state = run.state
    dense_load = constraint.load(space.dense)

    def tune(iteration, k):
        if callable(fine_tune):
            fine_tune(copy.model, [copy.keep_masks()])
        elif fine_tune:
            copy.fine_tune(*fine_tune_data, steps=fine_tune, batch_size=fine_tune_batch_size,
                           seed=seed * 1_000_003 + iteration * 1009 + k, learning_rate=learning_rate, loss=loss)

    if run.resumed:
        arrays = run.load_arrays() or list(copy.base)
        n = len(copy.base)
        base_weights, best_weights = arrays[:n], (arrays[n:] or None)
    else:
        base_weights, best_weights = list(copy.base), None
        state.update(iteration=1, widths=space.describe(space.dense), pruned=[[] for _ in space.groups],
                     score=float(evaluate(copy.apply(space.plan(space.dense)))), proposals=[], best=None)
        run.record({"iteration": 0, "group": None, "width": None, "load": dense_load}, state["score"],
                   of_budget=dense_load)
    stopped = None
    while True:
        widths = space.from_description(state["widths"])
        current_load = constraint.load(widths)
        if current_load <= 1.0 + 1e-12:
            stopped = "budget met"
            break
        if max_iterations is not None and state["iteration"] > max_iterations:
            stopped = "max_iterations"
            break
        i = state["iteration"]
        target = reduction_target(current_load, dense_load, initial_reduction, decay, i)
        proposals = propose(widths, space.allowed, constraint.load, target)
        if all(w is None for _, w in proposals):  # no group alone reaches T_i: largest cuts
            proposals = [(k, int(space.min_widths[k]) if widths[k] > space.min_widths[k] else None)
                         for k in range(len(space))]
        elif target <= 1.0:  # the last iteration: prefer proposals that land near the budget
            near = [(k, w) for k, w in proposals if w is not None and constraint.load(
                np.where(np.arange(len(space)) == k, w, widths)) >= 1.0 - tolerance]
            proposals = near or proposals
        # Scores on the current weights; channels already pruned go first.
        copy.apply(space.plan(widths), base_weights)
        scores = []
        for k, _ in enumerate(space.groups):
            s = np.array(space.scores_on(copy.graph, k), dtype=np.float64)
            s[state["pruned"][k]] = -np.inf
            scores.append(s)
        done = {p["group"] for p in state["proposals"]}
        for k, width in proposals:
            if width is None or k in done:
                continue
            stopped = run.stop_reason()
            if stopped:
                break
            trial = widths.copy()
            trial[k] = width
            plan = space.plan(trial, scores)
            copy.apply(plan, base_weights)
            tune(i, k)
            score = float(evaluate(copy.model))
            load = constraint.load(trial)
            entry = {"group": k, "width": int(width), "score": score, "load": load,
                     "pruned": plan_positions(plan, space)}
            state["proposals"].append(entry)
            key = selection_key(selection, score, load, state["score"], current_load)
            if state["best"] is None or key < state["best"]["key"]:
                state["best"] = dict(entry, key=key)
                best_weights = copy.weights()
            run.record({"iteration": i, "group": space.names[k], "width": int(width), "load": load}, score,
                       arrays=base_weights + best_weights, of_budget=load)
        if stopped:
            break
        if state["best"] is None:
            stopped = "unreachable"
            break
        best = state["best"]
        widths[best["group"]] = best["width"]
        state.update(widths=space.describe(widths), pruned=best["pruned"], score=best["score"],
                     iteration=i + 1, proposals=[], best=None)
        base_weights, best_weights = best_weights, None
        run.save(arrays=base_weights)
    run.finish()
    widths = space.from_description(state["widths"])
    plan = space.plan(widths, [np.where(np.isin(np.arange(n), p), -np.inf, 0.0)
                               for n, p in zip(space.channels, state["pruned"])])
    pruned_model = reduced_copy(copy.apply(plan, base_weights), plan)
    if final_fine_tune is not None:
        tuned = final_fine_tune(pruned_model)
        pruned_model = tuned if tuned is not None and hasattr(tuned, "predict") else pruned_model
    return make_result("netadapt", space, constraint, widths, state["score"], run, stopped,
                       model=pruned_model, plan=plan, extra={"iterations": state["iteration"] - 1},
                       check_latency=opts.check_latency)


def plan_positions(plan, space):
    """Per searched group, the pruned channel positions of `plan`."""
    by_index = {entry["group"]: entry["pruned"] for entry in plan.groups}
    return [list(by_index[g.index]) for g in space.groups]
