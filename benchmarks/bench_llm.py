"""One-shot pruning of a language model: perplexity, reconstruction error, time and memory.

`python benchmarks/bench_llm.py [--quick]` (issue 26):

1. **The model.** A tiny Llama 3 (4 layers, hidden 256, 8 query / 2 key-value heads, FFN 768,
   byte vocabulary) trained here from scratch on the standard library's docstrings
   (`benchmarks/text_lm.py`: split by module, Python version and corpus hash recorded; cached
   under `$KPRUNE_CACHE`, ~10 min to train on 2 cores the first time).
2. **Perplexity.** Held-out perplexity (modules the model never saw) of the dense model and of
   `kprune.prune_oneshot` with magnitude (one threshold per matrix, and per output), Wanda and
   SparseGPT at 50%, 60%, 70%, 2:4 and 4:8, and OWL (with Wanda and with SparseGPT) at 60% and
   70%; calibration: 128 random training windows of 128 bytes, as the references draw 128
   windows.
3. **Reconstruction error.** Each pruned layer's `||XW - XW'||^2 / ||XW||^2` on its calibration
   inputs (`measure_error=True`), per method; SparseGPT minimises it, so it should be lowest in
   every layer.
4. **Time and memory.** Each method in a fresh process on a larger random-weight Llama (8 layers,
   hidden 1024, 16/4 heads, FFN 2816: 346 MiB of float32 weights) with 16 windows of 256 tokens:
   seconds of `prune_oneshot`, and the peak resident memory during it (sampled every 2 ms from
   `/proc/self/statm`) above the resident memory before it, against the model's weight bytes;
   with the statistics and activations that kprune reports holding. The workers run with glibc's
   `MALLOC_MMAP_THRESHOLD_=131072` (every allocation of 128 KiB or more is its own mapping, returned
   when freed) and `malloc_trim(0)` before the baseline, so that resident memory follows what is
   held (with glibc's defaults, pages freed while the model was built stay resident and pruning
   reuses them unseen: peaks of +1 to +214 MiB for the same work).

Goals (issue 26): SparseGPT lowest reconstruction error in every layer; SparseGPT's and Wanda's
perplexity rise at most half of magnitude's at 50% and at 2:4; peak memory during pruning at most
weights + 0.5 x weights.

A full run takes 25-40 min on 2 shared cores once the model is cached (1,397 s and 2,354 s
measured on 2026-12-07, under other users' load; ~10 min more the first time); `--quick` (a
2-layer model trained 60 steps, fewer settings, a small memory model) takes ~2 min.
"""

import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time

import common
import numpy as np
import text_lm

PATTERNS = ["0.5", "0.6", "0.7", "2:4", "4:8"]
METHODS = [("magnitude", "matrix"), ("magnitude", "output"), ("wanda", None), ("sparsegpt", None)]
OWL = [("wanda", "0.6"), ("wanda", "0.7"), ("sparsegpt", "0.6"), ("sparsegpt", "0.7")]
MEMORY_MODEL = dict(num_layers=8, hidden_dim=1024, num_query_heads=16, num_key_value_heads=4, intermediate_dim=2816)
# (method, pattern, batch size): one example per block call, as the references run; and
# SparseGPT with kprune's default batch of 8 (more transient memory inside each block call).
MEMORY_RUNS = [("magnitude", "0.5", 1), ("wanda", "0.5", 1), ("wanda", "0.6owl", 1), ("sparsegpt", "0.5", 1),
               ("sparsegpt", "2:4", 1), ("sparsegpt", "0.5", 8)]

QUICK = dict(model=dict(num_layers=2, hidden_dim=64, num_query_heads=4, num_key_value_heads=2, intermediate_dim=192),
             training=dict(steps=60, batch_size=8, seq_len=64), patterns=["0.5", "2:4"], owl=[("wanda", "0.6")],
             calibration=(32, 64), eval_windows=64,
             memory_model=dict(num_layers=2, hidden_dim=256, num_query_heads=8, num_key_value_heads=2,
                               intermediate_dim=768),
             memory_runs=[MEMORY_RUNS[1], MEMORY_RUNS[3]], memory_calibration=(8, 128))
# Held-out perplexity over `eval_windows` windows of 128 bytes spread evenly over the held-out text.
FULL = dict(model={}, training={}, patterns=PATTERNS, owl=OWL, calibration=(128, 128), eval_windows=512,
            memory_model=MEMORY_MODEL, memory_runs=MEMORY_RUNS, memory_calibration=(16, 256))


def sparsity_arg(pattern):
    return pattern if ":" in pattern else float(pattern)


def label(method, comparison):
    return f"magnitude ({'per matrix' if comparison == 'matrix' else 'per output'})" if method == "magnitude" \
        else {"wanda": "Wanda", "sparsegpt": "SparseGPT"}[method]


# ------------------------------------------------------------ perplexity
def perplexity_runs(settings, log):
    import keras

    import kprune

    text = text_lm.corpus()
    log(f"corpus: {text.info()}")
    _, record = text_lm.trained_model("llama3", settings["model"], settings["training"], text, log=log)
    origin = "cached" if record["cached"] else f"trained in {record['train_seconds']} s"
    log(f"model: {record['params']} parameters, final training loss {record['final_loss']:.3f}, {origin}")
    n, seq = settings["calibration"]
    data = text_lm.calibration(text.train, n, seq, seed=0)

    def fresh():
        keras.backend.clear_session()
        model, _ = text_lm.trained_model("llama3", settings["model"], settings["training"], text)
        return model

    def evaluate(model):
        return text_lm.perplexity(model, text.held_out, seq_len=128, max_windows=settings["eval_windows"])

    results = {"dense": {"perplexity": evaluate(fresh())}}
    log(f"dense: perplexity {results['dense']['perplexity']:.3f}")
    # N:M groups run along each output's inputs: magnitude has one N:M form (per output).
    runs = [(m, c, p, "uniform") for p in settings["patterns"] for m, c in METHODS
            if not (":" in p and c == "matrix")]
    runs += [(m, None, p, "owl") for m, p in settings["owl"]]
    for method, comparison, pattern, ratios in runs:
        model = fresh()
        report = kprune.prune_oneshot(model, sparsity_arg(pattern), method=method, data=data, ratios=ratios,
                                      comparison=comparison, measure_error=True, verbose=0)
        name = f"{label(method, comparison)}{' + OWL' if ratios == 'owl' else ''} @ {pattern}"
        results[name] = {
            "method": method, "comparison": comparison, "pattern": pattern, "ratios": ratios,
            "perplexity": evaluate(model), "seconds": round(report.seconds, 2),
            "sparsity": report.overall_sparsity,
            "errors": {layer.name: layer.error for layer in report.layers},
            "block_sparsity": report.block_sparsity, "outlier_ratios": report.outlier_ratios,
        }
        log(f"{name}: perplexity {results[name]['perplexity']:.3f}, sparsity {report.overall_sparsity:.3f}, "
            f"{report.seconds:.1f} s")
    return {"model": record, "corpus": text.info(), "calibration": {"windows": n, "seq_len": seq},
            "runs": results}


# -------------------------------------------------------------- memory
def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_worker(method, pattern, batch_size, config, calibration):
    """One pruning in this process: seconds and resident memory (a JSON line on stdout)."""
    import keras

    import kprune

    keras.utils.set_random_seed(0)
    model = text_lm.build("llama3", **config)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0.0, 0.02, size=w.shape).astype(w.dtype) for w in model.get_weights()])
    n, seq = calibration
    ids = rng.integers(0, text_lm.VOCABULARY, size=(n, seq)).astype("int32")
    data = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    model({k: v[:2] for k, v in data.items()})  # warm-up: the first call's allocations are not pruning's
    weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    # The baseline is live memory only: the heap pages that building the model freed go back to the
    # system first (else pruning reuses them unseen and the peak is undercounted).
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before, peak, stop = rss_bytes(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    owl = pattern.endswith("owl")
    sparsity = sparsity_arg(pattern.replace("owl", ""))
    start = time.perf_counter()
    report = kprune.prune_oneshot(model, sparsity, method=method, data=data, ratios="owl" if owl else "uniform",
                                  batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    peak[0] = max(peak[0], rss_bytes())
    print(json.dumps({"method": method, "pattern": pattern, "batch_size": batch_size, "seconds": seconds,
                      "weight_bytes": weight_bytes,
                      "rss_before": before, "rss_peak": peak[0], "sparsity": report.overall_sparsity,
                      "statistics_bytes": report.peak_statistics_bytes,
                      "activation_bytes": report.peak_activation_bytes,
                      "calibration_tokens": n * seq, "params": int(model.count_params())}))


def memory_runs(settings, log):
    results = []
    for method, pattern, batch_size in settings["memory_runs"]:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", method, pattern, str(batch_size),
               json.dumps(settings["memory_model"]), json.dumps(settings["memory_calibration"])]
        # Every allocation of 128 KiB or more is its own mapping, returned to the system when freed:
        # resident memory follows what is held (glibc's default raises this threshold as memory is freed).
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                              env=common.child_env(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072"))
        if done.returncode:
            raise RuntimeError(f"memory worker {method} {pattern} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["extra_bytes"] = result["rss_peak"] - result["rss_before"]
        result["extra_over_weights"] = result["extra_bytes"] / result["weight_bytes"]
        results.append(result)
        log(f"memory {method} {pattern} (batch {batch_size}): {result['seconds']:.1f} s, "
            f"peak +{result['extra_bytes'] / 2**20:.0f} MiB "
            f"= {result['extra_over_weights']:.2f} x weights ({result['weight_bytes'] / 2**20:.0f} MiB)")
    return results


# ------------------------------------------------------------ the report
def analyse(perplexity, memory, patterns):
    runs = perplexity["runs"]
    dense = runs["dense"]["perplexity"]
    goals, lowest = [], {}
    for pattern in patterns:
        by_method = {name: r for name, r in runs.items() if name != "dense" and r["pattern"] == pattern
                     and r["ratios"] == "uniform"}
        sgpt = next(r for r in by_method.values() if r["method"] == "sparsegpt")
        others = [r for r in by_method.values() if r["method"] != "sparsegpt"]
        layers = list(sgpt["errors"])
        wins = sum(all(sgpt["errors"][name] <= o["errors"][name] for o in others) for name in layers)
        lowest[pattern] = (wins, len(layers))
    goals.append({"goal": "SparseGPT has the lowest reconstruction error in every layer",
                  "pass": all(w == n for w, n in lowest.values()),
                  "display": ", ".join(f"{p}: {w}/{n} layers" for p, (w, n) in lowest.items())})
    for pattern in [p for p in ("0.5", "2:4") if p in patterns]:
        baseline = runs.get(f"magnitude (per matrix) @ {pattern}") or runs[f"magnitude (per output) @ {pattern}"]
        magnitude = baseline["perplexity"] - dense
        for method in ("SparseGPT", "Wanda"):
            rise = runs[f"{method} @ {pattern}"]["perplexity"] - dense
            goals.append({"goal": f"{method}'s perplexity rise at {pattern} at most half of magnitude's",
                          "pass": rise <= 0.5 * magnitude,
                          "display": f"+{rise:.3f} vs magnitude +{magnitude:.3f} (dense {dense:.3f})"})
    worst = max((r for r in memory if r["batch_size"] == 1), key=lambda r: r["extra_over_weights"])
    goals.append({"goal": "peak memory during pruning at most weights + 0.5 x weights",
                  "pass": worst["extra_over_weights"] <= 0.5,
                  "display": f"worst {worst['method']} {worst['pattern']} (one example per block call, as the "
                             f"references): +{worst['extra_over_weights']:.2f} x weights above the resident memory "
                             "before the call"})
    return goals, lowest


def markdown(perplexity, memory, goals, lowest, settings):
    runs = perplexity["runs"]
    model, corpus = perplexity["model"], perplexity["corpus"]
    lines = [
        f"Tiny Llama 3 ({model['params']:,} parameters: {model['config']}), byte-level, trained "
        f"{model['training']['steps']} steps ({model['train_seconds']} s, backend {model['backend']}, final "
        f"training loss {model['final_loss']:.3f}) on the standard library's docstrings of Python "
        f"{corpus['python']} (corpus SHA-256 `{corpus['sha256'][:16]}...`, {corpus['train_bytes']:,} training "
        f"bytes from {corpus['train_modules']} modules, {corpus['held_out_bytes']:,} held-out bytes from "
        f"{corpus['held_out_modules']} other modules; perplexity over "
        f"{settings['eval_windows'] or 'all'} windows of 128 bytes spread over it). "
        f"Calibration: {perplexity['calibration']['windows']} "
        f"random training windows of {perplexity['calibration']['seq_len']} bytes. Sparsity counts the "
        f"{7 * model['config']['num_layers']} linear layers of the blocks; embeddings and the LM head stay dense.",
        "", "## Goals", "", common.goal_lines(goals), "",
        "Command: `python benchmarks/bench_llm.py`" + (" --quick" if settings is QUICK else "") + ".", "",
        "## Held-out perplexity", "",
        f"Dense: **{runs['dense']['perplexity']:.3f}**.", "",
    ]
    names = [label(m, c) for m, c in METHODS]
    rows = []
    for name in names:
        rows.append([name] + [common.num(runs[f"{name} @ {p}"]["perplexity"], ".3f") if f"{name} @ {p}" in runs
                              else "(per output)" for p in settings["patterns"]])
    for method in ("Wanda", "SparseGPT"):
        row = [f"{method} + OWL"]
        for p in settings["patterns"]:
            r = runs.get(f"{method} + OWL @ {p}")
            row.append(common.num(r["perplexity"], ".3f") if r else "")
        if any(row[1:]):
            rows.append(row)
    lines += [common.md_table(["method"] + [f"{p}:" for p in settings["patterns"]], rows), ""]
    lines += ["## Reconstruction error", "",
              f"Mean over the {7 * model['config']['num_layers']} layers of `||XW - XW'||^2 / ||XW||^2` on each "
              "layer's calibration inputs "
              "(in the model pruned by that method); SparseGPT lowest in: "
              + ", ".join(f"{p}: {w}/{n} layers" for p, (w, n) in lowest.items()) + ".", ""]
    rows = []
    for name in names:
        row = [name]
        for p in settings["patterns"]:
            r = runs.get(f"{name} @ {p}")
            row.append(common.num(float(np.mean(list(r["errors"].values()))), ".4f") if r else "")
        rows.append(row)
    lines += [common.md_table(["method"] + [f"{p}:" for p in settings["patterns"]], rows), ""]
    sgpt = runs.get("SparseGPT @ 0.5") or runs[f"SparseGPT @ {settings['patterns'][0]}"]
    wanda = runs.get("Wanda @ 0.5") or runs[f"Wanda @ {settings['patterns'][0]}"]
    magnitude = runs.get("magnitude (per matrix) @ 0.5") or runs[f"magnitude (per output) @ {settings['patterns'][0]}"]
    lines += [f"Per layer at {sgpt['pattern']}:", ""]
    rows = [[name, common.num(magnitude["errors"][name], ".4f"), common.num(wanda["errors"][name], ".4f"),
             common.num(sgpt["errors"][name], ".4f")] for name in sgpt["errors"]]
    lines += [common.md_table(["layer", "magnitude:", "Wanda:", "SparseGPT:"], rows), ""]
    owl = [(n, r) for n, r in runs.items() if r.get("ratios") == "owl"]
    if owl:
        lines += ["## OWL", "", "Per-block sparsity (outlier ratio, %) of each OWL run:", ""]
        rows = [[n, ", ".join(f"{s:.3f} ({r['outlier_ratios'][b]:.2f})" for b, s in r["block_sparsity"].items())]
                for n, r in owl]
        lines += [common.md_table(["run", "blocks 0..n"], rows), ""]
    first = memory[0]
    lines += ["## Time and memory", "",
              f"Random-weight Llama 3 ({first['params']:,} parameters, {first['weight_bytes'] / 2**20:.0f} MiB of "
              f"float32 weights: {settings['memory_model']}), {first['calibration_tokens']:,} calibration tokens, "
              "each method in a fresh process (TensorFlow backend, 2 CPU cores shared with other users' work: the "
              "seconds are inflated by their load). *Peak above before*: the highest "
              "resident memory during `prune_oneshot` (sampled every 2 ms) minus the resident memory just before "
              "it (model built, called once, freed heap pages returned with `malloc_trim(0)`; glibc's "
              "`MALLOC_MMAP_THRESHOLD_=131072`, so that freed arrays leave the resident set). *Statistics* and "
              "*activations*: the most bytes kprune held at once (one block's statistics; the activations "
              "crossing a block).", ""]
    rows = [[f"{r['method']} {r['pattern']}", r["batch_size"], common.num(r["seconds"], ".1f"),
             common.num(r["extra_bytes"] / 2**20, ".0f"), common.num(r["extra_over_weights"], ".2f"),
             common.num(r["statistics_bytes"] / 2**20, ".1f"), common.num(r["activation_bytes"] / 2**20, ".1f")]
            for r in memory]
    lines += [common.md_table(["run", "batch:", "seconds:", "peak above before (MiB):", "x weights:",
                               "statistics (MiB):", "activations (MiB):"], rows), ""]
    rows = [[name, common.num(r["seconds"], ".1f")] for name, r in runs.items()
            if name != "dense" and r["pattern"] in ("0.5", "2:4") and r["ratios"] == "uniform"]
    lines += ["Seconds of `prune_oneshot` on the tiny model (with `measure_error=True`, which adds a Hessian "
              "per input to Wanda and magnitude; on 2 cores shared with other work, so inflated by its load):", "",
              common.md_table(["run", "seconds:"], rows), ""]
    return "\n".join(lines)


def main():
    args = common.parser(__doc__).parse_args()
    run = common.Run("llm", args.quick)
    settings = QUICK if args.quick else FULL
    perplexity = perplexity_runs(settings, run.log)
    memory = memory_runs(settings, run.log)
    goals, lowest = analyse(perplexity, memory, settings["patterns"])
    data = {"perplexity": perplexity, "memory": memory, "goals": goals}
    run.write(data, markdown(perplexity, memory, goals, lowest, settings),
              "One-shot pruning of a language model (Wanda, SparseGPT, OWL)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        memory_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5]), json.loads(sys.argv[6]))
    else:
        main()
