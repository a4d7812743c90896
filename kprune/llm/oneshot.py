"""`prune_oneshot`: prune a model's linear layers from calibration data, block by block.

The procedure of the references (Wanda's `prune_wanda`, SparseGPT's
`llama_sequential`, OWL's `prune_wanda_outlier`):

1. the calibration batches run through the model up to its first block
   (`kprune.llm.graph`: embeddings and whatever precedes it);
2. for each block: its call runs on every batch with the inputs of its
   linear layers captured (`kprune.llm.hooks`) into statistics
   (`kprune.llm.statistics`: mean squares, and Hessians for SparseGPT); its
   linear layers are pruned (`kprune.llm.wanda`, `kprune.llm.sparsegpt`);
   the *pruned* block runs again and its outputs are the next block's
   inputs, so each block is calibrated on the errors of the ones before;
3. with `ratios="owl"`, a first pass over the dense model measures each
   block's outlier ratio (`kprune.llm.owl`) and sets its sparsity.

Memory: the model's weights, the statistics of one block (SparseGPT: one
`d_in x d_in` Hessian per distinct input of its layers -- q/k/v share one --
each freed once its factor is computed, unless `measure_error`) and the
activations that cross the current block (its inputs and outputs on all
calibration batches). Nothing is copied but the one matrix being pruned.

The model is pruned in place: its kernels hold exact zeros and it stays an
ordinary Keras model (`save`, `kprune.summary`, `kprune.export_tflite`);
`kprune.prune_low_magnitude` on it keeps the zeros during a sparse
fine-tune (its masks start from `weight != 0`).

Example:

>>> import keras, numpy as np, kprune
>>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, name="a"),
...     keras.layers.ReLU(), keras.layers.Dense(16, name="b"), keras.layers.Dense(4, name="head")],
...     name="mlp")
>>> x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
>>> report = kprune.prune_oneshot(model, 0.5, method="sparsegpt", data=x, verbose=0)
>>> [(layer.name, layer.sparsity) for layer in report.layers], report.excluded
([('mlp/a', 0.5), ('mlp/b', 0.5)], ['mlp/head'])
>>> float((model.get_layer("a").kernel.numpy() == 0).mean())
0.5
"""

import re
import time

import numpy as np
from keras import ops

from kprune.llm import owl
from kprune.llm.calibration import input_batches
from kprune.llm.graph import Propagation, block_steps, head_names, model_steps, needed_steps
from kprune.llm.hooks import BlockStatistics, capture
from kprune.llm.report import LayerReport, OneShotReport
from kprune.llm.selection import COMPARISONS, parse_sparsity
from kprune.llm.sparsegpt import inverse_hessian_factor, sparsegpt
from kprune.llm.statistics import DTYPES, relative_error
from kprune.llm.wanda import magnitude_scores, prune_matrix, wanda_scores
from kprune.sparsity.mask_math import target_zeros
from kprune.utils.progress import Progress

METHODS = ("magnitude", "wanda", "sparsegpt")


def _fraction(target):
    return target[0] / target[1] if isinstance(target, tuple) else target


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"Argument `{name}` must be one of {choices}. Received: {name}={value!r}")
    return value


def _excluded(exclude, names, heads):
    """Names of the linear layers left dense."""
    if exclude is None:
        return [n for n in names if n in heads]
    if callable(exclude):
        return [n for n in names if exclude(n)]
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    if not all(isinstance(p, str) for p in patterns):
        raise ValueError(
            "Argument `exclude` must be None (leave the output head dense), a regular expression or a "
            f"list of them matched against layer names, or a callable `name -> bool`. Received: exclude={exclude!r}")
    return [n for n in names if any(re.search(p, n) for p in patterns)]


def _layer_targets(ratios, pattern, blocks, steps, excluded):
    """`{layer name: target}` for uniform, explicit per-block (a list) or
    per-layer/per-block (a dict) ratios. OWL's are set after its pass."""
    layers = {name: steps[i].name for i in blocks for _, name, _ in steps[i].linears if name not in excluded}
    if isinstance(ratios, str):
        _check_choice("ratios", ratios, ("uniform", "owl"))
        return {name: pattern for name in layers}
    if isinstance(ratios, dict):
        known = set(layers) | set(layers.values())
        unknown = sorted(set(ratios) - known)
        if unknown:
            raise ValueError(f"Argument `ratios` names no pruned layer or block: {unknown}. Layers: "
                             f"{sorted(layers)}; blocks: {sorted(set(layers.values()))}")
        targets = {}
        for name, block in layers.items():
            value = ratios.get(name, ratios.get(block, pattern))
            targets[name] = parse_sparsity(value, f"ratios['{name}']")
        return targets
    values = list(ratios)
    if len(values) != len(blocks):
        raise ValueError(f"Argument `ratios` as a list needs one sparsity per block ({len(blocks)}: "
                         f"{[steps[i].name for i in blocks]}). Received: {len(values)} values")
    per_block = {steps[i].name: parse_sparsity(v, "ratios") for i, v in zip(blocks, values)}
    return {name: per_block[block] for name, block in layers.items()}


def _prune_layer(name, view, method, target, comparison, stats, options, factors):
    """Prune one layer's kernel in place; returns `(error, damping)`. `factors`
    keeps SparseGPT's factor of the last Hessian for the layers that share it."""
    matrix = view.matrix(view.variable.value)
    damping = error = None
    if method == "sparsegpt":
        if factors.get("stats") is not stats:
            factors.clear()  # one factor at a time: d_in^2 float64
            factors.update(stats=stats, factor=inverse_hessian_factor(
                stats.hessian, options["percdamp"], name=name))
            if not options["measure_error"]:
                stats.release_hessian()  # the factor replaces it for every layer that shares it
        before = ops.convert_to_numpy(matrix)
        new, _, damping = sparsegpt(before, None, target, blocksize=options["blocksize"],
                                    percdamp=options["percdamp"], name=name, factor=factors["factor"])
        if options["measure_error"]:
            error = relative_error(stats.hessian, before, new)
        new = new.astype(before.dtype)
    else:
        scores = magnitude_scores(matrix) if method == "magnitude" else wanda_scores(matrix, stats.norms)
        new = prune_matrix(matrix, scores, target, comparison)
        if options["measure_error"]:
            error = relative_error(stats.hessian, ops.convert_to_numpy(matrix), ops.convert_to_numpy(new))
    view.variable.assign(ops.cast(view.kernel(ops.convert_to_tensor(new)), view.variable.dtype))
    return error, damping


def _zeros(variable):
    return float(ops.convert_to_numpy(ops.mean(ops.cast(ops.equal(variable.value, 0), "float32"))))


def _at_target(view, target):
    """Whether a kernel already holds at least the zeros of `target` (a pruned layer)."""
    size = view.shape[0] * view.shape[1]
    if isinstance(target, tuple):
        wanted = size // target[1] * target[0]
    else:
        wanted = target_zeros(size, target)
    zeros = int(ops.convert_to_numpy(ops.sum(ops.cast(ops.equal(view.variable.value, 0), "int32"))))
    return zeros >= wanted


def _collect(propagation, index, linears, hessian, dtype):
    """Run block `index` on every batch with its linears' inputs captured."""
    step = propagation.steps[index]
    collector = BlockStatistics(linears, hessian=hessian, dtype=dtype)
    outputs = []
    with capture(linears, collector):
        for b in range(propagation.batches):
            collector.new_batch()
            outputs.append(propagation.call(step, b))
    return collector, outputs


def _outlier_pass(model, steps, batches, blocks, excluded, options, verbose):
    """OWL's first pass: each block's outlier ratio on the dense model."""
    propagation = Propagation(model, steps, batches, needed_steps(steps, blocks))
    progress = Progress("OWL: outlier ratios of the dense model", target=len(blocks), unit_name="block",
                        verbose=verbose)
    ratios = {}
    for index in needed_steps(steps, blocks):
        if index not in blocks:
            propagation.run(index)
            continue
        step = steps[index]
        linears = [item for item in step.linears if item[1] not in excluded]
        collector, outputs = _collect(propagation, index, linears, False, options["statistics_dtype"])
        scores = [wanda_scores(view.matrix(view.variable.value), collector.statistics(name).norms)
                  for _, name, view in linears]
        ratios[step.name] = owl.outlier_ratio(scores, options["owl_threshold"])
        del scores, collector
        propagation.store(index, outputs)
        progress.update(len(ratios), outlier_ratio=ratios[step.name])
    progress.finish()
    return ratios


def prune_oneshot(model, sparsity=0.5, method="wanda", data=None, ratios="uniform", exclude=None,
                  comparison=None, batch_size=8, blocksize=128, percdamp=0.01, statistics_dtype="float32",
                  owl_threshold=5.0, owl_lambda=0.08, measure_error=False, resume=False, verbose=1):
    """Prune the linear layers of `model` in one shot, block by block (see the module docstring).

    Args:
        model: a Sequential or Functional model: a KerasHub backbone or task
            (`Llama3CausalLM`, `GemmaBackbone`, ...) or a user's model. Pruned in place.
        sparsity: a fraction in [0, 1) of each layer's weights, or an N:M
            pattern (`"2:4"`: 2 zeros in every 4 consecutive inputs of each
            output). Defaults to 0.5.
        method: `"wanda"` (default), `"sparsegpt"` or `"magnitude"`.
        data: calibration inputs (`kprune.llm.calibration`): an array, a dict
            of arrays (KerasHub's `token_ids`/`padding_mask`), or a
            `tf.data.Dataset`/iterable of batches. Not needed for magnitude
            with uniform ratios.
        ratios: `"uniform"` (default), `"owl"` (per-block sparsities from
            outlier ratios; fractions only), a list of one sparsity per block,
            or a dict `{layer or block name: sparsity}` (others get `sparsity`).
        exclude: linear layers left dense: None (default) leaves the output
            head (a linear layer computing the model's outputs; embeddings and
            KerasHub's LM head are never pruned here); a regular expression, a
            list of them (matched with `re.search` against layer names such as
            `"transformer_layer_0/self_attention/query"`; this replaces the
            default), or a callable `name -> bool`.
        comparison: `"output"` (each output loses the same number of inputs)
            or `"matrix"` (one threshold per matrix). Defaults to
            `"matrix"` for magnitude, `"output"` for Wanda, as in the
            references; N:M is per output. Not used by SparseGPT.
        batch_size: examples per block call when `data` is an array (the
            block's own temporaries grow with it; the references run 1).
            Defaults to 8.
        blocksize, percdamp: SparseGPT's (defaults 128 and 0.01).
        statistics_dtype: `"float32"` (default) or `"float64"` for Hessians.
        owl_threshold, owl_lambda: OWL's M (5) and lambda (0.08).
        measure_error: also compute each layer's relative output error
            `||XW - XW'||^2 / ||XW||^2` on its calibration inputs (Wanda and
            magnitude then accumulate Hessians too: memory `d_in^2` per input
            of a block; time two `d_in^2 d_out` products per layer).
        resume: skip the blocks whose every layer already holds the zeros of
            its target (they only run forward): call again with the same
            arguments and `resume=True` after an interrupted run. The
            skipped layers are reported with `error` None. (With
            `ratios="owl"` the ratios are measured again, on the partly
            pruned model.) Defaults to False.
        verbose: 1 shows a progress bar (one step per block), 0 nothing.

    Returns:
        A `kprune.llm.OneShotReport` (per-layer sparsity and errors,
        per-block sparsities, time and memory held).

    Raises:
        ValueError: an invalid argument, a model without linear layers to
            prune, or calibration data that does not fit the model.
    """
    start = time.perf_counter()
    _check_choice("method", method, METHODS)
    _check_choice("statistics_dtype", statistics_dtype, DTYPES)
    pattern = parse_sparsity(sparsity)
    nm = isinstance(pattern, tuple)
    if comparison is None:
        comparison = "matrix" if method == "magnitude" and not nm else "output"
    _check_choice("comparison", comparison, COMPARISONS)
    if nm and comparison != "output":
        raise ValueError(f"N:M sparsity compares inputs within each output. Received: comparison={comparison!r}")
    if isinstance(ratios, str) and ratios == "owl":
        if nm:
            raise ValueError("Argument `ratios='owl'` needs a fractional `sparsity`; OWL's N:M variant "
                             f"(mixed N per block) is not provided. Received: sparsity={sparsity!r}")
        owl.check_owl(pattern, owl_threshold, owl_lambda)

    steps = model_steps(model)
    names = [name for step in steps for _, name, _ in step.linears]
    excluded = _excluded(exclude, names, head_names(model, steps))
    blocks = block_steps(steps, set(excluded))
    if not blocks:
        raise ValueError(
            f"Model '{model.name}' has no linear layer to prune (Dense, EinsumDense, Conv1D/Conv2D) "
            f"outside `exclude`. Linear layers: {names}; excluded: {excluded}")
    targets = _layer_targets(ratios, pattern, blocks, steps, set(excluded))
    options = dict(blocksize=blocksize, percdamp=percdamp, measure_error=measure_error,
                   statistics_dtype=statistics_dtype, owl_threshold=owl_threshold)
    owl_ratios = {}
    needs_data = method != "magnitude" or measure_error or ratios == "owl"
    batches = input_batches(model, data, batch_size) if needs_data else None
    if isinstance(ratios, str) and ratios == "owl":
        owl_ratios = _outlier_pass(model, steps, batches, blocks, set(excluded), options, verbose)
        per_block = dict(zip(owl_ratios, owl.owl_sparsities(list(owl_ratios.values()), pattern, owl_lambda)))
        targets = {name: per_block[steps[i].name] for i in blocks for _, name, _ in steps[i].linears
                   if name in targets}

    report = OneShotReport(method, sparsity, [], excluded=excluded, outlier_ratios=owl_ratios)
    propagation = Propagation(model, steps, batches, needed_steps(steps, blocks)) if needs_data else None
    title = f"One-shot pruning: {method}, sparsity {sparsity}" + (", OWL ratios" if owl_ratios else "")
    progress = Progress(title, target=len(blocks), unit_name="block", verbose=verbose)
    hessian = method == "sparsegpt" or measure_error
    done = 0
    for index in (needed_steps(steps, blocks) if needs_data else blocks):
        if index not in blocks:
            propagation.run(index)
            continue
        step = steps[index]
        linears = [item for item in step.linears if item[1] not in excluded]
        if resume and all(_at_target(view, targets[name]) for _, name, view in linears):
            for _, name, view in linears:
                report.layers.append(LayerReport(name, step.name, view.shape, _fraction(targets[name]),
                                                 _zeros(view.variable)))
            report.block_sparsity[step.name] = float(np.mean([_fraction(targets[n]) for _, n, _ in linears]))
            if propagation is not None:
                propagation.run(index)
            done += 1
            progress.update(done, sparsity=report.sparsity_by_block()[step.name])
            continue
        collector = None
        if needs_data:
            collector, _ = _collect(propagation, index, linears, hessian, statistics_dtype)
            report.peak_statistics_bytes = max(report.peak_statistics_bytes, collector.nbytes)
        factors = {}
        for _, name, view in linears:
            stats = collector.statistics(name) if collector is not None else None
            error, damping = _prune_layer(name, view, method, targets[name], comparison, stats, options, factors)
            report.layers.append(LayerReport(name, step.name, view.shape, _fraction(targets[name]),
                                             _zeros(view.variable), error, damping))
        report.block_sparsity[step.name] = float(np.mean([_fraction(targets[n]) for _, n, _ in linears]))
        del collector, factors
        if propagation is not None:
            propagation.store(index, [propagation.call(step, b) for b in range(propagation.batches)])
            report.peak_activation_bytes = propagation.peak
        done += 1
        progress.update(done, sparsity=report.sparsity_by_block()[step.name])
    progress.finish()
    report.seconds = time.perf_counter() - start
    return report
