"""Shrinking a transformer: heads, FFN units and blocks of a tiny Llama 3, a tiny Gemma and a ViT.

`python benchmarks/bench_transformers.py [--quick] [--only llama3,gemma,vit]` (issue 25):

1. **The models.** The tiny Llama 3 of `bench_llm.py` (4 layers, hidden 256, 8 query / 2 key-value
   heads (GQA), FFN 768, byte vocabulary), trained here from scratch on the standard library's
   docstrings (`benchmarks/text_lm.py`, cached under `$KPRUNE_CACHE`: the same cache entry as
   `bench_llm.py`, ~10 min to train on 2 cores the first time); a tiny Gemma of the same shape
   (`text_lm.GEMMA`: head_dim 32, gated FFN of 768 units, tied embeddings, `sqrt(hidden)` scaling),
   trained 700 steps the same way (cached, ~8 min the first time); and a functional ViT-like model
   (`keras.layers.MultiHeadAttention`, 4 pre-norm blocks, width 64, 4 heads, GELU MLP of 128) on
   scikit-learn's digits (16 patches of 2x2 pixels with a one-hot position), trained here (~1 min).
2. **Without healing.** Llama 3: held-out perplexity after removing 25% and 50% of the query heads
   (`heads="query"`: the same number from each key/value group, Torch-Pruning's LLM default; 25% of
   the 2 key/value groups is not a whole group), 50% of the key/value groups (`heads="kv"`: one of
   two), 25% and 50% of the FFN units (`kprune.plan_channels` + `kprune.remove_channels`, the same
   fraction in every layer, `round_to=1`), and 25% and 50% of the blocks
   (`kprune.transformers.plan_blocks` + `remove_blocks`). Gemma: the same without the key/value
   groups and without 50% of the blocks. ViT: held-out accuracy after removing 25% and 50% of the
   heads and of the MLP units, and 1 of 4 blocks. Width criteria: `"l2"` (the default
   magnitude), `"activation"` (Minitron), `"taylor_element"` (LLM-Pruner) and random; depth
   criteria: `"block_influence"` (ShortGPT), `"angular"` (Gromov et al.) and random. Random is
   the mean over 3 seeds (a seeded random-score callable for widths; `seed=` for blocks).
   Calibration: random training windows (`text_lm.calibration`; Taylor's targets are their next
   bytes), or 256 training images for the ViT.
3. **Equivalence.** Every removed model against its masked model (`mask_channels` /
   `mask_blocks`): max |delta| of the logits on held-out windows (images).
4. **Healing.** Llama 3: two cases, (a) 50% of FFN units + 25% of query heads with the best width
   criterion, (b) 25% of blocks with the best depth criterion; Gemma: (a) only; the ViT: 50% of MLP
   units + 25% of heads. Distilled from the dense model (`kprune.distiller`, T = 2, alpha = 0:
   distillation only, as Minitron) for a fixed budget of steps (Llama 200, Gemma 100, ViT 10
   epochs), against the same small architecture (same config, fresh initialisation) trained from
   scratch on the labels with the dense model's recipe for the same steps and batch. For the LMs
   both see the same training windows; the distillation uses AdamW at a peak of 5e-4 (the student
   is trained already), training from scratch the dense model's 2e-3; both with warm-up and cosine
   decay (ViT: 1e-3 against 2e-3).
5. **Cost.** Parameters, MACs (`kprune.count_macs`, at the sequence length for the LMs) and LiteRT
   latency (1 thread, `kprune.export_tflite`, verified against Keras; every architecture timed in
   interleaved rounds) of shrunk architectures against dense (Llama 3: all eight; Gemma: two; ViT:
   four). Goal: latency speedup >= 0.8x the MAC reduction.

Goals (issue 25), per model: every removed model output-equivalent to its masked model (max |delta|
logits <= 1e-4); activation and Taylor beat random without healing; pruning + distillation beats
training the small architecture from scratch for the same steps (reported plainly where not).

`--only gemma,vit` measures those models and carries the others' sections over unchanged from the
committed `benchmarks/results/transformers.json` (recording the run they came from). Left out: preset
round trip / generation (covered by tests/transformers), other model sizes. Times on 2 shared cores
once the models are cached: Llama 3 ~20-30 min (1,105 s measured on 2026-12-07, load average 3-6),
Gemma ~10 min, the ViT ~3 min; `--quick` (2-layer LMs trained 60 steps, a ViT trained 3 epochs,
short healing) ~5 min.
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

LLAMA_QUICK = dict(model=dict(num_layers=2, hidden_dim=64, num_query_heads=4, num_key_value_heads=2,
                              intermediate_dim=192),
                   training=dict(steps=60, batch_size=8, seq_len=64), seq_len=64, calibration=(16, 64),
                   eval_windows=32, heal=dict(steps=20, batch_size=8, warmup=4), latency_budget_s=0.5,
                   random_seeds=[0, 1])
LLAMA_FULL = dict(model={}, training={}, seq_len=128, calibration=(64, 128), eval_windows=256,
                  heal=dict(steps=200, batch_size=16, warmup=20), latency_budget_s=4.0, random_seeds=RANDOM_SEEDS)
# Gemma: a smaller grid (no KV groups, no 50% of blocks, one healing case, two shrunk models timed).
GEMMA_GRID = dict(widths=WIDTHS[:2] + WIDTHS[3:], block_fractions=[0.25], heal_blocks=False,
                  latency_archs=["FFN 50% + query heads 25%", "blocks 25%"])
GEMMA_QUICK = dict(model=dict(num_layers=2, hidden_dim=64, num_query_heads=4, num_key_value_heads=2, head_dim=16,
                              intermediate_dim=384),
                   training=dict(steps=60, batch_size=8, seq_len=64), seq_len=64, calibration=(16, 64),
                   eval_windows=32, heal=dict(steps=20, batch_size=8, warmup=4), latency_budget_s=0.5,
                   random_seeds=[0, 1], **GEMMA_GRID)
GEMMA_FULL = dict(model={}, training=dict(steps=700), seq_len=128, calibration=(64, 128), eval_windows=128,
                  heal=dict(steps=100, batch_size=16, warmup=10), latency_budget_s=2.0, random_seeds=RANDOM_SEEDS,
                  **GEMMA_GRID)
VIT_WIDTHS = [("heads", 0.25), ("heads", 0.5), ("channels", 0.25), ("channels", 0.5)]
VIT_LATENCY = ["heads 50%", "MLP units 50%", "blocks 25%", "MLP 50% + heads 25%"]
VIT_QUICK = dict(model=dict(dim=32, heads=4, head_dim=8, mlp=64, layers=4), epochs=3, batch_size=64,
                 learning_rate=2e-3, calibration=64, heal=dict(epochs=1, distill_lr=1e-3), latency_budget_s=0.3,
                 random_seeds=[0, 1])
VIT_FULL = dict(model=dict(dim=64, heads=4, head_dim=16, mlp=128, layers=4), epochs=60, batch_size=64,
                learning_rate=2e-3, calibration=256, heal=dict(epochs=10, distill_lr=1e-3), latency_budget_s=2.0,
                random_seeds=RANDOM_SEEDS)
MODELS = ["llama3", "gemma", "vit"]
QUICK = {"llama3": LLAMA_QUICK, "gemma": GEMMA_QUICK, "vit": VIT_QUICK}
FULL = {"llama3": LLAMA_FULL, "gemma": GEMMA_FULL, "vit": VIT_FULL}
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
        for kind, heads, fraction in self.s.get("widths", WIDTHS):
            for criterion in WIDTH_CRITERIA:
                seeds = self.s["random_seeds"] if criterion == "random" else [0]
                per_seed = [self.width(kind, heads, fraction, criterion, seed) for seed in seeds]
                runs.append(self.summarise("width", arch_name(kind, heads, fraction), criterion, per_seed))
        for fraction in self.s.get("block_fractions", BLOCK_FRACTIONS):
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


# ------------------------------------------------------------------ the ViT
def vit_data():
    """Digits as 16 patches of 2x2 pixels, each with a one-hot of its position (a learned position
    embedding through the patch embedding): `(x_train, y_train, x_test, y_test)`, shape (n, 16, 20)."""
    x_tr, y_tr, x_te, y_te = common.digits(8)

    def patches(x):
        n = x.shape[0]
        p = x.reshape(n, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(n, 16, 4)
        return np.concatenate([p, np.broadcast_to(np.eye(16, dtype="float32"), (n, 16, 16))], -1).astype("float32")

    return patches(x_tr), y_tr, patches(x_te), y_te


def vit(keras, dim, heads, head_dim, mlp, layers):
    """A pre-norm ViT: patch embedding, `layers` blocks of MultiHeadAttention + GELU MLP, mean pool, logits."""
    L = keras.layers
    x = keras.Input((16, 20))
    h = L.Dense(dim, name="patch_embedding")(x)
    for i in range(layers):
        n = L.LayerNormalization(name=f"ln1_{i}")(h)
        h = L.Add(name=f"add1_{i}")([h, L.MultiHeadAttention(heads, head_dim, name=f"mha_{i}")(n, n)])
        n = L.LayerNormalization(name=f"ln2_{i}")(h)
        m = L.Dense(mlp, activation="gelu", name=f"fc1_{i}")(n)
        h = L.Add(name=f"add2_{i}")([h, L.Dense(dim, name=f"fc2_{i}")(m)])
    h = L.LayerNormalization(name="ln_final")(h)
    return keras.Model(x, L.Dense(10, name="head")(L.GlobalAveragePooling1D()(h)), name="vit")


class VitBench:
    """The ViT-like functional model on digits: heads, MLP units and blocks by criterion, accuracy."""

    def __init__(self, settings, log):
        import keras

        self.keras, self.s, self.log = keras, settings, log
        self.x, self.y, self.x_test, self.y_test = vit_data()
        keras.utils.set_random_seed(0)
        model = vit(keras, **settings["model"])
        start = time.perf_counter()
        self.fit(model, self.x, self.y, settings["epochs"], settings["learning_rate"])
        self.train_seconds = round(time.perf_counter() - start, 1)
        self.weights = model.get_weights()
        self.params = int(model.count_params())
        rng = np.random.default_rng(0)
        pick = rng.choice(len(self.x), settings["calibration"], replace=False)
        self.calib, self.calib_y = self.x[pick], self.y[pick]
        self.models = {}

    def fit(self, model, x, y, epochs, lr, trainer=None):
        keras = self.keras
        steps = epochs * -(-len(x) // self.s["batch_size"])
        schedule_ = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=lr, warmup_steps=steps // 10)
        target = trainer or model
        target.compile(optimizer=keras.optimizers.AdamW(schedule_, weight_decay=0.01),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        target.fit(x, y, epochs=epochs, batch_size=self.s["batch_size"], verbose=0, shuffle=True)

    def fresh(self):
        self.keras.backend.clear_session()
        model = vit(self.keras, **self.s["model"])
        model.set_weights(self.weights)
        return model

    def accuracy(self, model):
        logits = self.keras.ops.convert_to_numpy(model(self.x_test))
        return float(np.mean(np.argmax(logits, -1) == self.y_test))

    def width_plan(self, model, sparsity, criterion, seed=0):
        import keras

        import kprune

        kwargs = {}
        if criterion == "activation":
            kwargs["data"] = self.calib
        elif criterion == "taylor_element":
            kwargs.update(data=(self.calib, self.calib_y),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        importance = seeded_random(seed) if criterion == "random" else criterion
        return kprune.plan_channels(model, sparsity, importance=importance, round_to=1, **kwargs)

    def measure(self, arch, small, masked):
        import kprune

        self.models.setdefault(arch, small)
        return {"accuracy": self.accuracy(small), "max_delta": max_delta(small, masked, self.x_test),
                "params": int(small.count_params()), "macs": kprune.count_macs(small)}

    def width(self, kind, fraction, criterion, seed=0):
        import kprune

        model = self.fresh()
        plan = self.width_plan(model, {kind: fraction}, criterion, seed)
        return self.measure(vit_arch(kind, fraction), kprune.remove_channels(model, plan),
                            kprune.mask_channels(model, plan))

    def depth(self, fraction, criterion, seed=0):
        from kprune import transformers

        model = self.fresh()
        n = max(1, round(fraction * self.s["model"]["layers"]))
        plan = transformers.plan_blocks(model, n, importance=criterion, data=self.calib, seed=seed)
        result = self.measure(f"blocks {fraction:.0%}", transformers.remove_blocks(model, plan),
                              transformers.mask_blocks(model, plan))
        result["removed"] = [int(i) for i in plan.removed]
        return result

    def grid(self):
        runs = []
        for kind, fraction in VIT_WIDTHS:
            for criterion in WIDTH_CRITERIA:
                seeds = self.s["random_seeds"] if criterion == "random" else [0]
                per_seed = [self.width(kind, fraction, criterion, seed) for seed in seeds]
                runs.append(self.summarise("width", vit_arch(kind, fraction), criterion, per_seed))
        for criterion in BLOCK_CRITERIA:
            seeds = self.s["random_seeds"] if criterion == "random" else [0]
            per_seed = [self.depth(0.25, criterion, seed) for seed in seeds]
            runs.append(self.summarise("depth", "blocks 25%", criterion, per_seed))
        return runs

    def summarise(self, family, arch, criterion, per_seed):
        first = per_seed[0]
        run = {"family": family, "arch": arch, "criterion": criterion,
               "accuracy": statistics.fmean(r["accuracy"] for r in per_seed),
               "accuracies": [r["accuracy"] for r in per_seed],
               "max_delta": max(r["max_delta"] for r in per_seed), "params": first["params"], "macs": first["macs"]}
        if "removed" in first:
            run["removed"] = [r["removed"] for r in per_seed]
        self.log(f"ViT {arch} {criterion}: accuracy {run['accuracy']:.4f} "
                 f"({', '.join(f'{a:.4f}' for a in run['accuracies'])}), max |delta| {run['max_delta']:.2e}")
        return run

    def healing(self, runs):
        """Heads 25% + MLP units 50% with the best width criterion: distilled from the dense model
        against the same architecture trained from scratch on the labels, for the same epochs."""
        import keras

        import kprune

        rows = [r for r in runs if r["arch"] == "MLP units 50%" and r["criterion"] != "random"]
        best = max(rows, key=lambda r: r["accuracy"])["criterion"]
        teacher = self.fresh()
        plan = self.width_plan(teacher, {"channels": 0.5, "heads": 0.25}, best)
        student = kprune.remove_channels(teacher, plan)
        delta = max_delta(student, kprune.mask_channels(teacher, plan), self.x_test)
        self.models["MLP 50% + heads 25%"] = student
        before = self.accuracy(student)
        heal = self.s["heal"]
        start = time.perf_counter()
        trainer = kprune.distiller(student, teacher, temperature=2.0, alpha=0.0)
        self.fit(student, self.x, self.y, heal["epochs"], heal["distill_lr"], trainer=trainer)
        distill_s, distilled = time.perf_counter() - start, self.accuracy(student)
        keras.utils.set_random_seed(0)
        scratch = keras.Model.from_config(student.get_config())
        start = time.perf_counter()
        self.fit(scratch, self.x, self.y, heal["epochs"], self.s["learning_rate"])
        scratch_s, from_scratch = time.perf_counter() - start, self.accuracy(scratch)
        case = {"case": f"MLP units 50% + heads 25% ({best})", "params": int(student.count_params()),
                "macs": kprune.count_macs(student), "max_delta": delta, "before": before, "distilled": distilled,
                "scratch": from_scratch, "distill_seconds": round(distill_s, 1), "scratch_seconds": round(scratch_s, 1)}
        self.log(f"ViT heal {case['case']}: {before:.4f} -> distilled {distilled:.4f}, from scratch {from_scratch:.4f}")
        return [case]

    def latency(self):
        import kprune

        models = {"dense": self.fresh(), **{a: m for a, m in self.models.items() if a in VIT_LATENCY}}
        rows, runners = {}, []
        folder = tempfile.mkdtemp(prefix="bench_transformers_vit_")
        for arch, model in models.items():
            path = os.path.join(folder, f"{len(rows)}.tflite")
            with common.quiet():
                report = kprune.export_tflite(model, path, measure_latency=False, sample_inputs=self.x_test[:8])
            rows[arch] = {"params": int(model.count_params()), "macs": kprune.count_macs(model),
                          "report_macs": report.macs, "verified": bool(report.verified),
                          "verification": report.verification, "file_bytes": report.file_bytes}
            runners.append(common.Runner(arch, path, self.x_test[:1]))
        stats, _ = common.interleave(runners, self.s["latency_budget_s"])
        for arch, row in rows.items():
            row.update(stats[arch])
            row["speedup"] = stats["dense"]["ms"] / row["ms"]
            row["mac_reduction"] = rows["dense"]["macs"] / row["macs"]
            self.log(f"ViT latency {arch}: {row['ms']:.3f} ms, speedup {row['speedup']:.2f}x "
                     f"(MACs /{row['mac_reduction']:.2f})")
        return rows


def vit_arch(kind, fraction):
    return f"{'heads' if kind == 'heads' else 'MLP units'} {fraction:.0%}"


def arch_name(kind, heads, fraction):
    if kind == "channels":
        return f"FFN units {fraction:.0%}"
    return f"{'query heads' if heads == 'query' else 'KV groups'} {fraction:.0%}"


# ------------------------------------------------------------------ report
def analyse(dense, runs, healing, latency, metric="perplexity"):
    """The goals of one model; `metric` "perplexity" (lower is better) or "accuracy" (higher)."""
    lower = metric == "perplexity"

    def better(a, b):
        return a < b if lower else a > b

    spec = ".2f" if lower else ".3f"
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
            pairs.append((r["arch"], r[metric], rand[metric]))
        if not pairs:
            continue
        wins = sum(better(p, q) for _, p, q in pairs)
        goals.append({"goal": f"{criterion} beats random without healing ({'lower' if lower else 'higher'} {metric})",
                      "pass": wins == len(pairs),
                      "display": f"{wins}/{len(pairs)} settings: "
                                 + ", ".join(f"{a} {format(p, spec)} vs {format(q, spec)}" for a, p, q in pairs)})
    for case in healing:
        goals.append({"goal": f"pruning + distillation beats training from scratch: {case['case']}",
                      "pass": better(case["distilled"], case["scratch"]),
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


def carried_note(sec):
    src = sec.get("carried_over")
    if not src:
        return []
    return [f"*Carried over unchanged from the full run of {src['date']} (commit {src['git_commit']}, "
            f"{src['elapsed_s']:,.0f} s, load average {src['load_average']}): the Llama 3 code path has not changed "
            "since; this run measured the other models.*", ""]


def latency_table(latency, runs, spec=".2f", macs=".1f"):
    # The JSON's keys come back sorted: dense first, then the order of the runs, then the combinations.
    order = list(dict.fromkeys(["dense"] + [r["arch"] for r in runs if r["arch"] in latency] + list(latency)))
    latency = {a: latency[a] for a in order}
    d = latency["dense"]
    rows = [[a, f"{r['params']:,}", f"{r['params'] / d['params']:.2f}", format(r["macs"] / 1e6, macs),
             f"{r['mac_reduction']:.2f}x", format(r["ms"], spec), format(r["p10_ms"], spec), f"{r['speedup']:.2f}x",
             "-" if a == "dense" else ("met" if r["speedup"] >= 0.8 * r["mac_reduction"] else "**missed**"),
             "yes" if r["verified"] else "**no**"] for a, r in latency.items()]
    return common.md_table(["model", "params:", "x dense:", "MMACs:", "MAC reduction:", "median ms:", "p10 ms:",
                            "speedup:", "goal", "verified"], rows)


def markdown_lm(name, sec):
    """One causal LM's section (Llama 3 or Gemma) from its data."""
    model, corpus, settings, dense = sec["model"], sec["corpus"], sec["settings"], sec["dense_perplexity"]
    runs, healing, heal = sec["runs"], sec["healing"], settings["heal"]
    lines = [f"## {name}", ""] + carried_note(sec) + [
        f"Tiny {name} ({model['params']:,} parameters: {model['config']}), byte-level, trained "
        f"{model['training']['steps']} steps on the standard library's docstrings of Python {corpus['python']} "
        f"(corpus SHA-256 `{corpus['sha256'][:16]}...`; held-out perplexity over {settings['eval_windows']} "
        f"windows of {settings['seq_len']} bytes from {corpus['held_out_modules']} modules the model never saw). "
        f"Calibration: {settings['calibration'][0]} random training windows of {settings['calibration'][1]} bytes. "
        f"Random: the mean of {len(settings['random_seeds'])} seeds. Every width setting prunes the same "
        "fraction in every layer (`round_to=1`).",
        "", "### Goals", "", common.goal_lines(sec["goals"]), "",
        "### Without healing: held-out perplexity", "", f"Dense: **{dense:.3f}**.", "",
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
              f"Max |delta| of the logits, removed vs masked (on 4 held-out "
              f"windows): worst {max(r['max_delta'] for r in runs):.2e}.", ""]
    lines += ["### Healing", "",
              f"{heal['steps']} steps of batch {heal['batch_size']} x {settings['seq_len']} bytes "
              f"({heal['steps'] * heal['batch_size'] * settings['seq_len']:,} tokens; the dense model had "
              f"{model['training']['steps']} steps of {model['training']['batch_size']}). *Distilled*: "
              f"`kprune.distiller(student, dense, temperature=2.0, alpha=0.0)`, AdamW peak {sec['distill_lr']}. "
              f"*From scratch*: the same architecture freshly initialised, trained on the labels by `text_lm.train`, "
              f"AdamW peak {sec['scratch_lr']}. Same windows, warm-up {heal['warmup']} steps, cosine decay.", ""]
    rows = [[c["case"], f"{c['params']:,}", f"{c['before']:.3f}", f"**{c['distilled']:.3f}**", f"{c['scratch']:.3f}",
             f"{c['distill_seconds']:.0f} / {c['scratch_seconds']:.0f}"] for c in healing]
    lines += [common.md_table(["shrunk model", "params:", "no healing:", "distilled:", "from scratch:",
                               "seconds (distil / scratch):"], rows), ""]
    lines += ["### Cost: parameters, MACs, LiteRT latency", "",
              f"`kprune.export_tflite` of the CausalLM forward at sequence length {settings['seq_len']} (float32, "
              "verified against Keras), LiteRT on 1 thread, all models timed in interleaved rounds "
              f"({settings['latency_budget_s']} s each; 2 cores shared with other work); MACs by `kprune.count_macs` "
              "at the same length. Goal: speedup >= 0.8 x MAC reduction.", "", latency_table(sec["latency"], runs), ""]
    return lines


def markdown_vit(sec):
    s, runs = sec["settings"], sec["runs"]
    m = s["model"]
    lines = ["## ViT on digits", "",
             f"A functional ViT-like model ({sec['params']:,} parameters: {m['layers']} pre-norm blocks of "
             f"`keras.layers.MultiHeadAttention` ({m['heads']} heads of {m['head_dim']}) and a GELU MLP of "
             f"{m['mlp']} units, width {m['dim']}; the 8x8 digit as 16 patches of 2x2 pixels, each with a one-hot "
             f"of its position), trained here {s['epochs']} epochs on scikit-learn's digits "
             f"({sec['train_seconds']:.0f} s; AdamW peak {s['learning_rate']}, cosine decay); accuracy on the "
             f"{sec['test_images']} held-out images. Calibration: {s['calibration']} training images. Random: the "
             f"mean of {len(s['random_seeds'])} seeds. `round_to=1`, the same fraction in every layer.", "",
             "### Goals", "", common.goal_lines(sec["goals"]), "",
             "### Without healing: held-out accuracy", "", f"Dense: **{sec['dense_accuracy']:.4f}**.", ""]
    for family, criteria in (("width", WIDTH_CRITERIA), ("depth", BLOCK_CRITERIA)):
        rows = []
        for arch in dict.fromkeys(r["arch"] for r in runs if r["family"] == family):
            by = {r["criterion"]: r for r in runs if r["arch"] == arch}
            first = next(iter(by.values()))
            rows.append([arch, f"{first['params']:,}", f"{first['macs'] / 1e6:.2f}"]
                        + [f"{by[c]['accuracy']:.4f}" + (f" (block {', '.join(map(str, by[c]['removed'][0]))})"
                                                         if "removed" in by[c] and c != "random" else "")
                           for c in criteria])
        lines += [common.md_table(["removed", "params:", "MMACs:"] + [f"{c}:" for c in criteria], rows), ""]
    lines += [
              "Random per seed: " + "; ".join(f"{r['arch']} " + ", ".join(f"{a:.3f}" for a in r["accuracies"])
                                             for r in runs if r["criterion"] == "random") + ".", "",
              f"Max |delta| of the logits, removed vs masked (on the {sec['test_images']} held-out images): worst "
              f"{max(r['max_delta'] for r in runs):.2e}.", ""]
    heal = s["heal"]
    lines += ["### Healing", "",
              f"{heal['epochs']} epochs of batch {s['batch_size']} on the training images. *Distilled*: "
              f"`kprune.distiller(student, dense, temperature=2.0, alpha=0.0)`, AdamW peak {heal['distill_lr']}. "
              f"*From scratch*: the same architecture freshly initialised, trained on the labels with the dense "
              f"model's recipe (peak {s['learning_rate']}). Warm-up 10%, cosine decay.", "",
              common.md_table(["shrunk model", "params:", "no healing:", "distilled:", "from scratch:",
                               "seconds (distil / scratch):"],
                              [[c["case"], f"{c['params']:,}", f"{c['before']:.4f}", f"**{c['distilled']:.4f}**",
                                f"{c['scratch']:.4f}", f"{c['distill_seconds']:.0f} / {c['scratch_seconds']:.0f}"]
                               for c in sec["healing"]]), "",
              "### Cost: parameters, MACs, LiteRT latency", "",
              "`kprune.export_tflite` (float32, verified against Keras), LiteRT on 1 thread, batch 1, interleaved "
              f"rounds ({s['latency_budget_s']} s each); MACs by `kprune.count_macs`.", "",
              latency_table(sec["latency"], runs, ".3f", ".3f"), ""]
    return lines


def markdown(data, quick):
    models = data["models"]
    lines = ["Three tiny transformers trained here from scratch: a Llama 3 (GQA) and a Gemma on the standard "
             "library's docstrings (byte-level), and a functional ViT-like model on scikit-learn's digits. Each "
             "loses heads, FFN/MLP units and blocks per criterion, without and with healing by distillation, "
             "against the small architecture trained from scratch; then its shrunk models are exported and timed.",
             "", "Command: `python benchmarks/bench_transformers.py" + (" --quick" if quick else "")
             + (f" --only {','.join(data['measured'])}" if data.get("measured") != list(MODELS) else "") + "`.", ""]
    if "llama3" in models:
        lines += markdown_lm("Llama 3", models["llama3"])
    if "gemma" in models:
        lines += markdown_lm("Gemma", models["gemma"])
    if "vit" in models:
        lines += markdown_vit(models["vit"])
    lines += ["Not measured here: preset round trip and generation (covered by tests/transformers); Gemma and the "
              "ViT on a smaller grid than Llama 3 (no KV-group or 50% block removal, one healing case) for time on "
              "2 shared cores; one model size each.", ""]
    return "\n".join(lines)


def run_lm(family, settings, log, text):
    bench = Bench(settings, log, family=family, text=text)
    dense = bench.perplexity(bench.fresh())
    log(f"{family} dense: {bench.record['params']:,} parameters, perplexity {dense:.3f}")
    runs = bench.grid()
    healing = bench.healing(runs)
    latency = bench.latency()
    goals = analyse(dense, runs, healing, latency)
    return {"model": bench.record, "corpus": bench.text.info(), "settings": settings, "dense_perplexity": dense,
            "runs": runs, "healing": healing, "latency": latency, "goals": goals,
            "distill_lr": DISTILL_LR, "scratch_lr": SCRATCH_LR}


def run_vit(settings, log):
    bench = VitBench(settings, log)
    dense = bench.accuracy(bench.fresh())
    log(f"ViT dense: {bench.params:,} parameters, accuracy {dense:.4f} (trained in {bench.train_seconds} s)")
    runs = bench.grid()
    healing = bench.healing(runs)
    latency = bench.latency()
    goals = analyse(dense, runs, healing, latency, metric="accuracy")
    return {"params": bench.params, "train_seconds": bench.train_seconds, "test_images": int(len(bench.y_test)),
            "settings": settings, "dense_accuracy": dense, "runs": runs, "healing": healing, "latency": latency,
            "goals": goals}


def carried(name):
    """Model `name`'s section of the committed full result, with where it came from."""
    import json

    path = os.path.join(common.RESULTS, "transformers.json")
    with open(path) as f:
        record = json.load(f)
    data = record["data"]
    if name in data.get("models", {}):
        sec = data["models"][name]
        return sec if "carried_over" in sec else {**sec, "carried_over": {
            k: record[k] if k in record else record["environment"][k]
            for k in ("date", "elapsed_s", "git_commit", "load_average")}}
    if name != "llama3" or "runs" not in data:
        raise SystemExit(f"{path} has no {name} results to carry over: run it (drop it from --only's complement)")
    src = {"date": record["date"], "elapsed_s": record["elapsed_s"],
           "git_commit": record["environment"]["git_commit"], "load_average": record["environment"]["load_average"]}
    return {**data, "carried_over": src}  # the first (Llama-only) layout


def main():
    p = common.parser(__doc__)
    p.add_argument("--only", default=",".join(MODELS),
                   help="models to measure (comma-separated, of llama3, gemma, vit); a full run carries the "
                        "others over from benchmarks/results/transformers.json")
    args = p.parse_args()
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    if not only or any(m not in MODELS for m in only):
        raise SystemExit(f"Argument `--only` must name some of {', '.join(MODELS)}. Received: --only={args.only}")
    run = common.Run("transformers", args.quick)
    settings = QUICK if args.quick else FULL
    models = {}
    carry = {} if args.quick else {m: carried(m) for m in MODELS if m not in only}
    text = text_lm.corpus() if set(only) & {"llama3", "gemma"} else None
    for name in MODELS:
        if name in carry:
            models[name] = carry[name]
        elif name not in only:
            continue  # --quick: only what was asked for
        elif name == "vit":
            models[name] = run_vit(settings["vit"], run.log)
        else:
            models[name] = run_lm(name, settings[name], run.log, text)
    data = {"measured": only, "models": models}
    run.write(data, markdown(data, args.quick),
              "Shrinking a transformer: heads, FFN units and blocks (Llama 3, Gemma, ViT)")


if __name__ == "__main__":
    sys.exit(main())
