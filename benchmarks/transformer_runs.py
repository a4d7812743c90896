"""What bench_transformers' runs share: criteria, a seeded random criterion, one setting's summary.

`summarise` averages a setting's runs over the random seeds (one run for the other criteria);
`plan_kwargs` gives `kprune.plan_channels` the calibration data each criterion reads.
"""

import statistics

import numpy as np

WIDTH_CRITERIA = ["l2", "activation", "taylor_element", "random"]
# The ViT's output projections have biases: FLAP (fluctuation, z-scored, with its bias compensation) fits.
VIT_WIDTH_CRITERIA = ["l2", "activation", "taylor_element", "flap", "random"]
BLOCK_CRITERIA = ["block_influence", "angular", "random"]
RANDOM_SEEDS = [0, 1, 2]


def seeded_random(seed):
    """Random scores per unit, seeded by `seed` and the group (a custom criterion)."""

    def scores(graph, group):
        return np.random.default_rng([seed, group.index, len(group.units)]).random(len(group.units))

    return scores


def plan_kwargs(criterion, calib, calib_y, seed=0):
    """`(importance, kwargs)` for `kprune.plan_channels` with `criterion` on the calibration data
    (`"flap"`: FLAP's fluctuation metric; its bias compensation is applied when removing)."""
    import keras

    kwargs = {}
    if criterion in ("activation", "flap"):
        kwargs["data"] = calib
    elif criterion == "taylor_element":
        kwargs.update(data=(calib, calib_y), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return (seeded_random(seed) if criterion == "random" else criterion), kwargs


def schedule(step, steps, warmup, peak):
    """Linear warm-up to `peak`, then cosine decay to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))


def max_delta(a, b, x):
    """max |a(x) - b(x)|."""
    import keras

    return float(np.max(np.abs(keras.ops.convert_to_numpy(a(x)) - keras.ops.convert_to_numpy(b(x)))))


def summarise(log, family, arch, criterion, per_seed, metric, label=""):
    """One setting's record: `metric` ("perplexity" or "accuracy") averaged over the seeds' runs."""
    first = per_seed[0]
    values = [r[metric] for r in per_seed]
    run = {"family": family, "arch": arch, "criterion": criterion, metric: statistics.fmean(values),
           metric[:-1] + "ies" if metric.endswith("y") else metric + "s": values,
           "max_delta": max(r["max_delta"] for r in per_seed), "params": first["params"], "macs": first["macs"]}
    if "removed" in first:
        run["removed"] = [r["removed"] for r in per_seed]
    spec = ".3f" if metric == "perplexity" else ".4f"
    log(f"{label}{arch} {criterion}: {metric} {format(run[metric], spec)} "
        f"({', '.join(format(v, spec) for v in values)}), max |delta| {run['max_delta']:.2e}")
    return run
