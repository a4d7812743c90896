"""Shrinking a transformer: heads, FFN units and blocks of a tiny Llama 3, with and without healing.

`python benchmarks/bench_transformers.py [--quick]` (issue 25):

1. **The model.** The tiny Llama 3 of `bench_llm.py` (4 layers, hidden 256, 8 query / 2 key-value
   heads (GQA), FFN 768, byte vocabulary), trained here from scratch on the standard library's
   docstrings (`benchmarks/text_lm.py`, cached under `$KPRUNE_CACHE`: the same cache entry as
   `bench_llm.py`, ~10 min to train on 2 cores the first time).
2. **Without healing.** Held-out perplexity after removing 25% and 50% of the query heads
   (`heads="query"`: the same number from each key/value group, Torch-Pruning's LLM default; 25% of
   the 2 key/value groups is not a whole group), 50% of the key/value groups (`heads="kv"`: one of
   two), 25% and 50% of the FFN units (`kprune.plan_channels` + `kprune.remove_channels`, the same
   fraction in every layer, `round_to=1`), and 25% and 50% of the blocks
   (`kprune.transformers.plan_blocks` + `remove_blocks`). Width criteria: `"l2"` (the default
   magnitude), `"activation"` (Minitron), `"taylor_element"` (LLM-Pruner) and random; depth
   criteria: `"block_influence"` (ShortGPT), `"angular"` (Gromov et al.) and random. Random is
   the mean over 3 seeds (a seeded random-score callable for widths; `seed=` for blocks).
   Calibration: random training windows (`text_lm.calibration`); Taylor's targets are their next
   bytes.
3. **Equivalence.** Every removed model against its masked model (`mask_channels` /
   `mask_blocks`): max |delta| of the logits on held-out windows.
4. **Healing.** Two cases, (a) 50% of FFN units + 25% of query heads with the best width
   criterion, (b) 25% of blocks with the best depth criterion: distilled from the dense model
   (`kprune.distiller`, T = 2, alpha = 0: distillation only, as Minitron) for a fixed budget of
   steps, against the same small architecture (same config, fresh initialisation) trained from
   scratch on the labels (`text_lm.train`, the dense model's recipe) for the same steps and batch.
   Both see the same training windows; the distillation uses AdamW at a peak of 5e-4 (the student
   is trained already), training from scratch the dense model's 2e-3; both with warm-up and cosine
   decay.
5. **Cost.** Parameters, MACs (`kprune.count_macs` at the sequence length) and LiteRT latency
   (1 thread, `kprune.export_tflite` of the CausalLM forward at a fixed sequence length, verified
   against Keras; every architecture timed in interleaved rounds) of each shrunk architecture
   against dense. Goal: latency speedup >= 0.8x the MAC reduction.

Goals (issue 25): every removed model output-equivalent to its masked model (max |delta| logits
<= 1e-4); activation and Taylor beat random without healing; pruning + distillation beats training
the small architecture from scratch for the same steps (reported plainly where not).

Left out (time on 2 shared cores): the Gemma model and the ViT on digits of the issue's plan, and
preset round trip / generation (covered by tests/transformers). The full run takes ~20-30 min on 2
shared cores once the model is cached (1,105 s measured on 2026-12-07, load average 3-6: about 8 min
of pruning and perplexity, 8 min of healing, 2 min of export and timing); `--quick` (a 2-layer model
trained 60 steps, 20 steps of healing) ~2 min.
"""

import os
import statistics
import sys
import tempfile
import time

import common
import numpy as np
import text_lm

WIDTH_CRITERIA = ["l2", "activation", "taylor_element", "random"]
BLOCK_CRITERIA = ["block_influence", "angular", "random"]
RANDOM_SEEDS = [0, 1, 2]
# (kind in `sparsity=`, heads=, fraction): the width settings without healing.
WIDTHS = [("heads", "query", 0.25), ("heads", "query", 0.5), ("heads", "kv", 0.5),
          ("channels", "query", 0.25), ("channels", "query", 0.5)]
BLOCK_FRACTIONS = [0.25, 0.5]

QUICK = dict(model=dict(num_layers=2, hidden_dim=64, num_query_heads=4, num_key_value_heads=2, intermediate_dim=192),
             training=dict(steps=60, batch_size=8, seq_len=64), seq_len=64, calibration=(16, 64), eval_windows=32,
             heal=dict(steps=20, batch_size=8, warmup=4), latency_budget_s=0.5, random_seeds=[0, 1])
FULL = dict(model={}, training={}, seq_len=128, calibration=(64, 128), eval_windows=256,
            heal=dict(steps=200, batch_size=16, warmup=20), latency_budget_s=4.0, random_seeds=RANDOM_SEEDS)
DISTILL_LR, SCRATCH_LR = 5e-4, 2e-3


def seeded_random(seed):
    """Random scores per unit, seeded by `seed` and the group (a custom criterion)."""

    def scores(graph, group):
        return np.random.default_rng([seed, group.index, len(group.units)]).random(len(group.units))

    return scores


def schedule(step, steps, warmup, peak):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))


def max_delta(a, b, x):
    import keras

    return float(np.max(np.abs(keras.ops.convert_to_numpy(a(x)) - keras.ops.convert_to_numpy(b(x)))))


class HubRunner:
    """A LiteRT interpreter (1 thread) of a token_ids/padding_mask model, for `common.interleave`."""

    def __init__(self, name, path, x):
        from ai_edge_litert.interpreter import Interpreter

        self.name, self.times, self.per_round = name, [], 1
        self.interpreter = Interpreter(model_path=path, num_threads=1)
        self.interpreter.allocate_tensors()
        for detail in self.interpreter.get_input_details():
            key = "padding_mask" if "padding_mask" in detail["name"] else "token_ids"
            self.interpreter.set_tensor(detail["index"], x[key].astype(detail["dtype"]))

    def run(self, n, record=True):
        invoke, clock = self.interpreter.invoke, time.perf_counter
        for _ in range(n):
            t = clock()
            invoke()
            if record:
                self.times.append(clock() - t)


# ------------------------------------------------------------------ the runs
class Bench:
    def __init__(self, settings, log):
        import keras

        self.keras, self.s, self.log = keras, settings, log
        self.text = text_lm.corpus()
        _, self.record = text_lm.trained_model("llama3", settings["model"], settings["training"], self.text, log=log)
        n, seq = settings["calibration"]
        batch = text_lm.windows(self.text.train, n, seq, seed=0).astype("int32")
        self.calib = {"token_ids": batch[:, :-1], "padding_mask": np.ones_like(batch[:, :-1])}
        self.calib_y = batch[:, 1:]
        seq = settings["seq_len"]
        held = self.text.held_out[:4 * seq].reshape(4, seq).astype("int32")
        self.probe = {"token_ids": held, "padding_mask": np.ones_like(held)}
        self.shapes = {"token_ids": (seq,), "padding_mask": (seq,)}
        self.models = {}  # architecture -> a shrunk model (for the latency)

    def fresh(self):
        self.keras.backend.clear_session()
        model, _ = text_lm.trained_model("llama3", self.s["model"], self.s["training"], self.text)
        return model

    def perplexity(self, model):
        return text_lm.perplexity(model, self.text.held_out, seq_len=self.s["seq_len"],
                                  max_windows=self.s["eval_windows"])

    def width_plan(self, model, sparsity, criterion, heads, seed=0):
        import keras

        import kprune

        kwargs = {}
        if criterion == "activation":
            kwargs["data"] = self.calib
        elif criterion == "taylor_element":
            kwargs.update(data=(self.calib, self.calib_y),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        importance = seeded_random(seed) if criterion == "random" else criterion
        return kprune.plan_channels(model, sparsity, importance=importance, round_to=1, heads=heads, **kwargs)

    def measure(self, arch, model, small, masked):
        import kprune

        result = {"perplexity": self.perplexity(small), "max_delta": max_delta(small, masked, self.probe),
                  "params": int(small.count_params()), "macs": kprune.count_macs(small, self.shapes)}
        self.models.setdefault(arch, small)
        return result

    def width(self, kind, heads, fraction, criterion, seed=0):
        import kprune

        model = self.fresh()
        plan = self.width_plan(model, {kind: fraction}, criterion, heads, seed)
        small = kprune.remove_channels(model, plan)
        masked = kprune.mask_channels(model, plan)
        return self.measure(arch_name(kind, heads, fraction), model, small, masked)

    def depth(self, fraction, criterion, seed=0):
        from kprune import transformers

        model = self.fresh()
        n = max(1, round(fraction * self.s_layers()))
        plan = transformers.plan_blocks(model, n, importance=criterion, data=self.calib, seed=seed)
        small = transformers.remove_blocks(model, plan)
        masked = transformers.mask_blocks(model, plan)
        result = self.measure(f"blocks {fraction:.0%}", model, small, masked)
        result["removed"] = [int(i) for i in plan.removed]
        return result

    def s_layers(self):
        return self.record["config"]["num_layers"]

    def grid(self):
        runs = []
        for kind, heads, fraction in WIDTHS:
            for criterion in WIDTH_CRITERIA:
                seeds = self.s["random_seeds"] if criterion == "random" else [0]
                per_seed = [self.width(kind, heads, fraction, criterion, seed) for seed in seeds]
                runs.append(self.summarise("width", arch_name(kind, heads, fraction), criterion, per_seed))
        for fraction in BLOCK_FRACTIONS:
            for criterion in BLOCK_CRITERIA:
                seeds = self.s["random_seeds"] if criterion == "random" else [0]
                per_seed = [self.depth(fraction, criterion, seed) for seed in seeds]
                runs.append(self.summarise("depth", f"blocks {fraction:.0%}", criterion, per_seed))
        return runs

    def summarise(self, family, arch, criterion, per_seed):
        first = per_seed[0]
        run = {"family": family, "arch": arch, "criterion": criterion,
               "perplexity": statistics.fmean(r["perplexity"] for r in per_seed),
               "perplexities": [r["perplexity"] for r in per_seed],
               "max_delta": max(r["max_delta"] for r in per_seed), "params": first["params"], "macs": first["macs"]}
        if "removed" in first:
            run["removed"] = [r["removed"] for r in per_seed]
        self.log(f"{arch} {criterion}: perplexity {run['perplexity']:.3f} "
                 f"({', '.join(f'{p:.3f}' for p in run['perplexities'])}), max |delta| {run['max_delta']:.2e}")
        return run

    # ------------------------------------------------------------- healing
    def heal_case(self, name, shrink):
        """Distil the shrunk model from the dense one, and train its architecture from scratch."""
        import keras

        import kprune

        heal = self.s["heal"]
        teacher = self.fresh()
        student = shrink(teacher)
        before = self.perplexity(student)
        trainer = kprune.distiller(student, teacher, temperature=2.0, alpha=0.0)
        optimizer = keras.optimizers.AdamW(learning_rate=DISTILL_LR, weight_decay=0.01, clipnorm=1.0)
        trainer.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng, losses, start = np.random.default_rng(0), [], time.perf_counter()
        for step in range(heal["steps"]):
            optimizer.learning_rate.assign(schedule(step, heal["steps"], heal["warmup"], DISTILL_LR))
            batch = text_lm.windows(self.text.train, heal["batch_size"], self.s["seq_len"],
                                    seed=int(rng.integers(2 ** 31))).astype("int32")
            x = {"token_ids": batch[:, :-1], "padding_mask": np.ones_like(batch[:, :-1])}
            loss = trainer.train_on_batch(x, batch[:, 1:])
            losses.append(float(loss if np.ndim(loss) == 0 else loss[0]))
        distill_s = time.perf_counter() - start
        distilled = self.perplexity(student)
        self.log(f"heal {name}: {before:.3f} -> distilled {distilled:.3f} ({distill_s:.0f} s)")
        # The same architecture, fresh weights, trained on the labels with the dense model's recipe.
        keras.utils.set_random_seed(0)
        scratch = type(student).from_config(student.get_config())
        if scratch.count_params() != student.count_params():
            raise RuntimeError(f"{name}: the scratch model has {scratch.count_params()} parameters, "
                               f"the student {student.count_params()}")
        start = time.perf_counter()
        scratch_losses = text_lm.train(scratch, self.text.train, steps=heal["steps"], batch_size=heal["batch_size"],
                                       seq_len=self.s["seq_len"], learning_rate=SCRATCH_LR, warmup=heal["warmup"],
                                       weight_decay=0.01, seed=0)
        scratch_s = time.perf_counter() - start
        from_scratch = self.perplexity(scratch)
        self.log(f"heal {name}: from scratch {from_scratch:.3f} ({scratch_s:.0f} s)")
        return {"case": name, "params": int(student.count_params()), "before": before, "distilled": distilled,
                "scratch": from_scratch, "distill_seconds": round(distill_s, 1), "scratch_seconds": round(scratch_s, 1),
                "distill_final_loss": float(np.mean(losses[-20:])),
                "scratch_final_loss": float(np.mean(scratch_losses[-20:]))}

    def healing(self, runs):
        import kprune
        from kprune import transformers

        def best(arch, criteria):
            rows = [r for r in runs if r["arch"] == arch and r["criterion"] in criteria]
            return min(rows, key=lambda r: r["perplexity"])["criterion"]

        width_best = best("FFN units 50%", [c for c in WIDTH_CRITERIA if c != "random"])
        depth_best = best("blocks 25%", [c for c in BLOCK_CRITERIA if c != "random"])
        n_blocks = max(1, round(0.25 * self.s_layers()))

        def width_shrink(model):
            plan = self.width_plan(model, {"channels": 0.5, "heads": 0.25}, width_best, "query")
            small = kprune.remove_channels(model, plan)
            masked = kprune.mask_channels(model, plan)
            self.combo_delta = max_delta(small, masked, self.probe)
            self.models.setdefault("FFN 50% + query heads 25%", small)
            return small

        def depth_shrink(model):
            plan = transformers.plan_blocks(model, n_blocks, importance=depth_best, data=self.calib)
            return transformers.remove_blocks(model, plan)

        cases = [self.heal_case(f"FFN units 50% + query heads 25% ({width_best})", width_shrink),
                 self.heal_case(f"blocks 25% ({depth_best})", depth_shrink)]
        cases[0]["max_delta"] = self.combo_delta
        combo = self.models["FFN 50% + query heads 25%"]
        cases[0]["macs"] = kprune.count_macs(combo, self.shapes)
        return cases

    # ------------------------------------------------------------- latency
    def latency(self):
        import kprune

        self.models = {"dense": self.fresh(), **self.models}  # clear_session only drops the graph names
        rows, runners = {}, []
        folder = tempfile.mkdtemp(prefix="bench_transformers_")
        for arch, model in self.models.items():
            path = os.path.join(folder, f"{len(rows)}.tflite")
            start = time.perf_counter()
            with common.quiet():
                report = kprune.export_tflite(model, path, input_shapes=self.shapes, measure_latency=False,
                                              sample_inputs=self.probe)
            rows[arch] = {"params": int(model.count_params()), "macs": kprune.count_macs(model, self.shapes),
                          "report_macs": report.macs, "verified": bool(report.verified),
                          "verification": report.verification, "file_bytes": report.file_bytes,
                          "export_seconds": round(time.perf_counter() - start, 1)}
            self.log(f"exported {arch}: {rows[arch]['macs']:,} MACs, verified {report.verified} "
                     f"({rows[arch]['export_seconds']} s)")
            runners.append(HubRunner(arch, path, {k: v[:1] for k, v in self.probe.items()}))
        stats, _ = common.interleave(runners, self.s["latency_budget_s"])
        dense = stats["dense"]["ms"]
        for arch, row in rows.items():
            row.update(stats[arch])
            row["speedup"] = dense / row["ms"]
            row["mac_reduction"] = rows["dense"]["macs"] / row["macs"]
            self.log(f"latency {arch}: {row['ms']:.2f} ms, speedup {row['speedup']:.2f}x "
                     f"(MACs /{row['mac_reduction']:.2f})")
        return rows


def arch_name(kind, heads, fraction):
    if kind == "channels":
        return f"FFN units {fraction:.0%}"
    return f"{'query heads' if heads == 'query' else 'KV groups'} {fraction:.0%}"


# ------------------------------------------------------------------ report
def analyse(dense, runs, healing, latency):
    goals = []
    worst = max([r["max_delta"] for r in runs] + [healing[0]["max_delta"]])
    goals.append({"goal": "every removed model output-equivalent to its masked model (max |delta| logits <= 1e-4)",
                  "pass": worst <= 1e-4, "display": f"worst {worst:.2e} over {len(runs) + 1} settings"})
    for criterion in ("activation", "taylor_element", "block_influence", "angular"):
        pairs = []
        for r in runs:
            if r["criterion"] != criterion:
                continue
            rand = next(x for x in runs if x["arch"] == r["arch"] and x["criterion"] == "random")
            pairs.append((r["arch"], r["perplexity"], rand["perplexity"]))
        if not pairs:
            continue
        wins = sum(p < q for _, p, q in pairs)
        goals.append({"goal": f"{criterion} beats random without healing (lower perplexity)",
                      "pass": wins == len(pairs),
                      "display": f"{wins}/{len(pairs)} settings: "
                                 + ", ".join(f"{a} {p:.2f} vs {q:.2f}" for a, p, q in pairs)})
    for case in healing:
        goals.append({"goal": f"pruning + distillation beats training from scratch: {case['case']}",
                      "pass": case["distilled"] < case["scratch"],
                      "display": f"distilled {case['distilled']:.3f} vs from scratch {case['scratch']:.3f} "
                                 f"(before healing {case['before']:.3f}, dense {dense:.3f})"})
    shrunk = {a: r for a, r in latency.items() if a != "dense"}
    ok = [a for a, r in shrunk.items() if r["speedup"] >= 0.8 * r["mac_reduction"]]
    goals.append({"goal": "LiteRT latency speedup >= 0.8x the MAC reduction",
                  "pass": len(ok) == len(shrunk),
                  "display": f"{len(ok)}/{len(shrunk)}: " + ", ".join(
                      f"{a} {r['speedup']:.2f}x vs 0.8 x {r['mac_reduction']:.2f}" for a, r in shrunk.items())})
    verified = all(r["verified"] for r in latency.values())
    goals.append({"goal": "every exported model verified against Keras", "pass": verified,
                  "display": f"{sum(r['verified'] for r in latency.values())}/{len(latency)}"})
    return goals


def markdown(bench, dense, runs, healing, latency, goals, settings, quick):
    model, corpus = bench.record, bench.text.info()
    heal = settings["heal"]
    lines = [
        f"Tiny Llama 3 ({model['params']:,} parameters: {model['config']}), byte-level, trained "
        f"{model['training']['steps']} steps on the standard library's docstrings of Python {corpus['python']} "
        f"(corpus SHA-256 `{corpus['sha256'][:16]}...`; held-out perplexity over {settings['eval_windows']} "
        f"windows of {settings['seq_len']} bytes from {corpus['held_out_modules']} modules the model never saw). "
        f"Calibration: {settings['calibration'][0]} random training windows of {settings['calibration'][1]} bytes. "
        f"Random: the mean of {len(settings['random_seeds'])} seeds. Every width setting prunes the same "
        "fraction in every layer (`round_to=1`).",
        "", "## Goals", "", common.goal_lines(goals), "",
        "Command: `python benchmarks/bench_transformers.py" + (" --quick" if quick else "") + "`.", "",
        "## Without healing: held-out perplexity", "", f"Dense: **{dense:.3f}**.", "",
    ]
    archs = list(dict.fromkeys(r["arch"] for r in runs if r["family"] == "width"))
    rows = []
    for arch in archs:
        by = {r["criterion"]: r for r in runs if r["arch"] == arch}
        first = next(iter(by.values()))
        rows.append([arch, f"{first['params']:,}", f"{first['macs'] / 1e6:.1f}"]
                    + [common.num(by[c]["perplexity"], ".3f") for c in WIDTH_CRITERIA])
    lines += [common.md_table(["removed", "params:", "MMACs:"] + [f"{c}:" for c in WIDTH_CRITERIA], rows), ""]
    rows = []
    for arch in dict.fromkeys(r["arch"] for r in runs if r["family"] == "depth"):
        by = {r["criterion"]: r for r in runs if r["arch"] == arch}
        first = next(iter(by.values()))
        rows.append([arch, f"{first['params']:,}", f"{first['macs'] / 1e6:.1f}"]
                    + [f"{by[c]['perplexity']:.3f} (blocks {', '.join(map(str, by[c]['removed'][0]))})"
                       if c != "random" else common.num(by[c]["perplexity"], ".3f") for c in BLOCK_CRITERIA])
    lines += [common.md_table(["removed", "params:", "MMACs:"] + [f"{c}:" for c in BLOCK_CRITERIA], rows), "",
              "Random per seed: " + "; ".join(f"{r['arch']} " + ", ".join(f"{p:.2f}" for p in r["perplexities"])
                                             for r in runs if r["criterion"] == "random") + ".", "",
              f"Max |delta| of the logits, removed vs masked (on {bench.probe['token_ids'].shape[0]} held-out "
              f"windows): worst {max(r['max_delta'] for r in runs):.2e}.", ""]
    lines += ["## Healing", "",
              f"{heal['steps']} steps of batch {heal['batch_size']} x {settings['seq_len']} bytes "
              f"({heal['steps'] * heal['batch_size'] * settings['seq_len']:,} tokens; the dense model had "
              f"{model['training']['steps']} steps of {model['training']['batch_size']}). *Distilled*: "
              f"`kprune.distiller(student, dense, temperature=2.0, alpha=0.0)`, AdamW peak {DISTILL_LR}. *From "
              f"scratch*: the same architecture freshly initialised, trained on the labels by `text_lm.train`, "
              f"AdamW peak {SCRATCH_LR}. Same windows, warm-up {heal['warmup']} steps, cosine decay.", ""]
    rows = [[c["case"], f"{c['params']:,}", f"{c['before']:.3f}", f"**{c['distilled']:.3f}**", f"{c['scratch']:.3f}",
             f"{c['distill_seconds']:.0f} / {c['scratch_seconds']:.0f}"] for c in healing]
    lines += [common.md_table(["shrunk model", "params:", "no healing:", "distilled:", "from scratch:",
                               "seconds (distil / scratch):"], rows), ""]
    lines += ["## Cost: parameters, MACs, LiteRT latency", "",
              f"`kprune.export_tflite` of the CausalLM forward at sequence length {settings['seq_len']} (float32, "
              "verified against Keras), LiteRT on 1 thread, all models timed in interleaved rounds "
              f"({settings['latency_budget_s']} s each; 2 cores shared with other work); MACs by `kprune.count_macs` "
              "at the same length. Goal: speedup >= 0.8 x MAC reduction.", ""]
    d = latency["dense"]
    rows = [[a, f"{r['params']:,}", f"{r['params'] / d['params']:.2f}", f"{r['macs'] / 1e6:.1f}",
             f"{r['mac_reduction']:.2f}x", f"{r['ms']:.2f}", f"{r['p10_ms']:.2f}", f"{r['speedup']:.2f}x",
             "-" if a == "dense" else ("met" if r["speedup"] >= 0.8 * r["mac_reduction"] else "**missed**"),
             "yes" if r["verified"] else "**no**"] for a, r in latency.items()]
    lines += [common.md_table(["model", "params:", "x dense:", "MMACs:", "MAC reduction:", "median ms:", "p10 ms:",
                               "speedup:", "goal", "verified"], rows), ""]
    lines += ["Not measured here (time on 2 shared cores): the Gemma model and the ViT on digits of the issue's "
              "plan; preset round trip and generation are covered by the tests.", ""]
    return "\n".join(lines)


def main():
    args = common.parser(__doc__).parse_args()
    run = common.Run("transformers", args.quick)
    settings = QUICK if args.quick else FULL
    bench = Bench(settings, run.log)
    dense = bench.perplexity(bench.fresh())
    run.log(f"dense: {bench.record['params']:,} parameters, perplexity {dense:.3f}")
    runs = bench.grid()
    healing = bench.healing(runs)
    latency = bench.latency()
    goals = analyse(dense, runs, healing, latency)
    data = {"model": bench.record, "corpus": bench.text.info(), "settings": settings, "dense_perplexity": dense,
            "runs": runs, "healing": healing, "latency": latency, "goals": goals,
            "distill_lr": DISTILL_LR, "scratch_lr": SCRATCH_LR}
    run.write(data, markdown(bench, dense, runs, healing, latency, goals, settings, args.quick),
              "Shrinking a transformer: heads, FFN units and blocks (Llama 3)")


if __name__ == "__main__":
    sys.exit(main())
