"""Subprocess side of tests/llm/test_llm_backends.py: one Keras backend per process.

`python _oneshot_worker.py SCENARIO OUT` with KERAS_BACKEND set:

* masks: a tiny Llama 3 CausalLM with fixed weights pruned by every method
  (unstructured 0.5, 2:4, OWL 0.6); its linear kernels written to OUT (.npz);
* sharded (JAX, 8 host devices): the same model pruned on one device and
  under `keras.distribution.ModelParallel` (kernels sharded along their
  outputs); both kernels and the sharding of each kernel written to OUT.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import kprune  # noqa: E402
from kprune._internal.functional import sublayers  # noqa: E402
from kprune.registry import keras_layers  # noqa: E402

V, SEQ, D, I, HQ, HKV = 96, 12, 32, 64, 4, 2
RUNS = [("magnitude", 0.5, "uniform"), ("wanda", 0.5, "uniform"), ("sparsegpt", 0.5, "uniform"),
        ("magnitude", "2:4", "uniform"), ("wanda", "2:4", "uniform"), ("sparsegpt", "2:4", "uniform"),
        ("wanda", 0.6, "owl")]
SHARDED_RUNS = RUNS[1:3] + RUNS[4:6]
REDUCED_SHARDED_RUNS = [RUNS[1], RUNS[5]]  # Wanda 50%, SparseGPT 2:4: the default test's pair
# Every kernel sharded along its outputs (the model axis): Wanda's per-output
# selection then stays on the devices that hold each output.
LAYOUT = {
    "token_embedding/embeddings": (None, "model"),
    "token_embedding/reverse_embeddings": ("model", None),
    ".*query/kernel": (None, "model", None),
    ".*(key|value)/kernel": (None, None, "model"),
    ".*attention_output/kernel": (None, None, "model"),
    ".*feedforward_(intermediate|gate)_dense/kernel": (None, "model"),
    ".*feedforward_output_dense/kernel": (None, "model"),
}


def build(seed=0):
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=V, num_layers=2, num_query_heads=HQ, num_key_value_heads=HKV, hidden_dim=D,
        intermediate_dim=I)
    model = keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.2, size=w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def tokens():
    return np.random.default_rng(1).integers(0, V, size=(16, SEQ)).astype("int32")


def kernels(model):
    out = {}
    for layer in sublayers(model):
        view = keras_layers.linear_view(layer)
        if view is not None:
            out[view.variable.path] = keras.ops.convert_to_numpy(view.variable.value)
    return out


def prune(model, method, sparsity, ratios):
    kprune.prune_oneshot(model, sparsity, method=method, data=tokens(), ratios=ratios, blocksize=16,
                         owl_threshold=3.0, verbose=0)


def masks(out_path):
    out = {}
    for method, sparsity, ratios in RUNS:
        model = build()
        prune(model, method, sparsity, ratios)
        for path, value in kernels(model).items():
            out[f"{method}/{sparsity}/{ratios}/{path}"] = value
    np.savez(out_path, **out)


def sharded(out_path, runs=SHARDED_RUNS):
    import jax

    devices = jax.devices()
    out = {"devices": np.array(len(devices))}
    for method, sparsity, ratios in runs:
        model = build()
        prune(model, method, sparsity, ratios)
        for path, value in kernels(model).items():
            out[f"single/{method}/{sparsity}/{path}"] = value
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices=devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    for key, axes in LAYOUT.items():
        layout_map[key] = axes
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
    for method, sparsity, ratios in runs:
        model = build()
        prune(model, method, sparsity, ratios)
        for layer in sublayers(model):
            view = keras_layers.linear_view(layer)
            if view is not None:
                value = view.variable.value
                key = f"sharded/{method}/{sparsity}/{view.variable.path}"
                out[key] = keras.ops.convert_to_numpy(value)
                # Each device holds its shard only: the pruned kernel kept its layout.
                out[f"{key}/shards"] = np.array(len({s.device for s in value.addressable_shards}))
                out[f"{key}/shard_size"] = np.array(max(s.data.size for s in value.addressable_shards))
    out.update(collectives())
    np.savez(out_path, **out)


def collectives():
    """Whether XLA's compiled Wanda selection on a sharded (64, 32) kernel
    moves data between devices, per sharding of the kernel and pattern."""
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from kprune.llm.wanda import prune_matrix, wanda_scores

    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("batch", "model"))
    matrix = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
    norms = np.abs(np.random.default_rng(1).normal(size=64)).astype("float32")
    out = {}
    for axis, spec in (("outputs", P(None, "model")), ("inputs", P("model", None))):
        sharded = jax.device_put(matrix, NamedSharding(mesh, spec))
        for name, sparsity in (("0.5", 0.5), ("2:4", (2, 4))):
            fn = jax.jit(lambda m, n, s=sparsity: prune_matrix(m, wanda_scores(m, n), s, "output"))
            text = fn.lower(sharded, norms).compile().as_text()
            moved = any(op in text for op in ("all-gather", "all-to-all", "collective-permute", "all-reduce"))
            out[f"collectives/{axis}/{name}"] = np.array(moved)
    return out


if __name__ == "__main__":
    scenario, out_path = sys.argv[1], sys.argv[2]
    keras.utils.set_random_seed(0)
    {"masks": masks, "sharded": sharded,
     "sharded-reduced": lambda path: sharded(path, REDUCED_SHARDED_RUNS)}[scenario](out_path)
