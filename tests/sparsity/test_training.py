"""Training semantics: masked forward pass, exact zeros under momentum, schedules reached."""

import keras
import numpy as np
import pytest
from _backend import numpy, train_step

import kprune
from kprune.sparsity.mask_math import target_zeros
from kprune.sparsity.prune import collect_wrappers


def _cnn():
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4),
        ]
    )


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 2)).astype("float32")
    y = rng.integers(0, 4, size=n)
    return x, y


def _compile(model, optimizer="adam", **kwargs):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model


def _drive(model):
    """Mark wrappers as driven by the callback, as fit would."""
    cb = kprune.UpdatePruningStep()
    cb.set_model(model)
    cb.on_train_begin()
    return cb


def test_forward_pass_uses_masked_weights(rng):
    layer = kprune.prune_low_magnitude(keras.layers.Dense(5))
    x = rng.normal(size=(3, 6)).astype("float32")
    layer(x)
    kernel = layer.layer.kernel
    mask = (rng.random(kernel.shape) > 0.5).astype("float32")
    layer.masks[0].assign(mask)  # the variable keeps its unmasked values
    expected = x @ (kernel.numpy() * mask) + layer.layer.bias.numpy()
    np.testing.assert_allclose(numpy(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_training_equals_plain_training_with_pruned_entries_reset(rng):
    """One select per step: the constraint discards the pruned entries' updates.

    Training the pruned model equals training the plain model from the same
    (masked) weights and zeroing the pruned entries after every step, with a
    momentum optimizer, and the pruned entries stay exactly 0 throughout.
    """
    keras.utils.set_random_seed(2)
    model = kprune.prune_low_magnitude(
        _cnn(), pruning_schedule=kprune.ConstantSparsity(0.5, begin_step=0, frequency=10**6)
    )
    x, y = _data(32)
    model(x)
    kprune.update_masks(model, sparsity=0.5)
    plain = kprune.strip_pruning(model)
    masks = {v.path: m.numpy() for w in collect_wrappers(model) for v, m in w.pruned_weights}
    pairs = [(v, masks[vm.path]) for v, vm in zip(plain.weights, kprune.strip_pruning(model).weights)
             if vm.path in masks]

    class Zero(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            _ = self.model  # on JAX: the training state back on the variables
            for v, m in pairs:
                v.assign(v.numpy() * m)

    zeros_seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            zeros_seen.append(all(
                not np.any(v.numpy()[~m.numpy()]) for w in collect_wrappers(self.model) for v, m in w.pruned_weights
            ))

    for m, cbs in ((model, [kprune.UpdatePruningStep(), Watch()]), (plain, [Zero()])):
        _compile(m, keras.optimizers.Adam(0.01))
        m.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=cbs)
    assert zeros_seen and all(zeros_seen)
    for a, b in zip(kprune.strip_pruning(model).weights, plain.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_masks_are_boolean_and_not_trainable():
    model = kprune.prune_low_magnitude(_cnn())
    model(_data(2)[0])
    for w in collect_wrappers(model):
        for v, m in w.pruned_weights:
            assert m.dtype == "bool" and not m.trainable and tuple(m.shape) == tuple(v.shape)
    assert not any(v.dtype == "bool" for v in model.trainable_variables)


@pytest.mark.parametrize("kwargs", [{}, {"block_size": (2, 2)}, {"sparsity_m_by_n": (2, 4)}])
def test_update_masks_zeroes_weights_set_after_pruning(kwargs):
    plain = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(4)])
    model = kprune.prune_low_magnitude(plain, **kwargs)
    kprune.update_masks(model, sparsity=0.5)
    before = [v.numpy() for w in collect_wrappers(model) for v, _ in w.pruned_weights]
    kprune.update_masks(model, sparsity=0.5)  # re-prune: nothing to zero, values unchanged
    after = [v.numpy() for w in collect_wrappers(model) for v, _ in w.pruned_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    for w in collect_wrappers(model):  # weights overwritten with nonzero values everywhere
        w.layer.set_weights([np.full(a.shape, 0.5, a.dtype) for a in w.layer.get_weights()])
    kprune.update_masks(model, sparsity=0.5)
    for w in collect_wrappers(model):
        for v, m in w.pruned_weights:
            assert not np.any(v.numpy()[~m.numpy()]) and np.all(v.numpy()[m.numpy()] == 0.5)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.Adam(0.01),
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.01),
    ],
)
def test_pruned_weights_stay_exactly_zero_between_updates(optimizer):
    # Masks are set once at step 0; momentum from steps before would move
    # pruned weights without the mask constraint.
    model = kprune.prune_low_magnitude(
        _cnn(), pruning_schedule=kprune.ConstantSparsity(0.6, begin_step=3, frequency=1000)
    )
    _compile(model, optimizer())
    x, y = _data()
    seen = []

    class Check(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for w in collect_wrappers(self.model):
                for v, m in w.pruned_weights:
                    m = m.numpy()
                    if m.min() == 0:
                        seen.append(int(np.count_nonzero(v.numpy()[m == 0])))

    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[kprune.UpdatePruningStep(), Check()])
    assert len(seen) > 3 * 8  # checked after many steps, on every weight
    assert set(seen) == {0}
    for w in collect_wrappers(model):
        for v, m in w.pruned_weights:
            assert int((m.numpy() == 0).sum()) == target_zeros(m.numpy().size, 0.6)
            # Kept weights keep training.
            assert np.count_nonzero(v.numpy()[m.numpy() == 1]) == int(m.numpy().sum())


def test_checkpoint_holds_masked_weights_whatever_the_callback_order(tmp_path):
    model = kprune.prune_low_magnitude(
        _cnn(), pruning_schedule=kprune.PolynomialDecay(0.0, 0.7, 0, 15, frequency=2)
    )
    _compile(model, keras.optimizers.SGD(0.1, momentum=0.9))
    x, y = _data()
    path = str(tmp_path / "ckpt.weights.h5")
    ckpt = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    # The checkpoint callback runs before UpdatePruningStep.
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[ckpt, kprune.UpdatePruningStep()])
    restored = kprune.prune_low_magnitude(_cnn())
    restored.load_weights(path)
    for w in collect_wrappers(restored):
        assert int(w.pruning_step.numpy()) == 16
        for v, m in w.pruned_weights:
            m = m.numpy()
            assert int((m == 0).sum()) == target_zeros(m.size, 0.7)
            assert np.all(v.numpy()[m == 0] == 0)


def test_polynomial_schedule_reaches_target_and_steps_count():
    schedule = kprune.PolynomialDecay(0.0, 0.8, begin_step=2, end_step=19, frequency=5)
    model = _compile(kprune.prune_low_magnitude(_cnn(), pruning_schedule=schedule))
    x, y = _data()
    history = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            m = collect_wrappers(self.model)[0].masks[0].numpy()
            history.append(float((m == 0).mean()))

    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[kprune.UpdatePruningStep(), Record()])
    # 24 steps; batch b (0-based) is step b + 1, as in tfmot; mask updates
    # before steps 2, 7, 12, 17 and end_step 19.
    n = collect_wrappers(model)[0].masks[0].numpy().size
    for batch, sparsity in enumerate(history):
        step = batch + 1
        turns = [t for t in (2, 7, 12, 17, 19) if t <= step]
        expected = 0.0
        if turns:
            t = turns[-1]
            p = (t - 2) / 17
            expected = target_zeros(n, 0.8 * (1 - (1 - p) ** 3)) / n
        assert sparsity == pytest.approx(expected, abs=1e-9), step
    assert history[5] == 0.0 and history[6] > 0.0  # the update at step 7 is before batch 6
    for w in collect_wrappers(model):
        assert int(w.pruning_step.numpy()) == 24
        for _, m in w.pruned_weights:
            assert int((m.numpy() == 0).sum()) == target_zeros(m.numpy().size, 0.8)


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="PyTorch runs one step per execution")
def test_steps_per_execution_counts_every_step():
    schedule = kprune.ConstantSparsity(0.5, begin_step=6, frequency=100)
    model = _compile(kprune.prune_low_magnitude(_cnn(), pruning_schedule=schedule), steps_per_execution=4)
    x, y = _data(80)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    for w in collect_wrappers(model):
        assert int(w.pruning_step.numpy()) == 20
        m = w.masks[0].numpy()
        assert int((m == 0).sum()) == target_zeros(m.size, 0.5)


@pytest.mark.parametrize("wrap", [kprune.prune_low_magnitude, kprune.prune_channels])
def test_fit_without_callback_raises_kprune_message_undecorated(wrap):
    # Keras re-raises errors from inside a layer call as "Exception
    # encountered when calling X.call()" with ANSI bold codes; kprune's
    # message must reach the user as it is.
    model = _compile(wrap(_cnn()))
    x, y = _data(16)
    with pytest.raises(ValueError) as info:
        model.fit(x, y, verbose=0)
    message = str(info.value)
    name = collect_wrappers(model)[0].name
    assert message.startswith(
        f"Layer '{name}' is being trained without the kprune.UpdatePruningStep callback"
    )
    assert "Add it: model.fit(..., callbacks=[kprune.UpdatePruningStep()])" in message
    assert "\x1b[" not in message
    assert "Exception encountered when calling" not in message
    assert "Arguments received by" not in message


def test_callback_on_model_without_wrappers_raises():
    model = _compile(_cnn())
    x, y = _data(16)
    with pytest.raises(ValueError, match="found no pruned layers"):
        model.fit(x, y, verbose=0, callbacks=[kprune.UpdatePruningStep()])


def test_custom_training_loop_with_tfmot_call_pattern():
    model = kprune.prune_low_magnitude(
        _cnn(), pruning_schedule=kprune.PolynomialDecay(0.0, 0.75, 0, 10, frequency=2)
    )
    x, y = _data(32)
    model(x[:1])
    optimizer = keras.optimizers.Adam(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    step_callback = kprune.UpdatePruningStep()
    step_callback.set_model(model)
    step_callback.on_train_begin()
    for _ in range(3):
        for i in range(0, 32, 8):
            step_callback.on_train_batch_begin(batch=-1)
            train_step(model, optimizer, loss_fn, x[i : i + 8], y[i : i + 8])
        step_callback.on_epoch_end(batch=-1)
    for w in collect_wrappers(model):
        assert int(w.pruning_step.numpy()) == 12
        for v, m in w.pruned_weights:
            m = m.numpy()
            assert int((m == 0).sum()) == target_zeros(m.size, 0.75)
            assert np.all(v.numpy()[m == 0] == 0)


def test_update_masks_one_shot_and_from_schedule():
    model = kprune.prune_low_magnitude(
        _cnn(), pruning_schedule=kprune.PolynomialDecay(0.0, 0.8, 0, 100, power=1)
    )
    x, _ = _data(4)
    model(x)
    kprune.update_masks(model, sparsity=0.3)
    for w in collect_wrappers(model):
        for v, m in w.pruned_weights:
            assert int((v.numpy() == 0).sum()) >= target_zeros(v.numpy().size, 0.3)
            assert int((m.numpy() == 0).sum()) == target_zeros(m.numpy().size, 0.3)
    for w in collect_wrappers(model):
        w.pruning_step.assign(50)
    kprune.update_masks(model)  # schedule value at step 50: 0.4
    for w in collect_wrappers(model):
        m = w.masks[0].numpy()
        assert int((m == 0).sum()) == target_zeros(m.size, 0.4)
    with pytest.raises(ValueError, match=r"Received: sparsity=1.5"):
        kprune.update_masks(model, sparsity=1.5)
    with pytest.raises(ValueError, match="found no pruned layers"):
        kprune.update_masks(_cnn(), sparsity=0.5)


def test_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = kprune.prune_low_magnitude(
        _cnn(), pruning_schedule=kprune.PolynomialDecay(0.0, 0.75, 0, 10, frequency=2)
    )
    _compile(model)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    assert keras.backend.standardize_dtype(model(x[:2]).dtype) == "float16"
    for w in collect_wrappers(model):
        for v, m in w.pruned_weights:
            assert v.dtype == "float32"
            m = m.numpy()
            assert int((m == 0).sum()) == target_zeros(m.size, 0.75)
            assert np.all(v.numpy()[m == 0] == 0)
    stripped = kprune.strip_pruning(model)
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0).astype("float32"),
        model.predict(x, verbose=0).astype("float32"),
        atol=1e-2,
    )
    assert not np.isnan(model.predict(x, verbose=0)).any()


def test_training_starts_from_masked_weights_after_set_weights():
    dense = _cnn()
    # Step 1 (the first batch) is the one pruning turn.
    model = kprune.prune_low_magnitude(dense, pruning_schedule=kprune.ConstantSparsity(0.5, 1, frequency=1000))
    _compile(model, keras.optimizers.SGD(0.0))  # lr 0: weights change only by masking
    x, y = _data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    masked_prediction = model.predict(x, verbose=0)
    # Write the dense weights back into the pruned layers: the forward pass
    # (inference) masks them, and the next fit re-zeroes the variables.
    for w, layer in zip(collect_wrappers(model), [l for l in dense.layers if l.weights]):
        w.layer.set_weights(layer.get_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), masked_prediction, atol=1e-5)
    losses = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    for w in collect_wrappers(model):
        for v, m in w.pruned_weights:
            assert np.all(v.numpy()[m.numpy() == 0] == 0)
    np.testing.assert_allclose(model.predict(x, verbose=0), masked_prediction, atol=1e-5)
    assert np.isfinite(losses.history["loss"]).all()


def test_resumed_fit_continues_the_step_count():
    schedule = kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=20, frequency=10)
    model = kprune.prune_low_magnitude(
        keras.Sequential([keras.Input((10,)), keras.layers.Dense(10)]), pruning_schedule=schedule
    )
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(10, 10)).astype("float32")
    sparsity = []
    for _ in range(3):  # three fits of 10 batches: steps 1-10, 11-20, 21-30
        model.fit(x, x, batch_size=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
        sparsity.append(float(np.mean(collect_wrappers(model)[0].masks[0].numpy() == 0)))
        assert int(collect_wrappers(model)[0].pruning_step.numpy()) == 10 * len(sparsity)
    assert sparsity == [0.7, 0.8, 0.8]
