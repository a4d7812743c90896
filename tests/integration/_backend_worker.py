"""Subprocess side of tests/integration/test_backends.py: one Keras backend per process.

`python _backend_worker.py SCENARIO OUT [IN SOURCE]` with KERAS_BACKEND set:

* masks: masks of fixed weights (magnitude, block, M:N, channels) and taylor
  scores, written to OUT (.npz);
* train: prune_low_magnitude + prune_channels models trained `STEPS_A`
  steps, saved to OUT (a folder);
* resume: loads the models saved by `train` on backend SOURCE from IN, trains
  `STEPS_B` more steps, writes masks, weights and steps to OUT (.npz);
* data_parallel: fit under keras.distribution.DataParallel on JAX's host
  devices, writes each device's copy of the masks and kernels to OUT (.npz).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kprune  # noqa: E402
from kprune.criteria import catalog
from kprune.dependency.channel_graph import ChannelGraph  # noqa: E402
from kprune.sparsity.prune import collect_wrappers  # noqa: E402

STEPS_A, STEPS_B, BATCH = 6, 6, 8
SCHEDULE = dict(initial_sparsity=0.0, final_sparsity=0.75, begin_step=0, end_step=10, frequency=2)


def cnn():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def weights_of(model, seed=0):
    """Fixed weights from NumPy, with deliberate ties (repeated magnitudes)."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        v = rng.normal(size=w.shape).astype("float32")
        if v.size >= 8:
            v.ravel()[::7] = 0.25  # ties, broken by position
        values.append(v)
    return values


def data(n=48, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 4)).astype("float32"), rng.integers(0, 4, size=n)


def _masks(model, prefix, out):
    for w in collect_wrappers(model):
        for i, (_, mask) in enumerate(w.pruned_weights):
            out[f"{prefix}/{w.name}/{i}"] = keras.ops.convert_to_numpy(mask.value)


def masks(out_path):
    out = {}
    base = cnn()
    base.set_weights(weights_of(base))
    for name, kwargs, sparsity in [
        ("magnitude", {}, 0.6),
        ("block", {"block_size": (2, 2), "block_pooling_type": "MAX"}, 0.5),
        ("m_by_n", {"sparsity_m_by_n": (2, 4)}, None),
    ]:
        pruned = kprune.prune_low_magnitude(base, **kwargs)
        kprune.update_masks(pruned, sparsity=sparsity if sparsity is not None else 0.5)
        _masks(pruned, name, out)
    channels = kprune.prune_channels(base, round_to=1)
    kprune.update_masks(channels, sparsity=0.5)
    _masks(channels, "channels", out)
    x, y = data()
    criterion = catalog.get(
        "taylor", data=(x, y), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ).bind(base)
    graph = ChannelGraph(base)
    for group in graph.prunable_groups:
        scores = criterion(graph, group)
        if scores is not None:
            out[f"taylor/{group.index}"] = np.asarray(scores, np.float64)
    out["outputs"] = keras.ops.convert_to_numpy(base(x[:8]))
    np.savez(out_path, **out)


def _models():
    schedule = kprune.PolynomialDecay(**SCHEDULE)
    base = cnn()
    base.set_weights(weights_of(base))
    unstructured = kprune.prune_low_magnitude(base, pruning_schedule=schedule)
    channels = kprune.prune_channels(base, schedule, round_to=1)
    return {"unstructured": unstructured, "channels": channels}


def _fit(model, steps, offset):
    x, y = data(BATCH * steps, seed=2 + offset)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[kprune.UpdatePruningStep()])


def train(out_dir):
    out = {}
    for name, model in _models().items():
        model.compile(keras.optimizers.Adam(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        _fit(model, STEPS_A, 0)
        model.save(os.path.join(out_dir, f"{name}.keras"))
        _masks(model, f"{name}/saved", out)
    np.savez(os.path.join(out_dir, "saved.npz"), **out)


def resume(out_path, in_dir, source):
    out = {}
    for name in ("unstructured", "channels"):
        path = os.path.join(in_dir, f"{name}.keras")
        if source == "torch" and keras.backend.backend() != "torch":
            # Keras saves a PyTorch-backend optimizer by its PyTorch class
            # (keras.src.backend.torch.optimizers.torch_adam.Adam), which
            # other backends cannot run: load the model, compile it again.
            model = keras.models.load_model(path, compile=False)
            model.compile(keras.optimizers.Adam(0.01),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        else:
            model = keras.models.load_model(path)
        out[f"{name}/step_loaded"] = int(keras.ops.convert_to_numpy(collect_wrappers(model)[0].pruning_step.value))
        _masks(model, f"{name}/loaded", out)
        _fit(model, STEPS_B, 1)
        out[f"{name}/step"] = int(keras.ops.convert_to_numpy(collect_wrappers(model)[0].pruning_step.value))
        _masks(model, f"{name}/resumed", out)
        for w in collect_wrappers(model):
            for i, (variable, _) in enumerate(w.pruned_weights):
                out[f"{name}/weight/{w.name}/{i}"] = keras.ops.convert_to_numpy(variable.value)
    np.savez(out_path, **out)


def data_parallel(out_path):
    import jax

    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    out = {"devices": np.array(len(devices))}
    for name, model in _models().items():
        model.compile(keras.optimizers.Adam(0.01),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        _fit(model, STEPS_A + STEPS_B, 0)
        out[f"{name}/step"] = int(keras.ops.convert_to_numpy(collect_wrappers(model)[0].pruning_step.value))
        for w in collect_wrappers(model):
            for i, (variable, mask) in enumerate(w.pruned_weights):
                for kind, v in (("mask", mask), ("weight", variable)):
                    shards = [np.asarray(s.data) for s in v.value.addressable_shards]
                    out[f"{name}/{kind}/{w.name}/{i}"] = np.stack(shards)
    np.savez(out_path, **out)


if __name__ == "__main__":
    scenario, out_path = sys.argv[1], sys.argv[2]
    keras.utils.set_random_seed(0)
    if scenario == "masks":
        masks(out_path)
    elif scenario == "train":
        train(out_path)
    elif scenario == "resume":
        resume(out_path, sys.argv[3], sys.argv[4])
    elif scenario == "data_parallel":
        data_parallel(out_path)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
