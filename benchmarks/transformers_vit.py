"""bench_transformers' ViT-like functional model on digits: the grid, healing and latency.

`vit` builds a pre-norm ViT (`keras.layers.MultiHeadAttention`, GELU MLP) on 16 patches of 2x2
pixels (`vit_data`); `VitBench` trains it, removes heads, MLP units and a block per criterion and
measures held-out accuracy, distils one shrunk model against training it from scratch, and
exports and times the shrunk models.
"""

import os
import tempfile
import time

import common
import numpy as np
from transformer_runs import BLOCK_CRITERIA, VIT_WIDTH_CRITERIA, max_delta, plan_kwargs, summarise

VIT_WIDTHS = [("heads", 0.25), ("heads", 0.5), ("channels", 0.25), ("channels", 0.5)]
VIT_LATENCY = ["heads 50%", "MLP units 50%", "blocks 25%", "MLP 50% + heads 25%"]


def vit_arch(kind, fraction):
    return f"{'heads' if kind == 'heads' else 'MLP units'} {fraction:.0%}"


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
        import kprune

        importance, kwargs = plan_kwargs(criterion, self.calib, self.calib_y, seed)
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
        # FLAP: the removed units' mean contribution goes into the output projections' biases.
        extra = {"compensate": self.calib} if criterion == "flap" else {}
        return self.measure(vit_arch(kind, fraction), kprune.remove_channels(model, plan, **extra),
                            kprune.mask_channels(model, plan, **extra))

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
            for criterion in VIT_WIDTH_CRITERIA:
                seeds = self.s["random_seeds"] if criterion == "random" else [0]
                per_seed = [self.width(kind, fraction, criterion, seed) for seed in seeds]
                runs.append(summarise(self.log, "width", vit_arch(kind, fraction), criterion, per_seed, "accuracy",
                                      "ViT "))
        for criterion in BLOCK_CRITERIA:
            seeds = self.s["random_seeds"] if criterion == "random" else [0]
            per_seed = [self.depth(0.25, criterion, seed) for seed in seeds]
            runs.append(summarise(self.log, "depth", "blocks 25%", criterion, per_seed, "accuracy", "ViT "))
        return runs

    def healing(self, runs):
        """Heads 25% + MLP units 50% with the best width criterion: distilled from the dense model
        against the same architecture trained from scratch on the labels, for the same epochs."""
        import keras

        import kprune

        # The healing case is the same as before FLAP was measured: the best of l2, activation and Taylor.
        rows = [r for r in runs if r["arch"] == "MLP units 50%" and r["criterion"] not in ("random", "flap")]
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

