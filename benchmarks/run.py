#!/usr/bin/env python
"""Run every kprune benchmark and write one report.

Runs `bench_training.py`, `bench_channels.py` and `bench_export.py` one after
the other (each in its own process, so no TensorFlow state is shared and a
crash in one does not stop the others), streams their progress, collects the
JSON each writes, and writes:

- `results.md`: tables for people -- training overhead vs plain Keras 3 and
  vs tfmot, mask-update cost, export sizes, TFLite latency (dense vs
  unstructured vs structured vs int8, all on one model in one run, plus the
  channel benchmark's ResNet-like and MobileNetV2 rows), accuracy, goals;
- `results.json`: every benchmark's JSON, its exit status, run time and log.

Full runs write the benchmarks' JSON to `benchmarks/results/<name>.json` and
the report to `benchmarks/results.md` / `benchmarks/results.json`. `--quick`
(smoke runs, about 4 minutes in all) writes everything under
`benchmarks/results/quick/` instead, so it never overwrites full results.
Each benchmark's output is also saved to `<results>/logs/<name>.log`.

Usage:
    python benchmarks/run.py [--quick] [--only NAME[,NAME]] [--render-only]

`--render-only` skips running and rebuilds the report from the JSON already
there (e.g. after running one benchmark by hand). The exit status is 1 if a
benchmark failed or its JSON is missing; missed goals do not fail the run.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

from bench_io import write_atomic  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = (  # name, script; the JSON is <results dir>/<name>.json
    ("training", "bench_training.py"),
    ("channels", "bench_channels.py"),
    ("export", "bench_export.py"),
)  # bench_training.py also runs bench_backends.py's per-backend measurement
TIMEOUT_S = {"quick": 900, "full": 3600}


def log(msg):
    print(f"[run {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def paths(quick):
    results = os.path.join(HERE, "results", "quick") if quick else os.path.join(HERE, "results")
    report = results if quick else HERE
    return {"results": results, "logs": os.path.join(results, "logs"),
            "md": os.path.join(report, "results.md"), "json": os.path.join(report, "results.json")}


def rel(path):
    return os.path.relpath(path, os.path.dirname(HERE))


# -------------------------------------------------------------------- running
def run_benchmark(name, script, quick, where, timeout):
    """Run one benchmark, echoing its output; a dict describing the run."""
    out = os.path.join(where["results"], f"{name}.json")
    log_path = os.path.join(where["logs"], f"{name}.log")
    cmd = [sys.executable, os.path.join(HERE, script), "--out", out] + (["--quick"] if quick else [])
    log(f"{name}: {' '.join([os.path.basename(sys.executable)] + [rel(c) if os.path.isabs(c) else c for c in cmd[1:]])}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start, started = time.perf_counter(), time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=os.path.dirname(HERE))
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        with open(log_path, "w") as log_file:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log_file.write(line)
        proc.wait()
    finally:
        timer.cancel()
    run = {"script": script, "command": " ".join(["python", rel(os.path.join(HERE, script)), *cmd[2:]]),
           "returncode": proc.returncode, "elapsed_s": time.perf_counter() - start,
           "json": rel(out), "log": rel(log_path)}
    fresh = os.path.exists(out) and os.path.getmtime(out) >= started - 1
    if proc.returncode < 0:
        run["status"] = f"killed (signal {-proc.returncode}; time limit {timeout}s)"
    elif not fresh:
        run["status"] = f"failed: exit status {proc.returncode}, no JSON written"
    elif proc.returncode:
        run["status"] = f"finished with errors (exit status {proc.returncode}; see its JSON)"
    else:
        run["status"] = "ok"
    run["fresh"] = fresh
    log(f"{name}: {run['status']} in {run['elapsed_s']:.0f}s")
    return run


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------- formatting
def table(headers, rows):
    """A Markdown table; `headers` ending in ':' are right-aligned."""
    names = [h.rstrip(":") for h in headers]
    lines = ["| " + " | ".join(names) + " |",
             "|" + "|".join("---:" if h.endswith(":") else "---" for h in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def num(v, spec=".2f", suffix=""):
    if v is None:
        return "n/a"
    try:
        return format(v, spec) + suffix
    except (TypeError, ValueError):
        return str(v)


def ratio(a, b):
    try:
        return a / b
    except (TypeError, ZeroDivisionError):
        return None


def section_training(r):
    cfg = r.get("config", {})
    train = r.get("training", {}) or {}
    k3, tm = train.get("keras3") or {}, train.get("tfmot") or {}
    freqs = cfg.get("frequencies", [100, 10])
    steps = (cfg.get("timed_chunks") or 0) * (cfg.get("chunk_steps") or 0)
    lines = [
        "## Training overhead",
        "",
        f"`bench_training.py`: the tfmot tutorial's MNIST CNN ({num(k3.get('params') or tm.get('params'), ',')} "
        f"params), batch {cfg.get('batch_size')}, ConstantSparsity({cfg.get('sparsity')}) with mask updates every "
        f"{' or '.join(str(f) for f in freqs)} steps (included in the step times), synthetic data; {steps} timed "
        "steps per variant, interleaved. Keras 3 + kprune in one process, tf_keras + tfmot in a subprocess "
        "(`TF_USE_LEGACY_KERAS=1`).",
        "",
    ]
    rows = []
    for lib, t, pruned in (("Keras 3", k3, "kprune"), ("tf_keras", tm, "tfmot")):
        if not t:
            rows.append([lib, "(not run: " + str((r.get("errors") or {}).get("tfmot" if lib == "tf_keras" else "keras3", "no data")) + ")", "", "", "", "", ""])
            continue
        for key in ["plain"] + [f"pruned_f{f}" for f in freqs]:
            v = t.get(key) or {}
            variant = "plain" if key == "plain" else f"{pruned} f={v.get('frequency', key.split('_f')[-1])}"
            rows.append([lib, variant, num(v.get("median_ms")), num(v.get("mean_ms")),
                         num(v.get("median_ratio", 1.0 if key == "plain" else None), ".3f"),
                         num(v.get("mean_ratio", 1.0 if key == "plain" else None), ".3f"), v.get("mask_updates", 0)])
    lines += table(["library", "variant", "median ms:", "mean ms:", "median / plain:", "mean / plain:", "mask updates:"], rows)
    if k3 and tm:
        lines += ["", "Pruned step time, kprune vs tfmot (absolute, same architecture and schedule):", ""]
        rows = []
        for f in freqs:
            a, b = k3.get(f"pruned_f{f}") or {}, tm.get(f"pruned_f{f}") or {}
            rows.append([f"f={f}", num(ratio(a.get("median_ms"), b.get("median_ms")), ".3f"),
                         num(ratio(a.get("mean_ms"), b.get("mean_ms")), ".3f")])
        lines += table(["mask updates every", "median kprune / tfmot:", "mean kprune / tfmot:"], rows)
    ch = r.get("channels") or {}
    if ch:
        lines += ["", f"Gradual channel pruning (`kprune.prune_channels`, tfmot has none): {ch.get('model')} "
                  f"({num(ch.get('params'), ',')} params), {ch.get('schedule')}, batch {cfg.get('batch_size')}, "
                  f"{(cfg.get('channel_timed_chunks') or 0) * (cfg.get('chunk_steps') or 0)} timed steps per "
                  "variant, interleaved.", ""]
        rows = []
        for key in ["plain"] + [f"pruned_f{f}" for f in freqs]:
            v = ch.get(key) or {}
            variant = "plain" if key == "plain" else f"prune_channels f={v.get('frequency')}"
            rows.append([variant, num(v.get("median_ms")), num(v.get("mean_ms")),
                         num(v.get("median_ratio", 1.0 if key == "plain" else None), ".3f"),
                         num(v.get("mean_ratio", 1.0 if key == "plain" else None), ".3f"), v.get("mask_updates", 0)])
        lines += table(["variant", "median ms:", "mean ms:", "median / plain:", "mean / plain:", "mask updates:"], rows)
    masks = r.get("mask_update") or []
    if masks:
        lines += ["", "## Mask-update cost", "",
                  f"One Dense kernel pruned to {cfg.get('sparsity')}: kprune `update_masks` (compute and assign mask "
                  "and masked weights) vs tfmot's mask update (its faster of eager and `tf.function`); median of "
                  f"{masks[0].get('repeats')} repeats. \"x read\": the time over one `np.abs(w).sum()` pass on the same "
                  "array (tfmot's against that pass timed in its own process). \"re-prune\": weights already at the "
                  "target sparsity.", ""]
        rows = []
        for m in masks:
            shape = "x".join(str(d) for d in m.get("shape", [])) or str(m.get("size"))
            rows.append([shape, num(m.get("abs_sum_ms"), ".1f"), num(m.get("kprune_update_masks_ms"), ".1f"),
                         num(m.get("kprune_vs_read"), ".2f", "x"), num(m.get("tfmot_best_ms"), ".1f"),
                         num(m.get("tfmot_vs_read"), ".1f", "x"), num(m.get("kprune_update_masks_reprune_ms"), ".1f"),
                         num(m.get("kprune_reprune_vs_read"), ".2f", "x"), num(m.get("tfmot_best_reprune_ms"), ".1f"),
                         num(m.get("tfmot_reprune_vs_read"), ".1f", "x")])
        lines += table(["kernel", "abs.sum ms:", "kprune ms:", "kprune x read:", "tfmot ms:", "tfmot x read:",
                        "re-prune kprune ms:", "x read:", "re-prune tfmot ms:", "x read:"], rows)
    memory = r.get("memory") or {}
    if memory:
        mib = 1 << 20
        lines += ["", "## Memory", "",
                  f"`prune_low_magnitude` on {memory.get('mlp')} ({num(memory.get('params'), ',')} params, "
                  f"{memory['weight_bytes'] / mib:.0f} MiB of float32 weights; boolean masks "
                  f"{memory['mask_bytes'] / mib:.0f} MiB), in a fresh process: resident memory "
                  f"+{(memory['rss_after_prune'] - memory['rss_before']) / mib:.0f} MiB, i.e. the clone plus "
                  f"{memory['added_over_clone']:.3f}x the weights' bytes; peak "
                  f"+{(memory['peak_after_prune'] - memory['rss_before']) / mib:.0f} MiB. `update_masks({cfg.get('sparsity')})` "
                  f"of all {num(memory.get('params'), ',')} weights: {memory['update_masks_s']:.2f} s, resident "
                  f"+{(memory['rss_after_update'] - memory['rss_before']) / mib:.0f} MiB in all."]
    return lines


def export_rows(r):
    return [(s, "kprune") for s in r.get("steps") or []] + [(s, "tfmot") for s in r.get("tfmot_steps") or []]


def section_export_sizes(r):
    cfg, info = r.get("config", {}), r.get("info", {})
    steps = r.get("steps") or []
    dense = next((s for s in steps if s.get("key") == "dense_fp32"), {})
    goals = cfg.get("goals", {})
    lines = [
        "## Export sizes",
        "",
        f"`bench_export.py`: the same MNIST CNN trained on scikit-learn digits resized to 28x28 "
        f"({num((r.get('data') or {}).get('train'), 'd')} train / {num((r.get('data') or {}).get('test'), 'd')} test), "
        f"exported with `kprune.export_tflite`. Unstructured: `prune_low_magnitude` + PolynomialDecay "
        f"{' -> '.join(str(v) for v in cfg.get('sparsity', []))} over {cfg.get('prune_epochs')} epochs; structured: "
        f"`plan_channels({cfg.get('channel_sparsity')}, round_to={cfg.get('round_to')})` + `remove_channels` "
        f"(widths {info.get('structured_widths')}), fine-tuned {cfg.get('structured_epochs')} epochs. gzip at level 9. "
        f"Goals: 90% float32 gzip <= {num((goals.get('fp32_gzip_bytes') or 0) / 1e6, 'g')} MB, int8 <= "
        f"{num((goals.get('int8_gzip_bytes') or 0) / 1e6, 'g')} MB.",
        "",
    ]
    rows = []
    for s, lib in export_rows(r):
        size_goal = [g for g in s.get("goals", []) if "gzip" in g.get("goal", "")]
        rows.append([s.get("label", s.get("key")), lib, s.get("quantization"),
                     "sparse" if s.get("sparse_encoding") else "dense", num(s.get("params"), ","),
                     num(s.get("nonzero_params"), ","), num(s.get("file_bytes"), ","), num(s.get("gzip_bytes"), ","),
                     num(ratio(dense.get("gzip_bytes"), s.get("gzip_bytes")), ".1f", "x"),
                     ("PASS" if all(g.get("pass") for g in size_goal) else "MISS") if size_goal else ""])
    lines += table(["step", "library", "weights", "encoding", "params:", "nonzero:", "file bytes:", "gzip bytes:",
                    "gzip vs dense:", "size goal"], rows)
    if r.get("tfmot_error"):
        lines += ["", f"tfmot pipeline: {r['tfmot_error']}"]
    if r.get("tfmot_steps"):
        lines += ["", "kprune's export also removes the Dense units that no unpruned weight reads any more "
                  "(`remove_pruned_channels=True`; outputs unchanged), hence its smaller parameter counts; tfmot's "
                  "`strip_pruning` + `TFLiteConverter` keeps them."]
    return lines


def section_latency(export, channels):
    lines = ["## TFLite latency: dense vs unstructured vs structured vs int8", ""]
    if export:
        lat = export.get("latency") or {}
        noise, ref = lat.get("noise_control") or {}, lat.get("dense_reference") or {}
        lines += [
            "One model, one run (`bench_export.py`): LiteRT, 1 thread, batch 1; all files in interleaved rounds "
            f"({lat.get('rounds')} rounds, order rotated and reversed each round), median and 10th percentile "
            "per invoke. Speedups are relative to the dense float32 file"
            + (f" ({num(ref.get('ms'), '.3f')} ms: the median of its invokes in two interpreters, pooled)"
               if ref else "")
            + f". Noise check: the dense file's two interpreters differ by x{num(noise.get('speedup'))} "
            f"(p10 x{num(noise.get('speedup_p10'))}); read speedups within about that margin.",
            "",
        ]
        rows = []
        for s, lib in export_rows(export):
            if s.get("latency_ms") is None:
                continue
            rows.append([s.get("label", s.get("key")), lib, s.get("kind"), s.get("quantization"),
                         num(s.get("macs"), ","), num(s.get("latency_ms"), ".3f"), num(s.get("latency_p10_ms"), ".3f"),
                         num(s.get("speedup"), ".2f", "x"), num(s.get("speedup_p10"), ".2f", "x")])
        lines += table(["step", "library", "pruning", "weights", "MACs:", "median ms:", "p10 ms:", "speedup:",
                        "p10 speedup:"], rows)
    else:
        lines += ["_No export results._"]
    lines += [""]
    if channels:
        cfg = channels.get("config") or {}
        lines += [
            "### Structured pruning on larger models (`bench_channels.py`)",
            "",
            "`plan_channels` (l2) + `mask_channels` + `remove_channels` at several channel sparsities and "
            "`round_to`, float32 TFLite, LiteRT 1 thread, dense and pruned interleaved; seeded random weights. "
            f"Goal: speedup >= {cfg.get('goal', 0.8)} x MAC reduction.",
            "",
        ]
        for m in channels.get("models") or []:
            shape = "x".join(str(d) for d in m.get("input_shape", []))
            lines += [f"**{m.get('model')}** ({shape} input, {num(m.get('params'), ',')} params, "
                      f"{num((m.get('macs') or 0) / 1e6, '.1f')}M MACs)", ""]
            rows = []
            for row in m.get("rows") or []:
                rows.append([num(row.get("sparsity")), row.get("round_to"), num(row.get("mac_reduction"), ".2f", "x"),
                             num(row.get("dense_ms")), num(row.get("pruned_ms")), num(row.get("speedup"), ".2f", "x"),
                             num(row.get("efficiency")), num(row.get("speedup_p10"), ".2f", "x"),
                             "yes" if row.get("outputs_match", True) else "NO"])
            lines += table(["channel sparsity:", "round_to:", "MAC reduction:", "dense ms:", "pruned ms:",
                            "speedup:", "speedup / MAC red.:", "p10 speedup:", "outputs match"], rows)
            lines += [""]
    else:
        lines += ["_No channel benchmark results._", ""]
    return lines[:-1]


def section_accuracy(r):
    dense = r.get("dense_accuracy")
    drop = (r.get("config") or {}).get("goals", {}).get("accuracy_drop", 0.01)
    lines = ["## Accuracy", "",
             f"`bench_export.py`, test set of {num((r.get('data') or {}).get('test'), 'd')} digits; dense Keras "
             f"accuracy {num(dense, '.4f')}. Goal: every step within {num(drop * 100, 'g')} point of it, in Keras "
             "and in LiteRT (an int8/dynamic row's Keras accuracy is its float model's).", ""]
    rows = []
    for s, lib in export_rows(r):
        ka, ta = s.get("keras_accuracy"), s.get("tflite_accuracy")
        worst = min((a for a in (ka, ta) if a is not None), default=None)
        delta = None if worst is None or dense is None else (worst - dense) * 100
        ok = "" if delta is None else ("yes" if worst >= dense - drop - 1e-9 else "NO")
        rows.append([s.get("label", s.get("key")), lib, num(ka, ".4f"), num(ta, ".4f"),
                     num(delta, "+.2f"), ok])
    lines += table(["step", "library", "Keras:", "LiteRT:", "worst - dense (points):", "within goal"], rows)
    return lines


def all_goals(results):
    """(benchmark, PASS/MISS, text) for every goal, whatever each JSON's shape."""
    out = []
    for name, r in results.items():
        for g in (r or {}).get("goals") or []:
            if not isinstance(g, dict):
                continue
            if "pass" in g:  # training and export: {"goal", "pass", ["display"]}
                text = g.get("goal", "?") + (f": {g['display']}" if g.get("display") else "")
                out.append((name, g["pass"], text))
            elif "median_pass" in g:  # channels: per model and round_to
                sparsities = "/".join(str(s) for s in g.get("sparsities", []))
                for stat in ("median", "p10"):
                    values = " / ".join(num(v) for v in g.get(stat) or [])
                    out.append((name, g.get(f"{stat}_pass"),
                                f"{g.get('model')} round_to={g.get('round_to')}: {stat} speedup / MAC reduction "
                                f"{values} (sparsity {sparsities})"))
    return out


def section_backends(r):
    """Pruned/plain step-time ratios per Keras backend (measured by
    `bench_training.py` with `bench_backends.measure`)."""
    lines = ["## Training overhead on each Keras backend", "",
             "`bench_training.py` (per-backend part, `bench_backends.py`): its MNIST CNN, plain vs kprune "
             f"ConstantSparsity({r.get('sparsity')}), one subprocess per installed backend, "
             "NumPy input; ratios of pruned to plain step time.", ""]
    rows = []
    for backend, b in (r.get("backends") or {}).items():
        q = b.get("ratios") or {}
        rows.append([backend, num(b["variants"]["plain"]["median_ms"], ".1f", " ms"),
                     num(q.get("f100_median"), ".3f"), num(q.get("f100_mean"), ".3f"),
                     num(q.get("f10_median"), ".3f"), num(q.get("f10_mean"), ".3f")])
    return lines + table(["backend", "plain step (median)", "f100 median", "f100 mean",
                          "f10 median", "f10 mean"], rows)


def render(results, runs, meta):
    lines = [
        "# kprune benchmarks" + (" (quick smoke run)" if meta["quick"] else ""),
        "",
        f"Generated {meta['generated']} by `{meta['command']}` on {meta['platform']} ({meta['cpu_count']} cores). "
        "Times are from one run on a shared machine; other processes may have been running (load averages in "
        "each benchmark's JSON), so latency and step-time figures carry a few percent of noise -- compare ratios "
        "measured within one benchmark, not absolute figures across runs."
        + (" Quick runs use few steps and epochs: use them to check the pipeline, not the numbers." if meta["quick"] else ""),
        "",
    ]
    rows = []
    for name, _ in BENCHMARKS:
        run = runs.get(name) or {}
        r = results.get(name) or {}
        rows.append([name, run.get("status", "not run (JSON from an earlier run)" if r else "no results"),
                     num(run.get("elapsed_s"), ".0f", " s") if run else num(r.get("elapsed_s"), ".0f", " s"),
                     r.get("started", "n/a"), "quick" if r.get("quick") else ("full" if r else "n/a"),
                     f"`{run.get('json') or rel(os.path.join(meta['results_dir'], name + '.json'))}`"])
    lines += table(["benchmark", "status", "run time:", "started", "mode", "JSON"], rows)
    if meta.get("total_s") is not None:
        lines += ["", f"Total run time {meta['total_s']:.0f} s."]
    sections = (
        ("training", lambda: section_training(results["training"])),
        ("export", lambda: section_export_sizes(results["export"])),
        (None, lambda: section_latency(results.get("export"), results.get("channels"))),
        ("export", lambda: section_accuracy(results["export"])),
        ("training", lambda: section_backends(results["training"].get("backends") or {})),
    )
    for needs, build in sections:
        lines.append("")
        if needs and not results.get(needs):
            lines += [f"_No {needs} results._"]
            continue
        try:
            lines += build()
        except Exception as e:  # a changed JSON shape must not lose the rest of the report
            lines += [f"_Could not format {needs or 'latency'} results ({type(e).__name__}: {e}); see the JSON._"]
    goals = all_goals(results)
    lines += ["", "## Goals", ""]
    lines += table(["benchmark", "result", "goal"],
                   [[b, "PASS" if p else "MISS", t] for b, p, t in goals]) if goals else ["_No goals recorded._"]
    errors = [(n, e) for n, r in results.items() if r for e in error_texts(r.get("errors"))]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {n}: {e}" for n, e in errors]
    return "\n".join(lines) + "\n"


def error_texts(errors):
    """A benchmark's errors (a list, or a dict by part) as strings."""
    if isinstance(errors, dict):
        return [f"{k}: {v}" for k, v in errors.items()]
    return [str(e) for e in errors or []]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke runs of every benchmark; results under benchmarks/results/quick/")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(n for n, _ in BENCHMARKS))
    parser.add_argument("--render-only", action="store_true", help="do not run; rebuild the report from existing JSON")
    args = parser.parse_args(argv)

    names = [n for n, _ in BENCHMARKS]
    selected = names if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(selected) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {names}")
    where = paths(args.quick)
    mode = "quick" if args.quick else "full"
    start = time.perf_counter()
    runs = {}
    if not args.render_only:
        os.makedirs(where["logs"], exist_ok=True)
        for k, (name, script) in enumerate((n, s) for n, s in BENCHMARKS if n in selected):
            log(f"[{k + 1}/{len(selected)}] {name} ({mode})")
            runs[name] = run_benchmark(name, script, args.quick, where, TIMEOUT_S[mode])
    results = {name: load(os.path.join(where["results"], f"{name}.json")) for name in names}
    meta = {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "results_dir": where["results"],
        "total_s": None if args.render_only else time.perf_counter() - start,
    }
    report = {"generated": meta["generated"], "command": meta["command"], "quick": args.quick,
              "total_s": meta["total_s"],
              "benchmarks": {name: {**(runs.get(name) or {}), "result": results[name]} for name in names},
              "goals": [{"benchmark": b, "pass": p, "goal": t} for b, p, t in all_goals(results)]}
    write_atomic(where["json"], json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_atomic(where["md"], render(results, runs, meta))
    log(f"wrote {rel(where['md'])} and {rel(where['json'])}"
        + ("" if args.render_only else f" ({meta['total_s']:.0f}s in all)"))
    failed = [n for n, run in runs.items() if not run.get("fresh") or run.get("returncode")]
    missing = [n for n in selected if results.get(n) is None]
    if failed or missing:
        log(f"problems: failed {failed or 'none'}, no JSON {missing or 'none'}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
