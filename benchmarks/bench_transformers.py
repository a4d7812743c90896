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
   magnitude), `"activation"` (Minitron), `"taylor_element"` (LLM-Pruner), for the ViT also `"flap"`
   (FLAP: z-scored fluctuation, its bias compensation with `compensate=`) and random; depth
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
import sys

import common
import text_lm
from transformer_runs import RANDOM_SEEDS
from transformers_lm import DISTILL_LR, SCRATCH_LR, WIDTHS, Bench
from transformers_report import analyse, markdown
from transformers_vit import VitBench

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
    run.write(data, markdown(data, args.quick, MODELS),
              "Shrinking a transformer: heads, FFN units and blocks (Llama 3, Gemma, ViT)")


if __name__ == "__main__":
    sys.exit(main())
