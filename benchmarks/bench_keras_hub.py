#!/usr/bin/env python
"""KerasHub: a BERT classifier pruned in place during fine-tuning, then exported.

A `keras_hub.models.BertBackbone` built from a small config (vocabulary 1000,
4 layers, hidden 128, 2 heads, intermediate 256, 64 tokens; random weights,
no preset: presets download) with a Dense classification head on its pooled
output, as a Functional model whose inputs are the backbone's three
(token ids, segment ids, padding mask). The task is generated: 2048 random
token sequences, labelled by whether token 1 appears more often than token 2
in them (learnable from the embeddings and attention).

1. dense: trained 3 epochs (Adam 1e-3, batch 32);
2. pruned: `kprune.prune_low_magnitude(model, PolynomialDecay(0 -> 0.8))`
   prunes the model in place (the backbone's TransformerEncoder layers hold
   the Dense, EinsumDense and MultiHeadAttention layers kprune prunes), then
   fine-tuned 3 epochs with `kprune.UpdatePruningStep` (final sparsity
   reached after 2 epochs);
3. saved as .keras (loads without kprune), stripped, exported with
   `kprune.export_tflite` (float32, sparse encoding when smaller; verified
   against Keras in LiteRT on 16 test sequences), dense and pruned.

The per-layer sparsity of the pruned weights is read from the in-place
pruning records (`kprune.sparsity.prune.pruned_layers`, internal: no public
name lists the layers a model pruned in place holds masks for).

Usage:
    python benchmarks/bench_keras_hub.py [--quick]

`--quick`: 2 layers, hidden 64, 32 tokens, 256 sequences, 1 epoch each
(about 25 s). The full run took 124 s (2026-12-07).
"""

import os
import sys
import tempfile

import common

FULL = {"vocabulary": 1000, "sequence": 64, "layers": 4, "hidden": 128, "heads": 2, "intermediate": 256,
        "train": 2048, "test": 512, "batch": 32, "epochs": 3}
QUICK = {"vocabulary": 1000, "sequence": 32, "layers": 2, "hidden": 64, "heads": 2, "intermediate": 128,
         "train": 256, "test": 128, "batch": 32, "epochs": 1}


def make_model(keras, cfg):
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=cfg["vocabulary"], num_layers=cfg["layers"], num_heads=cfg["heads"],
        hidden_dim=cfg["hidden"], intermediate_dim=cfg["intermediate"], max_sequence_length=cfg["sequence"])
    inputs = [keras.Input((cfg["sequence"],), dtype="int32", name=n) for n in ("ids", "segments", "mask")]
    out = backbone(dict(zip(("token_ids", "segment_ids", "padding_mask"), inputs)))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(out["pooled_output"]))


def make_data(n, cfg, rng):
    import numpy as np

    tokens = rng.integers(3, cfg["vocabulary"], size=(n, cfg["sequence"])).astype("int32")
    # Plant tokens 1 and 2 a random number of times each.
    for i in range(n):
        a, b = rng.integers(0, 8, size=2)
        pos = rng.choice(cfg["sequence"], size=a + b, replace=False)
        tokens[i, pos[:a]], tokens[i, pos[a:]] = 1, 2
    labels = ((tokens == 1).sum(1) > (tokens == 2).sum(1)).astype("int32")
    return [tokens, np.zeros_like(tokens), np.ones_like(tokens)], labels


def markdown(data):
    rows = [[name, f"{r['accuracy']:.3f}", f"{r['params']:,}", f"{r['nonzero_params']:,}", f"{r['sparsity']:.3f}",
             f"{r['tflite_bytes']:,}", f"{r['gzip_bytes']:,}", r["sparse_encoding"], r["verified"]]
            for name, r in data["rows"].items()]
    c = data["config"]
    return "\n".join([
        f"A KerasHub `BertBackbone` ({c['layers']} layers, hidden {c['hidden']}, {c['heads']} heads, "
        f"intermediate {c['intermediate']}, vocabulary {c['vocabulary']}, {c['sequence']} tokens; random weights) "
        f"with a Dense head, trained {c.get('epochs', 3)} epochs on {c['train']} generated sequences, then pruned "
        "in place by `kprune.prune_low_magnitude` (PolynomialDecay 0 -> 0.8) during as many epochs of fine-tuning, "
        f"saved as .keras, stripped and exported with `kprune.export_tflite`; test accuracy on {c['test']} "
        "sequences.", "",
        common.md_table(["model", "test accuracy:", "params:", "nonzero:", "sparsity:", ".tflite bytes:",
                         "gzip bytes:", "sparse encoding", "verified"], rows), "",
        "Sparsity of the pruned weights per layer: "
        + ", ".join(f"{k} {v:.3f}" for k, v in data["pruned_layer_sparsity"].items()) + "."])


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    run = common.Run("keras_hub", args.quick)
    import keras
    import numpy as np

    import kprune
    from kprune.sparsity.prune import pruned_layers

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x, y = make_data(cfg["train"], cfg, rng)
    xt, yt = make_data(cfg["test"], cfg, rng)
    model = make_model(keras, cfg)
    common.compile_classifier(keras, model)
    start = run.elapsed_s
    model.fit(x, y, batch_size=cfg["batch"], epochs=cfg["epochs"], verbose=0)
    rows = {"dense": {"accuracy": common.accuracy(model, xt, yt), "train_s": run.elapsed_s - start}}
    run.log(f"dense: trained, accuracy {rows['dense']['accuracy']:.3f}")
    folder = tempfile.mkdtemp(prefix="kprune_hub_")
    samples = [a[:16] for a in xt]
    with common.quiet():
        dense_report = kprune.export_tflite(model, os.path.join(folder, "dense.tflite"),
                                            sample_inputs=samples, measure_latency=False)

    steps = cfg["train"] // cfg["batch"]
    end = max(1, 2 * steps * cfg["epochs"] // 3)
    schedule = kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=end, frequency=max(1, steps // 4))
    kprune.prune_low_magnitude(model, pruning_schedule=schedule)  # in place
    common.compile_classifier(keras, model)  # a fresh optimizer for fine-tuning
    start = run.elapsed_s
    model.fit(x, y, batch_size=cfg["batch"], epochs=cfg["epochs"], verbose=0, callbacks=[kprune.UpdatePruningStep()])
    layers = {}
    for t in pruned_layers(model):
        zeros = sum(int((keras.ops.convert_to_numpy(v.value) == 0).sum()) for v, _ in t.pruned_weights)
        size = sum(int(np.prod(v.shape)) for v, _ in t.pruned_weights)
        layers[t.name] = round(zeros / size, 4)
    rows["pruned"] = {"accuracy": common.accuracy(model, xt, yt), "train_s": run.elapsed_s - start}
    run.log(f"pruned in place: fine-tuned, accuracy {rows['pruned']['accuracy']:.3f}")
    path = os.path.join(folder, "pruned.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # the plain model: no kprune class in the file
    kprune.strip_pruning(model)
    with common.quiet():
        report = kprune.export_tflite(loaded, os.path.join(folder, "pruned.tflite"),
                                      sample_inputs=samples, measure_latency=False)
    for name, r in (("dense", dense_report), ("pruned", report)):
        rows[name].update(params=r.params, nonzero_params=r.nonzero_params,
                          sparsity=round(r.sparsity, 4), tflite_bytes=r.file_bytes,
                          gzip_bytes=r.gzip_bytes, sparse_encoding=r.sparse_encoding,
                          verified=r.verified,
                          max_abs_error=r.verification["max_abs_error"] if r.verification else None)
    data = {"config": cfg, "rows": rows, "pruned_layer_sparsity": layers}
    run.write(data, markdown(data), "KerasHub BERT pruned in place, exported")
    return 0 if all(r["verified"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
