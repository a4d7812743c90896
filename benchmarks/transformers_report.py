"""bench_transformers' report: the goals of one model (`analyse`) and the Markdown of the results."""

import common
from transformer_runs import BLOCK_CRITERIA, VIT_WIDTH_CRITERIA, WIDTH_CRITERIA


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
    for criterion in ("activation", "taylor_element", "flap", "block_influence", "angular"):
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
    measured = {r["criterion"] for r in runs}
    widths = [c for c in VIT_WIDTH_CRITERIA if c in measured]  # runs before FLAP have no "flap"
    for family, criteria in (("width", widths), ("depth", BLOCK_CRITERIA)):
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


def markdown(data, quick, all_models):
    models = data["models"]
    lines = ["Three tiny transformers trained here from scratch: a Llama 3 (GQA) and a Gemma on the standard "
             "library's docstrings (byte-level), and a functional ViT-like model on scikit-learn's digits. Each "
             "loses heads, FFN/MLP units and blocks per criterion, without and with healing by distillation, "
             "against the small architecture trained from scratch; then its shrunk models are exported and timed.",
             "", "Command: `python benchmarks/bench_transformers.py" + (" --quick" if quick else "")
             + (f" --only {','.join(data['measured'])}" if data.get("measured") != list(all_models) else "") + "`.", ""]
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

