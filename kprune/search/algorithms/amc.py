"""AMC (He et al., ECCV 2018): a DDPG agent picks each channel group's width in turn.

An episode walks the searched groups (`kprune.SearchSpace`, graph order).
At group t the agent sees the state

    s_t = (t, type, c_in, c_out, stride, kernel, MACs_t, reduced_t, rest_t, a_{t-1}),

each feature min-max normalised over the groups (the first seven are fixed
per group, from the group's first producer: its layer type, input and output
channels, stride and kernel size (geometric mean over the axes), and the
MACs of the group's producers; for an attention head group: the attention
layer's type, its input width, its heads, stride and kernel 1, and the MACs
of its projections); `reduced_t` is the budgeted resource already
removed by the groups before t, and `rest_t` what groups t, t+1, ... could
still remove (both as fractions of the dense model's), `a_{t-1}` the
previous action. The action `a_t` in [0, 1] is the fraction of group t's
channels to keep, at least `1 - max_ratio` (AMC's `lbound`, 0.2 by
default), snapped to an allowed width and then clipped
(resource-constrained search, AMC's `_action_wall` and NNI's
`correct_action`) to

    [widest w with load(w_<t, w, dense_>t) <= 1,  widest w with load(w_<t, w, min_>t) <= 1]:

the upper bound keeps the budget reachable whatever the later groups do (they
can still shrink to their narrowest widths), the lower bound forbids pruning
more than the budget needs. After the last group the widths are widened
where the budget allows (`kprune.search.rescale.fill_budget`, which repairs the
`round_to` rounding), the pruned model is evaluated without fine-tuning
(optionally after refitting the layers that read pruned channels by least
squares on calibration data, `reconstruct=`, as AMC does), and
its metric is the reward of every transition of the episode (AMC's code
gives the final reward to all). Warm-up episodes take uniform random
actions; after them, each stored transition triggers one DDPG update
(`kprune.search.algorithms.ddpg.DDPG`). The best plan seen is returned.
"""

import numpy as np

from kprune.channels.oneshot import reduced_copy
from kprune.dependency.unit_space import usage_name
from kprune.methods.reconstruction import reconstruct as reconstruct_layers
from kprune.search.algorithms.ddpg import DDPG
from kprune.search.driver import make_result
from kprune.search.evaluation import MaskedCopy, data_evaluator
from kprune.search.options import SearchOptions
from kprune.search.rescale import fill_budget, rounding_priority
from kprune.search.space import LayerFractions, is_rebuilt
from kprune.stats.keras_stats import layer_stats

FEATURES = ("index", "type", "c_in", "c_out", "stride", "kernel", "macs", "reduced", "rest", "previous_action")


def static_features(space):
    """Per group, the raw `(index, type, c_in, c_out, stride, kernel, MACs)`
    of its first producer (MACs summed over its producers)."""
    graph = space.graph
    fractions = LayerFractions(space)
    macs = {}
    for row in layer_stats(space.model):  # a layer's MACs with those of the layers it holds
        name = fractions.layer_of(row.name) or row.name
        macs[name] = macs.get(name, 0) + row.macs
    layers, types = [], []
    for k, group in enumerate(space.groups):
        layer = next(u.layer for u in group.usages if u.role == "out" and usage_name(u) == space.names[k])
        layers.append(layer)
        types.append(type(layer).__name__)
    kinds = sorted(set(types))
    rows = []
    for k, (group, layer) in enumerate(zip(space.groups, layers)):
        c_in = next((len(u.ids) for u in graph.usages if u.layer is layer and u.role == "in"), 0)
        strides = np.atleast_1d(getattr(layer, "strides", 1) or 1)
        kernel = np.atleast_1d(getattr(layer, "kernel_size", 1) or 1)
        rows.append([k, kinds.index(types[k]), c_in, len(group.units),
                     float(np.prod(strides)) ** (1.0 / len(strides)), float(np.prod(kernel)) ** (1.0 / len(kernel)),
                     sum(macs.get(p, 0) for p in group.producers)])
    return np.array(rows, dtype=np.float64)


def normalize_columns(table):
    """Min-max normalise every column (a constant column stays as it is).

    >>> normalize_columns(np.array([[1.0, 5.0], [3.0, 5.0]])).tolist()
    [[0.0, 5.0], [1.0, 5.0]]
    """
    table = np.array(table, dtype=np.float64)
    low, high = table.min(axis=0), table.max(axis=0)
    spread = high - low
    scaled = (table - low) / np.where(spread > 0, spread, 1.0)
    return np.where(spread > 0, scaled, table)


def width_bounds(widths, t, allowed, min_widths, dense, load):
    """The allowed widths of group t that keep the budget reachable and not overshot.

    With groups before t at `widths` and groups after t at their narrowest
    (`min_widths`) or at full width (`dense`): `(low, high)` where `high` is
    the widest width with `load <= 1` when the later groups go narrowest, and
    `low` the widest with `load <= 1` when they stay dense (the narrowest
    width if none). Returns `(None, None)` if no width keeps the budget
    reachable.

    >>> allowed = [np.array([1, 2, 3, 4])] * 2
    >>> load = lambda w: float(np.sum(w)) / 5.0
    >>> width_bounds(np.array([4, 4]), 0, allowed, np.array([1, 1]), np.array([4, 4]), load)
    (1, 4)
    >>> width_bounds(np.array([3, 4]), 1, allowed, np.array([1, 1]), np.array([4, 4]), load)
    (2, 2)
    """
    after = np.arange(len(allowed)) > t
    narrow = np.where(after, min_widths, widths)
    wide = np.where(after, dense, widths)
    high = low = None
    for w in allowed[t]:
        narrow[t] = wide[t] = w
        if load(narrow) <= 1.0 + 1e-12:
            high = int(w)
        if load(wide) <= 1.0 + 1e-12:
            low = int(w)
    if high is None:
        return None, None
    return (int(allowed[t][0]) if low is None else low), high


class Episode:
    """The environment of one search: states, action clipping and rewards."""

    def __init__(self, space, constraint):
        self.space, self.constraint = space, constraint
        self.static = normalize_columns(static_features(space))
        self.resource = constraint.models[constraint.primary]
        self.dense_resource = float(self.resource(space.dense))

    def state(self, t, widths, previous_action):
        later = np.arange(len(self.space)) >= t
        decided = np.where(later, self.space.dense, widths)
        reduced = (self.dense_resource - self.resource(decided)) / self.dense_resource
        rest = (self.resource(decided) - self.resource(np.where(later, self.space.min_widths, widths))) / (
            self.dense_resource)
        return np.concatenate([self.static[t], [reduced, rest, previous_action]]).astype(np.float32)

    def clip(self, t, widths, action):
        """The width that `action` (a keep fraction) asks of group t, snapped
        and clipped by `width_bounds`."""
        space = self.space
        allowed = space.allowed[t]
        wanted = int(allowed[np.argmin(np.abs(allowed - float(action) * space.channels[t]))])
        low, high = width_bounds(widths, t, space.allowed, space.min_widths, space.dense, self.constraint.load)
        if high is None:
            raise ValueError(f"No width of group '{space.names[t]}' keeps {self.constraint.budget} reachable.")
        return int(min(max(wanted, low), high))

    def finish(self, widths, ratios):
        """The widths widened where the budget allows (`fill_budget`)."""
        return fill_budget(widths, self.space.allowed, self.constraint.load, rounding_priority(self.space, ratios))


def amc(
    model,
    budget=None,
    evaluate=None,
    data=None,
    episodes=200,
    warmup=50,
    hidden=(300, 300),
    lr_actor=1e-4,
    lr_critic=1e-3,
    tau=0.01,
    discount=1.0,
    batch_size=64,
    init_delta=0.5,
    delta_decay=0.95,
    reconstruct=None,
    reconstruct_images=64,
    options=None,
    **shared,
):
    """Search per-group widths under a budget with AMC's DDPG agent.

    Args:
        model: a Sequential or Functional Keras model (trained).
        budget: a `kprune.Budget` (or None with a config_list 'total_sparsity').
        evaluate: `evaluate(model) -> float`, higher is better, on the pruned
            model without fine-tuning (the reward); use held-out training
            data. Or None with `data=(x, y)` (top-1 accuracy).
        episodes: episodes in total (one evaluation each). Defaults to 200.
        warmup: episodes of random actions first. Defaults to 50 (AMC: 100 of 800).
        hidden / lr_actor / lr_critic / tau / discount / batch_size /
            init_delta / delta_decay: the agent's settings (`kprune.search.algorithms.ddpg.DDPG`;
            defaults are AMC's: (300, 300), 1e-4, 1e-3, 0.01, 1.0, 64, 0.5, 0.95).
        reconstruct: calibration inputs (an array, a tuple of arrays or
            `(x, y)`) to refit the layers that read pruned channels by least
            squares (`kprune.reconstruct`, He et al. ICCV 2017) before every
            evaluation, as AMC does for channel pruning: the reward then
            measures the widths rather than how much one-shot pruning
            breaks the model, which on a small model is often near chance
            for every plan. The result's `model` is the best plan
            reconstructed (channels removed). Costs one least-squares refit
            per pruned layer and episode. Defaults to None (no reconstruction;
            a KerasHub model, which is rebuilt rather than cloned, refuses it).
        reconstruct_images: images of `reconstruct` sampled per refit.
            Defaults to 64.
        options: a `kprune.search.SearchOptions` with the settings every search shares, or None.
        **shared: any `SearchOptions` setting by name (`importance`, `round_to`, `exclude`, `config_list`,
            `max_ratio`, `latency`, `seed`, `max_evaluations`, `max_time`, `state_path`, `log_path`,
            `verbose`, `check_latency`), overriding `options`; see `kprune.search.SearchOptions`.
            `max_ratio` defaults to 0.8 here (AMC's lbound 0.2); `seed` seeds the agent and every draw.

    Returns:
        A `kprune.search.SearchResult` for the best episode.

    Example:

    >>> import keras, numpy as np, kprune
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
    >>> score = lambda m: float(np.count_nonzero(m.get_layer("c1").kernel.numpy()))
    >>> result = kprune.amc(model, kprune.Budget(macs=0.5), score, episodes=6, warmup=3,
    ...                     hidden=(8, 8), batch_size=4, verbose=0)
    >>> result.evaluations, result.load <= 1.0
    (6, True)
    """
    opts = SearchOptions.resolve("amc", options, shared, defaults={"max_ratio": 0.8})
    max_ratio, seed = opts.max_ratio, opts.seed
    for name, value in (("episodes", episodes), ("warmup", warmup)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "episodes" else 0):
            raise ValueError(f"Argument `{name}` must be an int >= {1 if name == 'episodes' else 0}. "
                             f"Received: {name}={value!r}")
    evaluate = data_evaluator(evaluate, data)
    if reconstruct is not None and is_rebuilt(model):
        raise ValueError(
            f"amc cannot refit the layers of model '{model.name}' ({type(model).__name__}) with `reconstruct=`: "
            "least-squares reconstruction clones the model layer by layer, and a KerasHub model is rebuilt "
            "from its config instead. Pass reconstruct=None (the episodes are scored one-shot), and heal the "
            "smaller model by distillation (kprune.distiller)."
        )
    space, constraint = opts.space_and_constraint(model, budget, method="amc")
    if not constraint.met(space.min_widths):
        raise ValueError(
            f"No widths meet {constraint.budget} with this model's groups (round_to={opts.round_to}): the "
            "budget is below what the narrowest widths give."
        )
    env = Episode(space, constraint)
    agent = DDPG(state_dim=len(FEATURES), hidden=tuple(hidden), lr_actor=lr_actor, lr_critic=lr_critic,
                 tau=tau, discount=discount, batch_size=batch_size, buffer_size=100 * len(space),
                 init_delta=init_delta, delta_decay=delta_decay, warmup=warmup, seed=seed)
    settings = {"space": space.fingerprint(), "targets": constraint.targets, "seed": seed, "episodes": episodes,
                "warmup": warmup, "agent": [list(hidden), lr_actor, lr_critic, tau, discount, batch_size,
                                            init_delta, delta_decay], "importance": space.importance,
                "reconstruct": None if reconstruct is None else int(reconstruct_images)}
    run = opts.run("amc", settings, target=min(episodes, opts.max_evaluations or episodes), budget=constraint.budget)
    state = run.state
    if run.resumed:
        agent.set_state(run.load_arrays(), state["agent"])
    else:
        state.update(episode=0, best=None)
    copy = MaskedCopy(space)
    stopped = None
    while state["episode"] < episodes:
        stopped = run.stop_reason()
        if stopped:
            break
        episode = state["episode"]
        widths, previous, transitions = space.dense.copy(), 0.0, []
        for t in range(len(space)):
            s = env.state(t, widths, previous)
            action = agent.explore(s, episode)
            widths[t] = env.clip(t, widths, action[0])
            previous = float(widths[t] / space.channels[t])
            transitions.append([s, previous])
        final = env.finish(widths, space.ratios(widths))
        reward = float(evaluate(pruned_model(copy, space, final, reconstruct, reconstruct_images)))
        for t, (s, a) in enumerate(transitions):
            last = t == len(space) - 1
            s2 = s if last else transitions[t + 1][0]
            agent.observe(s, [a], reward, s2, last)
        if episode >= warmup:
            for _ in transitions:
                agent.update()
        if state["best"] is None or reward > state["best"]["score"]:
            state["best"] = {"widths": space.describe(final), "score": reward, "episode": episode}
        state["episode"] = episode + 1
        arrays, state["agent"] = agent.state()
        run.record({"episode": episode, "widths": space.describe(final), "actions": [t[1] for t in transitions],
                    "warmup": episode < warmup, "load": constraint.load(final)}, reward, arrays=arrays,
                   of_budget=constraint.load(final))
    stopped = stopped or "done"
    run.finish()
    if state["best"] is None:
        raise ValueError("The search stopped before its first episode: raise `max_evaluations`/`max_time`.")
    best = space.from_description(state["best"]["widths"])
    model_out = None
    if reconstruct is not None:
        plan = space.plan(best)
        model_out = reduced_copy(pruned_model(copy, space, best, reconstruct, reconstruct_images), plan)
    return make_result("amc", space, constraint, best, state["best"]["score"], run, stopped, model=model_out,
                       extra={"episode": state["best"]["episode"], "episodes": state["episode"],
                              "max_ratio": max_ratio, "reconstruct": reconstruct is not None},
                       check_latency=opts.check_latency, evaluate=evaluate if reconstruct is None else None)


def pruned_model(copy, space, widths, data=None, images=64):
    """The model masked to `widths` (`copy`, a `MaskedCopy`), its layers refit
    to the unpruned model's outputs on `data` by least squares if given."""
    masked = copy.apply(space.plan(widths))
    if data is None or np.array_equal(widths, space.dense):
        return masked
    return reconstruct_layers(masked, space.model, data, max_images=images)
