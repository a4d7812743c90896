"""bench_transformers' causal LMs (Llama 3, Gemma): the grid without healing, healing, latency.

`Bench` trains (or loads from the cache) the tiny model of `text_lm`, removes heads, FFN units
and blocks per criterion and measures held-out perplexity and the removed model against its
masked model; `healing` distils two shrunk models against training them from scratch;
`latency` exports and times the shrunk models (`HubRunner`: LiteRT, 1 thread).
"""

import os
import tempfile
import time

import common
import numpy as np
import text_lm
from transformer_runs import BLOCK_CRITERIA, WIDTH_CRITERIA, max_delta, plan_kwargs, schedule, summarise

# (kind in `sparsity=`, heads=, fraction): the width settings without healing.
WIDTHS = [("heads", "query", 0.25), ("heads", "query", 0.5), ("heads", "kv", 0.5),
          ("channels", "query", 0.25), ("channels", "query", 0.5)]
BLOCK_FRACTIONS = [0.25, 0.5]
DISTILL_LR, SCRATCH_LR = 5e-4, 2e-3


def arch_name(kind, heads, fraction):
    if kind == "channels":
        return f"FFN units {fraction:.0%}"
    return f"{'query heads' if heads == 'query' else 'KV groups'} {fraction:.0%}"


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
    """The causal LM part (Llama 3 with the full grid; Gemma with `settings`' smaller one)."""

    def __init__(self, settings, log, family="llama3", text=None):
        import keras

        self.keras, self.s, self.log, self.family = keras, settings, log, family
        self.text = text or text_lm.corpus()
        _, self.record = text_lm.trained_model(family, settings["model"], settings["training"], self.text, log=log)
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
        model, _ = text_lm.trained_model(self.family, self.s["model"], self.s["training"], self.text)
        return model

    def perplexity(self, model):
        return text_lm.perplexity(model, self.text.held_out, seq_len=self.s["seq_len"],
                                  max_windows=self.s["eval_windows"])

    def width_plan(self, model, sparsity, criterion, heads, seed=0):
        import kprune

        importance, kwargs = plan_kwargs(criterion, self.calib, self.calib_y, seed)
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
        for kind, heads, fraction in self.s.get("widths", WIDTHS):
            for criterion in WIDTH_CRITERIA:
                seeds = self.s["random_seeds"] if criterion == "random" else [0]
                per_seed = [self.width(kind, heads, fraction, criterion, seed) for seed in seeds]
                runs.append(summarise(self.log, "width", arch_name(kind, heads, fraction), criterion, per_seed,
                                      "perplexity"))
        for fraction in self.s.get("block_fractions", BLOCK_FRACTIONS):
            for criterion in BLOCK_CRITERIA:
                seeds = self.s["random_seeds"] if criterion == "random" else [0]
                per_seed = [self.depth(fraction, criterion, seed) for seed in seeds]
                runs.append(summarise(self.log, "depth", f"blocks {fraction:.0%}", criterion, per_seed, "perplexity"))
        return runs

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

        cases = [self.heal_case(f"FFN units 50% + query heads 25% ({width_best})", width_shrink)]
        if self.s.get("heal_blocks", True):
            cases.append(self.heal_case(f"blocks 25% ({depth_best})", depth_shrink))
        cases[0]["max_delta"] = self.combo_delta
        combo = self.models["FFN 50% + query heads 25%"]
        cases[0]["macs"] = kprune.count_macs(combo, self.shapes)
        return cases

    # ------------------------------------------------------------- latency
    def latency(self):
        import kprune

        wanted = self.s.get("latency_archs")
        self.models = {"dense": self.fresh(), **{a: m for a, m in self.models.items() if not wanted or a in wanted}}
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
