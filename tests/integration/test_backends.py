"""Every Keras 3 backend: the same masks bit for bit, .keras files that resume
on another backend, DataParallel on JAX, 32-bit step counters, and the README's
examples on the backend this session runs.

Cross-backend scenarios run `tests/integration/_backend_worker.py` in one subprocess per
backend (a backend is chosen when Keras is imported); backends that are not
installed are skipped.
"""

import importlib.util
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from _backend import BACKEND, numpy

import kprune
from kprune.sparsity.mask_math import target_zeros
from kprune.sparsity.prune import collect_wrappers
from kprune.sparsity.pruning_schedule import MAX_STEP

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_backend_worker.py")
TIMEOUT = 600
INSTALLED = [
    b for b, module in (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch"))
    if importlib.util.find_spec(module) is not None
]


def _run(backend, *args, **env):
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **env)
    root = os.path.dirname(os.path.dirname(HERE))
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, environment.get("PYTHONPATH")) if p
    )
    done = subprocess.run(
        [sys.executable, WORKER, *map(str, args)], env=environment, capture_output=True,
        text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, f"{backend} {args[0]} failed:\n{done.stderr[-4000:]}"


@pytest.fixture(scope="module")
def masks_by_backend(tmp_path_factory):
    folder = tmp_path_factory.mktemp("masks")
    results = {}
    for backend in INSTALLED:
        path = folder / f"{backend}.npz"
        _run(backend, "masks", path)
        with np.load(path) as data:
            results[backend] = {k: data[k] for k in data.files}
    return results


@pytest.mark.cross_backend
def test_masks_are_bit_identical_on_every_backend(masks_by_backend):
    if len(masks_by_backend) < 2:
        pytest.skip(f"one backend installed: {list(masks_by_backend)}")
    reference = masks_by_backend["tensorflow"]
    names = [k for k in reference if not k.startswith(("taylor", "outputs"))]
    assert {n.split("/")[0] for n in names} == {"magnitude", "block", "m_by_n", "channels"}
    for backend, result in masks_by_backend.items():
        assert sorted(result) == sorted(reference), backend
        for name in names:
            assert result[name].dtype == reference[name].dtype
            np.testing.assert_array_equal(result[name], reference[name], err_msg=f"{backend} {name}")
        # The masks are not trivial: the target count of zeros in each.
        for name in names:
            if name.startswith("magnitude"):
                assert int((result[name] == 0).sum()) == target_zeros(result[name].size, 0.6)


@pytest.mark.cross_backend
def test_outputs_and_taylor_scores_agree_across_backends(masks_by_backend):
    if len(masks_by_backend) < 2:
        pytest.skip(f"one backend installed: {list(masks_by_backend)}")
    reference = masks_by_backend["tensorflow"]
    taylor = [k for k in reference if k.startswith("taylor")]
    assert taylor
    for backend, result in masks_by_backend.items():
        np.testing.assert_allclose(result["outputs"], reference["outputs"], rtol=1e-4, atol=1e-5)
        for name in taylor:
            np.testing.assert_allclose(result[name], reference[name], rtol=1e-3, atol=1e-9,
                                       err_msg=f"{backend} {name}")


RESUME_PAIRS = [
    # A cycle: every installed backend saves once and resumes once. The
    # default run takes the first pair; `pytest -m full_matrix` the others.
    (a, b) if (a, b) == ("tensorflow", "jax") else pytest.param(a, b, marks=pytest.mark.full_matrix)
    for a, b in (("tensorflow", "jax"), ("jax", "torch"), ("torch", "tensorflow"))
    if a in INSTALLED and b in INSTALLED
]


@pytest.mark.cross_backend
@pytest.mark.skipif(not RESUME_PAIRS, reason="needs two backends installed")
@pytest.mark.parametrize("source, target", RESUME_PAIRS)
def test_saved_mid_training_resumes_on_another_backend(tmp_path, source, target):
    from _backend_worker import SCHEDULE, STEPS_A, STEPS_B

    saved = tmp_path / "saved"
    saved.mkdir()
    _run(source, "train", saved)
    _run(target, "resume", tmp_path / "resumed.npz", saved, source)
    with np.load(saved / "saved.npz") as data:
        at_save = {k: data[k] for k in data.files}
    with np.load(tmp_path / "resumed.npz") as data:
        result = {k: data[k] for k in data.files}
    for name in ("unstructured", "channels"):
        assert int(result[f"{name}/step_loaded"]) == STEPS_A
        assert int(result[f"{name}/step"]) == STEPS_A + STEPS_B
        loaded = {k.split("/", 2)[2]: v for k, v in result.items() if k.startswith(f"{name}/loaded/")}
        saved_masks = {k.split("/", 2)[2]: v for k, v in at_save.items() if k.startswith(f"{name}/saved/")}
        assert loaded and sorted(loaded) == sorted(saved_masks)
        for key, mask in loaded.items():
            np.testing.assert_array_equal(mask, saved_masks[key])
        resumed = {k.split("/", 2)[2]: v for k, v in result.items() if k.startswith(f"{name}/resumed/")}
        for key, mask in resumed.items():
            weight = result[f"{name}/weight/{key}"]
            assert np.all(weight[mask == 0] == 0), key
            # Pruning went on: masks only grow from the saved ones.
            assert np.all(mask[loaded[key] == 0] == 0), key
    final = SCHEDULE["final_sparsity"]  # end_step 10 < STEPS_A + STEPS_B
    for key, mask in result.items():
        if key.startswith("unstructured/resumed/"):
            assert int((mask == 0).sum()) == target_zeros(mask.size, final), key


@pytest.mark.cross_backend
@pytest.mark.skipif("jax" not in INSTALLED, reason="needs JAX")
def test_data_parallel_on_two_jax_devices_keeps_masks_identical(tmp_path):
    from _backend_worker import SCHEDULE, STEPS_A, STEPS_B

    out = tmp_path / "dp.npz"
    _run("jax", "data_parallel", out, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    with np.load(out) as data:
        result = {k: data[k] for k in data.files}
    assert int(result["devices"]) == 2
    checked = 0
    for key, copies in result.items():
        if "/mask/" in key or "/weight/" in key:
            assert copies.shape[0] == 2
            np.testing.assert_array_equal(copies[0], copies[1], err_msg=key)
            checked += 1
        if key.startswith("unstructured/mask/"):
            assert int((copies[0] == 0).sum()) == target_zeros(copies[0].size, SCHEDULE["final_sparsity"])
            weight = result[key.replace("/mask/", "/weight/")][0]
            assert np.all(weight[copies[0] == 0] == 0)
    assert checked >= 8
    assert int(result["unstructured/step"]) == STEPS_A + STEPS_B


# ------------------------------------------------------- this session's backend


def _dense_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)])


def test_steps_count_in_32_bits_up_to_the_last_and_raise_past_it():
    model = kprune.prune_low_magnitude(
        _dense_model(), pruning_schedule=kprune.ConstantSparsity(0.5, begin_step=0, frequency=2)
    )
    model.compile("sgd", "mse")
    for w in collect_wrappers(model):
        assert keras.backend.standardize_dtype(w.pruning_step.dtype) == "int32"
        w.pruning_step.assign(MAX_STEP - 4)
    x = np.ones((4, 6), "float32")
    y = np.ones((4, 3), "float32")
    model.fit(x, y, batch_size=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    w = collect_wrappers(model)[0]
    assert int(numpy(w.pruning_step.value)) == MAX_STEP
    assert int((w.masks[0].numpy() == 0).sum()) == target_zeros(w.masks[0].numpy().size, 0.5)
    with pytest.raises(ValueError, match=r"Training step 2147483648 is beyond the last step kprune counts"):
        model.fit(x, y, batch_size=1, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    with pytest.raises(ValueError,
                       match=r"Argument `end_step` must be <= 2147483647 .* Received: end_step=1099511627776"):
        kprune.PolynomialDecay(0.0, 0.5, 0, 2**40)


def test_channel_pruning_reads_the_final_sparsity_in_32_bits():
    # prune_channels then fit raised OverflowError on JAX (a step of 2**40).
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(16, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    pruned = kprune.prune_channels(model, kprune.PolynomialDecay(0.0, 0.5, 0, 4, frequency=1), round_to=1)
    pruned.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    pruned.fit(x, np.zeros((8, 2), "float32"), batch_size=2, verbose=0,
               callbacks=[kprune.UpdatePruningStep()])
    assert kprune.channel_sparsity(pruned)["conv"] == (8, 16)
    assert kprune.remove_channels(pruned).get_layer("conv").filters == 8


def test_activity_regularizer_of_a_wrapped_layer_adds_its_loss():
    layer = keras.layers.Dense(4, activity_regularizer=keras.regularizers.L2(1.0))
    model = kprune.prune_low_magnitude(keras.Sequential([keras.Input((3,)), layer]))
    x = np.ones((2, 3), "float32")
    outputs = model(x)
    assert len(model.losses) == 1
    np.testing.assert_allclose(
        float(numpy(model.losses[0])), float(np.sum(numpy(outputs) ** 2)) / 2, rtol=1e-5
    )


def _readme_block(marker):
    """The README's python code block that contains `marker`."""
    with open(os.path.join(os.path.dirname(os.path.dirname(HERE)), "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, marker
    return found[0]


# PyTorch runs `fit` eagerly (~10x the step time here): a tenth of the steps.
README_SCALE = 10 if BACKEND == "torch" else 1


def test_readme_tfmot_style_example_runs(tmp_path, monkeypatch):
    code = _readme_block("kprune.PruningSummaries(log_dir=\"logs\")")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    # 5 epochs of 200 batches of 32: steps 1-1000, end_step=1000.
    n = 6400 // README_SCALE
    x = rng.normal(size=(n, 12)).astype("float32")
    y = rng.integers(0, 3, size=n)
    model = "keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation='relu'), keras.layers.Dense(3)])"
    # Only the placeholder `[...]` is filled in; the code runs as written.
    code = code.replace("keras.Sequential([...])", model)
    assert "..." not in code
    namespace = {"x": x, "y": y}
    exec(compile(code, "README.md", "exec"), namespace)
    final = keras.models.load_model("pruned.keras")
    assert not collect_wrappers(final)
    schedule = kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000, frequency=100)
    sparsity = float(numpy(schedule(5 * n // 32)[1]))  # the last step is a turn
    for layer in final.layers:
        kernel = layer.kernel.numpy()
        assert int((kernel == 0).sum()) == target_zeros(kernel.size, sparsity)
    assert os.path.isdir(os.path.join("logs", "train"))
    assert os.path.isdir(os.path.join("logs", "metrics"))


def test_readme_channel_pruning_example_runs():
    code = _readme_block("kprune.prune_channels(model, kprune.PolynomialDecay(0.0, 0.5, 0, 2000)")
    rng = np.random.default_rng(0)
    # 5 epochs of 400 batches of 32: steps 1-2000, end_step=2000.
    n = 12800 // README_SCALE
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, size=n)
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(64, 3, name="conv"), keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, name="head"),
    ])
    code = code.replace(
        "pruned.compile(...)",
        "pruned.compile('adam', keras.losses.SparseCategoricalCrossentropy(from_logits=True))",
    )
    assert "..." not in code
    namespace = {"x": x, "y": y, "model": model, "keras": keras, "kprune": kprune}
    exec(compile(code, "README.md", "exec"), namespace)
    pruned, small = namespace["pruned"], namespace["small"]
    # 50% at step 2000 (13.6% at step 200 with a tenth of the steps), multiples of 8 kept.
    assert small.get_layer("conv").filters == (32 if README_SCALE == 1 else 56)
    np.testing.assert_allclose(numpy(small(x[:4])), numpy(pruned(x[:4])), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's stateless, compiled custom loop")
def test_jax_compiled_custom_loop_with_the_callback():
    import jax

    model = kprune.prune_low_magnitude(
        _dense_model(), pruning_schedule=kprune.PolynomialDecay(0.0, 0.75, 0, 8, frequency=2)
    )
    optimizer = keras.optimizers.Adam(0.01)
    model.compile(optimizer, "mse")  # the callback zeroes this optimizer's pruned state
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.MeanSquaredError()

    def compute_loss(trainable, non_trainable, x, y):
        outputs, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, outputs), non_trainable

    @jax.jit
    def train_step(state, x, y):
        trainable, non_trainable, optimizer_state = state
        (loss, non_trainable), grads = jax.value_and_grad(compute_loss, has_aux=True)(
            trainable, non_trainable, x, y
        )
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_state)

    holders = (model.trainable_variables, model.non_trainable_variables, optimizer.variables)

    def read():
        return tuple([v.value for v in group] for group in holders)

    def write(state):
        for group, values in zip(holders, state):
            for variable, value in zip(group, values):
                variable.assign(value)

    callback = kprune.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8, 6)).astype("float32")
    y = rng.normal(size=(12, 8, 3)).astype("float32")
    state = read()
    for step in range(12):
        write(state)  # the callback reads and assigns the variables
        callback.on_train_batch_begin(step)
        state = read()
        _, state = train_step(state, x[step], y[step])
    write(state)
    callback.on_train_end()
    for w in collect_wrappers(model):
        assert int(numpy(w.pruning_step.value)) == 12
        for v, m in w.pruned_weights:
            m = m.numpy()
            assert int((m == 0).sum()) == target_zeros(m.size, 0.75)
            assert not np.any(v.numpy()[m == 0])


@pytest.mark.skipif(BACKEND == "tensorflow", reason="the in-process path is test_export.py's")
def test_export_from_another_backend_converts_on_tensorflow_and_verifies(tmp_path):
    model = kprune.prune_low_magnitude(
        keras.Sequential([keras.Input((16,)), keras.layers.Dense(32), keras.layers.Dense(4)]),
        pruning_schedule=kprune.ConstantSparsity(0.75, begin_step=0, frequency=1),
    )
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    model.fit(x, x[:, :4], batch_size=16, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    path = tmp_path / "model.tflite"
    report = kprune.export_tflite(model, str(path), quantize="dynamic", sample_inputs=x[:8],
                                  latency_runs=2)
    assert report.verified is True and report.path == str(path) and path.exists()
    assert report.quantization == "dynamic" and report.verification["samples"] == 8
    # The file computes what this backend's model computes.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], x[:1])
    interpreter.invoke()
    expected = numpy(model(x[:1]))
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), expected, atol=0.05 * np.abs(expected).max())
    with pytest.raises(ValueError, match=r"Argument `sample_inputs`"):
        kprune.export_tflite(model, str(tmp_path / "bad.tflite"), sample_inputs=np.zeros((2, 5), "float32"))
