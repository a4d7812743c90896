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

Prints a table and writes `results_keras_hub.json` / `.md` beside this file.

    python benchmarks/bench_keras_hub.py
"""

import json
import os
import sys
import tempfile
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_io  # noqa: E402

import kprune  # noqa: E402
from kprune.sparsity.prune import pruned_layers  # noqa: E402

VOCAB, SEQ, N_TRAIN, N_TEST, BATCH = 1000, 64, 2048, 512, 32
HERE = os.path.dirname(os.path.abspath(__file__))


def make_model():
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=4, num_heads=2, hidden_dim=128,
        intermediate_dim=256, max_sequence_length=SEQ)
    inputs = [keras.Input((SEQ,), dtype="int32", name=n) for n in ("ids", "segments", "mask")]
    out = backbone(dict(zip(("token_ids", "segment_ids", "padding_mask"), inputs)))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(out["pooled_output"]))


def make_data(n, rng):
    tokens = rng.integers(3, VOCAB, size=(n, SEQ)).astype("int32")
    # Plant tokens 1 and 2 a random number of times each.
    for i in range(n):
        a, b = rng.integers(0, 8, size=2)
        pos = rng.choice(SEQ, size=a + b, replace=False)
        tokens[i, pos[:a]], tokens[i, pos[a:]] = 1, 2
    labels = ((tokens == 1).sum(1) > (tokens == 2).sum(1)).astype("int32")
    return [tokens, np.zeros_like(tokens), np.ones_like(tokens)], labels


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=128, verbose=0), -1) == y))


def compile_model(model):
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def main():
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x, y = make_data(N_TRAIN, rng)
    xt, yt = make_data(N_TEST, rng)
    model = make_model()
    compile_model(model)
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    rows = {"dense": {"accuracy": accuracy(model, xt, yt), "train_s": time.perf_counter() - start}}
    folder = tempfile.mkdtemp(prefix="kprune_hub_")
    samples = [a[:16] for a in xt]
    dense_report = kprune.export_tflite(model, os.path.join(folder, "dense.tflite"),
                                        sample_inputs=samples, measure_latency=False)

    steps = N_TRAIN // BATCH
    schedule = kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=2 * steps, frequency=steps // 4)
    kprune.prune_low_magnitude(model, pruning_schedule=schedule)  # in place
    compile_model(model)  # a fresh optimizer for fine-tuning
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    layers = {}
    for t in pruned_layers(model):
        zeros = sum(int((keras.ops.convert_to_numpy(v.value) == 0).sum()) for v, _ in t.pruned_weights)
        size = sum(int(np.prod(v.shape)) for v, _ in t.pruned_weights)
        layers[t.name] = round(zeros / size, 4)
    rows["pruned"] = {"accuracy": accuracy(model, xt, yt), "train_s": time.perf_counter() - start}
    path = os.path.join(folder, "pruned.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # the plain model: no kprune class in the file
    kprune.strip_pruning(model)
    report = kprune.export_tflite(loaded, os.path.join(folder, "pruned.tflite"),
                                  sample_inputs=samples, measure_latency=False)
    for name, r in (("dense", dense_report), ("pruned", report)):
        rows[name].update(params=r.params, nonzero_params=r.nonzero_params,
                          sparsity=round(r.sparsity, 4), tflite_bytes=r.file_bytes,
                          gzip_bytes=r.gzip_bytes, sparse_encoding=r.sparse_encoding,
                          verified=r.verified,
                          max_abs_error=r.verification["max_abs_error"] if r.verification else None)
    result = {"config": dict(vocabulary=VOCAB, sequence=SEQ, layers=4, hidden=128, heads=2,
                             intermediate=256, train=N_TRAIN, test=N_TEST, batch=BATCH),
              "rows": rows, "pruned_layer_sparsity": layers,
              "keras": keras.__version__, "backend": keras.backend.backend()}
    lines = ["| model | test accuracy | params | nonzero | sparsity | .tflite bytes | gzip bytes "
             "| sparse encoding | verified |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['accuracy']:.3f} | {r['params']:,} | {r['nonzero_params']:,} | "
                     f"{r['sparsity']:.3f} | {r['tflite_bytes']:,} | {r['gzip_bytes']:,} | "
                     f"{r['sparse_encoding']} | {r['verified']} |")
    table = "\n".join(lines)
    print(table)
    print("per-layer sparsity:", json.dumps(layers))
    bench_io.write_json(result, os.path.join(HERE, "results_keras_hub.json"))
    bench_io.write_atomic(os.path.join(HERE, "results_keras_hub.md"), table + "\n")


if __name__ == "__main__":
    main()
