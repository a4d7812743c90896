"""Subprocess entry point for `tests/integration/test_distribution.py`.

Distribution strategies need process-level TensorFlow setup (logical devices,
`TF_CONFIG`) that must happen before TensorFlow initializes, so each scenario
runs in a fresh interpreter:

    python _dist_worker.py mirrored <out.json>
    python _dist_worker.py mwms <out.npz>        # TF_CONFIG set by the caller

`mirrored` trains a small pruned CNN with `fit` under a `MirroredStrategy` over
two logical CPU devices and writes a JSON report of the per-replica masks and
kernels; `mirrored_in_place` does the same with the CNN written as a subclassed
model, pruned in place (`kprune.sparsity.in_place`). `mwms` is one worker of a two-worker `MultiWorkerMirroredStrategy`
custom training loop; it writes its final masks and weights to an `.npz`.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Pruning schedule shared by both scenarios: 0 -> FINAL_SPARSITY, finished
# (end_step reached) well before training stops.
FINAL_SPARSITY = 0.75
END_STEP = 6
FREQUENCY = 2


def _build_cnn(keras):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="dense"),
        ]
    )


def _build_subclassed_cnn(keras, np):
    """The same CNN as a `keras.Model` subclass (pruned in place)."""

    class CNN(keras.Model):
        def __init__(self):
            super().__init__(name="cnn")
            self.conv = keras.layers.Conv2D(4, 3, name="conv")
            self.relu = keras.layers.ReLU()
            self.flatten = keras.layers.Flatten()
            self.dense = keras.layers.Dense(10, name="dense")

        def call(self, x):
            return self.dense(self.flatten(self.relu(self.conv(x))))

    model = CNN()
    model(np.zeros((1, 8, 8, 1), "float32"))
    return model


def _data(np, n, seed=1234):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, size=(n,)).astype("int32")
    return x, y


def _components(variable):
    """Per-replica NumPy values of a (Keras-wrapped) distributed variable."""
    import tensorflow as tf

    value = getattr(variable, "value", variable)
    strategy = tf.distribute.get_strategy()
    return [v.numpy() for v in strategy.experimental_local_results(value)]


def run_mirrored_in_place(out_path):
    run_mirrored(out_path, in_place=True)


def run_mirrored(out_path, in_place=False):
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras

    import kprune

    keras.utils.set_random_seed(0)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices[:2])
    with strategy.scope():
        model = kprune.prune_low_magnitude(
            _build_subclassed_cnn(keras, np) if in_place else _build_cnn(keras),
            pruning_schedule=kprune.PolynomialDecay(
                0.0, FINAL_SPARSITY, begin_step=0, end_step=END_STEP, frequency=FREQUENCY
            ),
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    x, y = _data(np, 64)
    # 64 samples / global batch 16 = 4 steps per epoch, 3 epochs = 12 steps:
    # the schedule ends at step 6 and training goes on for 6 more steps.
    history = model.fit(
        x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
        callbacks=[kprune.UpdatePruningStep()],
    )

    report = {
        "num_replicas": strategy.num_replicas_in_sync,
        "devices": list(strategy.extended.worker_devices),
        "loss": [float(v) for v in history.history["loss"]],
        "layers": [],
    }
    with strategy.scope():
        for w in kprune.sparsity.prune.pruned_layers(model):
            layer = {
                "name": w.name,
                "pruning_step": [int(v) for v in _components(w.pruning_step)],
                "weights": [],
            }
            for variable, mask in w.pruned_weights:
                masks = _components(mask)
                kernels = _components(variable)
                layer["weights"].append(
                    {
                        "name": variable.name,
                        "variable_type": type(variable.value).__name__,
                        "size": int(masks[0].size),
                        "masks": [m.tolist() for m in masks],
                        "kernels": [k.tolist() for k in kernels],
                    }
                )
            report["layers"].append(layer)
    with open(out_path, "w") as f:
        json.dump(report, f)


def run_mwms(out_path):
    import numpy as np
    import tensorflow as tf

    # The strategy must be created before any other TensorFlow op runs.
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
            timeout_seconds=120.0,
        )
    )
    import keras

    import kprune

    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    keras.utils.set_random_seed(0)  # identical initial weights on every worker

    global_batch = 16
    steps = 12
    with strategy.scope():
        model = kprune.prune_low_magnitude(
            _build_cnn(keras),
            pruning_schedule=kprune.PolynomialDecay(
                0.0, FINAL_SPARSITY, begin_step=0, end_step=END_STEP, frequency=FREQUENCY
            ),
        )
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
        optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    )

    # Identical fixed-seed data on both workers; the dataset is sharded by
    # element (DATA policy), so each worker trains on a different half of every
    # global batch and equal weights require the gradient all-reduce.
    x, y = _data(np, global_batch * steps)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dist_ds = strategy.experimental_distribute_dataset(ds.with_options(options))

    @tf.function
    def train_step(xb, yb):
        def step_fn(xb, yb):
            with tf.GradientTape() as tape:
                logits = model(xb, training=True)
                loss = tf.nn.compute_average_loss(
                    loss_fn(yb, logits), global_batch_size=global_batch
                )
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss, tf.reduce_sum(xb)

        loss, xsum = strategy.run(step_fn, args=(xb, yb))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, xsum, axis=None),
        )

    cb = kprune.UpdatePruningStep()
    cb.set_model(model)
    cb.on_train_begin()
    losses = []
    local_xsum = 0.0
    for step, (xb, yb) in enumerate(dist_ds):
        cb.on_train_batch_begin(step)
        loss, _ = train_step(xb, yb)
        losses.append(float(loss))
        local_xsum += float(
            sum(tf.reduce_sum(v).numpy() for v in strategy.experimental_local_results(xb))
        )
    cb.on_train_end()

    arrays = {
        "task": np.array(task),
        "num_replicas": np.array(strategy.num_replicas_in_sync),
        "steps": np.array(len(losses)),
        "losses": np.array(losses),
        "local_xsum": np.array(local_xsum),
    }
    for i, w in enumerate(kprune.sparsity.prune.collect_wrappers(model)):
        arrays[f"step/{i}"] = np.array(int(keras.ops.convert_to_numpy(w.pruning_step)))
        for j, (variable, mask) in enumerate(w.pruned_weights):
            arrays[f"mask/{i}/{j}"] = keras.ops.convert_to_numpy(mask.value)
            arrays[f"pruned/{i}/{j}"] = keras.ops.convert_to_numpy(variable.value)
    for k, v in enumerate(model.weights):
        arrays[f"weight/{k}"] = keras.ops.convert_to_numpy(v.value)
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    {"mirrored": run_mirrored, "mirrored_in_place": run_mirrored_in_place, "mwms": run_mwms}[mode](out)
