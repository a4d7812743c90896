"""What every benchmark shares: paths, result files, the environment, data, models, LiteRT timing, workers.

A benchmark is a script `benchmarks/bench_<name>.py` that runs alone
(`python benchmarks/bench_<name>.py [--quick]`) or under `benchmarks/run.py`,
which runs them all. Each one ends with `Run.write`, which writes

- `benchmarks/results/<name>.json`: `{"benchmark", "date", "finished",
  "elapsed_s", "command", "mode", "quick", "environment", "data"}`, where
  `data` is the benchmark's own figures and `environment` what `environment()`
  records (the docs site reads `date` and the environment from it);
- `benchmarks/results/<name>.md`: the Markdown a person reads, under a
  `# heading` (the docs site renders it as a page).

Full runs write there (the files are committed); `--quick` runs write under
`benchmarks/results/quick/`, which git ignores, so a smoke run never
overwrites a full result.

This module imports neither Keras nor kprune at import time: the tfmot
workers (tf_keras, `TF_USE_LEGACY_KERAS=1`) import it too. Functions that
need Keras take the `keras` module as an argument, so that one definition
of a model builds it in Keras 3 and in tf_keras alike.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
QUICK_RESULTS = os.path.join(RESULTS, "quick")
# This checkout's kprune, even when another checkout is installed (editable).
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# What `environment()` records: key -> distribution name.
PACKAGES = {"keras": "keras", "tensorflow": "tensorflow", "jax": "jax", "torch": "torch",
            "litert": "ai-edge-litert", "numpy": "numpy", "keras_hub": "keras-hub",
            "tf_keras": "tf-keras", "tfmot": "tensorflow-model-optimization"}
TFMOT_PYTHON = "KPRUNE_TFMOT_PYTHON"  # environment variable: the interpreter of the tfmot workers


def logger(name):
    """`log(msg)`: a time-stamped progress line `[name HH:MM:SS] msg` on stderr."""

    def log(msg):
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


# ----------------------------------------------------------------- the run
def parser(doc, quick_help="a reduced run (tiny models, few steps) that checks the pipeline"):
    """An argument parser with the options every benchmark takes (`--quick`)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick_help + "; results under benchmarks/results/quick/")
    return p


def results_dir(quick):
    return QUICK_RESULTS if quick else RESULTS


def git_commit():
    """This checkout's commit (short hash, `+dirty` with uncommitted changes), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def environment():
    """Versions and machine: python, keras, tensorflow, jax/torch (when installed), litert, ...,
    cpus, machine, platform, load average, Keras backend, git commit."""
    from importlib import metadata

    env = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
           "load_average": [round(v, 2) for v in os.getloadavg()], "git_commit": git_commit()}
    for key, dist in PACKAGES.items():
        try:
            env[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass  # not installed: not recorded
    return env


def command_line():
    """The command that is running, as one would type it from the repository."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT) if sys.argv and sys.argv[0] else "?"
    return " ".join(["python", script, *sys.argv[1:]])


class Run:
    """One run of benchmark `name`: progress lines, and its result files.

    `Run("channels", quick).write(data, markdown, title)` writes
    `<results>/channels.json` and `channels.md` atomically (`kprune.utils.atomic`)."""

    def __init__(self, name, quick):
        self.name, self.quick = name, bool(quick)
        self.start, self.started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.log = logger(f"bench_{name}")
        self.log(f"start ({'quick' if quick else 'full'} run)")

    @property
    def elapsed_s(self):
        return time.perf_counter() - self.start

    def paths(self):
        where = results_dir(self.quick)
        return os.path.join(where, f"{self.name}.json"), os.path.join(where, f"{self.name}.md")

    def write(self, data, markdown, title, final=True):
        """Write the result (again, when a long run saves what it has so far); the
        final write prints the Markdown. Returns the JSON path."""
        from kprune.utils import atomic

        json_path, md_path = self.paths()
        os.makedirs(os.path.dirname(json_path), exist_ok=True)
        record = {"benchmark": self.name, "date": self.started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "elapsed_s": round(self.elapsed_s, 1), "command": command_line(),
                  "mode": "quick" if self.quick else "full", "quick": self.quick,
                  "environment": environment(), "data": data}
        atomic.write_json(json_path, record)
        text = f"# {title}\n\n{markdown.strip()}\n"
        atomic.write_bytes(md_path, text.encode())
        if final:
            print(text, flush=True)
            self.log(f"done in {self.elapsed_s:.0f} s; wrote {os.path.relpath(json_path, ROOT)} and .md")
        return json_path


# ---------------------------------------------------------------- Markdown
def md_table(headers, rows):
    """A Markdown table; a header ending in ':' is right-aligned."""
    lines = ["| " + " | ".join(h.rstrip(":") for h in headers) + " |",
             "|" + "|".join("---:" if h.endswith(":") else "---" for h in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value, spec=".2f", suffix=""):
    """`value` formatted with `spec` (and `suffix`), "n/a" for None."""
    if value is None:
        return "n/a"
    try:
        return format(value, spec) + suffix
    except (TypeError, ValueError):
        return str(value)


def ratio(a, b):
    """a / b, or None when either is missing or b is 0."""
    try:
        return a / b
    except (TypeError, ZeroDivisionError):
        return None


def goal_lines(goals):
    """Goals `[{"goal", "pass", ["display"]}]` as Markdown list items."""
    return "\n".join(f"- {'met' if g['pass'] else '**missed**'}: {g['goal']}"
                     + (f": {g['display']}" if g.get("display") else "") for g in goals)


# -------------------------------------------------------------------- data
def digits(size=8, align_corners=False, seed=0):
    """scikit-learn's 8x8 digits, NHWC in [0, 1], shuffled with `seed`, split 80/20:
    `(x_train, y_train, x_test, y_test)` (1437 and 360 images).

    `size` > 8 upsamples bilinearly: with `align_corners=False` sample
    positions are pixel centres, as `tf.image.resize(method="bilinear")`;
    with True the corners of both grids coincide."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")
    y = data.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = bilinear(x[order], size, align_corners)[..., None], y[order]
    split = int(0.8 * len(x))
    return x[:split], y[:split], x[split:], y[split:]


def bilinear(images, size, align_corners=False):
    """`images` (n, h, w) resized to (n, size, size), bilinear."""
    import numpy as np

    if size == images.shape[1]:
        return images
    out = images
    for axis in (1, 2):
        n = images.shape[axis]
        if align_corners:
            pos = np.linspace(0, n - 1, size)
        else:
            pos = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = (pos - lo).astype("float32")
        shape = [1, 1, 1]
        shape[axis] = size
        out = np.take(out, lo, axis) * (1 - w).reshape(shape) + np.take(out, hi, axis) * w.reshape(shape)
    return out.astype("float32")


def compile_classifier(keras, model, learning_rate=1e-3, optimizer=None):
    """Adam (or `optimizer`), sparse cross-entropy on logits, accuracy."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return model


def accuracy(model, x, y, batch_size=128):
    """Top-1 accuracy of `model`'s predictions on `x`."""
    import numpy as np

    return float(np.mean(np.argmax(model.predict(x, batch_size=batch_size, verbose=0), -1) == y))


# ------------------------------------------------------------------ models
def mnist_cnn(keras):
    """The tfmot tutorial's MNIST CNN (3,274,634 parameters), in Keras 3 or tf_keras."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2, padding="same"),
        layers.Conv2D(64, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2, padding="same"),
        layers.Flatten(),
        layers.Dense(1024, activation="relu"),
        layers.Dense(10),
    ])


def small_resnet(keras, input_shape, widths, stem=None, momentum=0.99, name="resnet"):
    """A ResNet of basic blocks: stem Conv (`stem` filters, stride 2) + BN + ReLU, then per
    width in `widths` two blocks (the first with stride 2 after the first stage; a 1x1
    projection shortcut where the shape changes), each Conv-BN-ReLU-Conv-BN + Add + ReLU;
    global average pooling, Dense 10 (logits)."""
    L = keras.layers

    def conv_bn(x, filters, kernel, strides, name):
        x = L.Conv2D(filters, kernel, strides, padding="same", use_bias=False, name=name)(x)
        return L.BatchNormalization(momentum=momentum)(x)

    inputs = keras.Input(input_shape)
    x = L.ReLU()(conv_bn(inputs, stem or widths[0], 3, 2, "stem"))
    for stage, width in enumerate(widths):
        for block in range(2):
            label, strides = f"s{stage + 1}b{block + 1}", 2 if stage and not block else 1
            h = L.ReLU()(conv_bn(x, width, 3, strides, f"{label}_conv1"))
            h = conv_bn(h, width, 3, 1, f"{label}_conv2")
            if strides != 1 or x.shape[-1] != width:
                x = conv_bn(x, width, 1, strides, f"{label}_proj")
            x = L.ReLU()(L.Add(name=f"{label}_add")([x, h]))
    outputs = L.Dense(10, name="head")(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name=name)


def mobilenet_v2(keras, size, channels=3, alpha=1.0):
    """`keras.applications.MobileNetV2` with random weights, 10 classes, logits."""
    return keras.applications.MobileNetV2(input_shape=(size, size, channels), alpha=alpha, weights=None,
                                          classes=10, classifier_activation=None)


# ------------------------------------------------------------------ LiteRT
@contextlib.contextmanager
def quiet():
    """Send what is written to fds 1 and 2 (the converter prints the SavedModel
    signature and calibration settings from C++) to a temporary file; on an
    error show its tail, otherwise only the lines with Python warnings."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile("w+") as capture:
        failed = True
        try:
            for fd in (1, 2):
                os.dup2(capture.fileno(), fd)
            yield
            failed = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            capture.seek(0)
            lines = capture.read().splitlines()
            for line in lines[-30:] if failed else [line for line in lines if "Warning:" in line]:
                print(f"  | {line}", file=sys.stderr, flush=True)


def to_tflite(model, path):
    """`model` converted by `tf.lite.TFLiteConverter` alone (float32), written to `path`."""
    import tensorflow as tf

    with quiet():
        flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


class Runner:
    """One LiteRT interpreter (1 thread) with a fixed input, and its invoke times."""

    def __init__(self, name, path, x):
        from ai_edge_litert.interpreter import Interpreter

        self.name = name
        self.interpreter = Interpreter(model_path=path, num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.interpreter.set_tensor(self.input, x)
        self.x, self.times, self.per_round = x, [], 1

    def output_for(self, x):
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output).copy()
        self.interpreter.set_tensor(self.input, self.x)
        return out

    def run(self, n, record=True):
        invoke, clock = self.interpreter.invoke, time.perf_counter
        for _ in range(n):
            t = clock()
            invoke()
            if record:
                self.times.append(clock() - t)


def latency_stats(times_s):
    """Median and 10th percentile ms of invoke times in seconds."""
    ms = sorted(t * 1e3 for t in times_s)
    return {"ms": statistics.median(ms), "p10_ms": ms[len(ms) // 10], "invokes": len(ms)}


def interleave(runners, budget_s, warmup=10, min_invokes=20, round_s=0.03):
    """Time `runners` in interleaved rounds: `({name: latency_stats}, rounds)`.

    After `warmup` invokes each, the runners take turns in rounds of about
    `round_s` seconds each (the order rotated every round and reversed every
    other pass), until each has run `budget_s` seconds and `min_invokes`
    times, so that load from other processes hits all of them alike."""
    for r in runners:
        r.times = []
        r.run(1, record=False)  # the first invoke packs (or densifies) the weights
        t = time.perf_counter()
        r.run(warmup, record=False)
        r.per_round = max(1, round(round_s * warmup / (time.perf_counter() - t)))
    spent = {r.name: 0.0 for r in runners}
    k, n = 0, len(runners)
    while min(spent.values()) < budget_s or min(len(r.times) for r in runners) < min_invokes:
        order = runners[k % n:] + runners[:k % n]
        for r in order[::-1] if (k // n) % 2 else order:
            t = time.perf_counter()
            r.run(r.per_round)
            elapsed = time.perf_counter() - t
            spent[r.name] += elapsed
            r.per_round = max(1, round(round_s * r.per_round / elapsed))
        k += 1
    return {r.name: latency_stats(r.times) for r in runners}, k


# ----------------------------------------------------------------- workers
def child_env(**extra):
    """The environment of a benchmark's subprocess: this checkout's kprune and
    `benchmarks/` first on the path, quiet TensorFlow, unbuffered output."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, HERE, os.environ.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def tfmot_python():
    """The interpreter of the tfmot workers: `$KPRUNE_TFMOT_PYTHON`, else this one."""
    return os.environ.get(TFMOT_PYTHON) or sys.executable


def tfmot_missing():
    """Why the tfmot workers cannot run (a sentence), or None when tfmot and tf_keras are installed."""
    python = tfmot_python()
    probe = ("import importlib.util as u, sys; "
             "sys.exit(0 if u.find_spec('tensorflow_model_optimization') and u.find_spec('tf_keras') else 3)")
    if python == sys.executable:
        found = importlib.util.find_spec("tensorflow_model_optimization") and importlib.util.find_spec("tf_keras")
        code = 0 if found else 3
    else:
        try:
            code = subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode
        except (OSError, subprocess.SubprocessError) as e:
            return f"{TFMOT_PYTHON}={python} cannot run ({e})"
    if code:
        return (f"tensorflow-model-optimization and tf-keras are not installed for {python} "
                f"(`pip install -e '.[bench]'`, or set {TFMOT_PYTHON} to a Python that has them)")
    return None


class WorkerError(RuntimeError):
    pass


def run_worker(script, role, config=None, *, env=None, python=None, timeout=None, echo=None):
    """Run `python script --_worker role --_config JSON --_result PATH` and return its JSON result.

    Lines of its stderr that start with `echo` (its progress) are shown as
    they come; the others are kept, and their tail goes into the
    `WorkerError` raised when it fails, is killed after `timeout` seconds, or
    writes no result. The worker writes its result with `write_worker_result`."""
    fd, path = tempfile.mkstemp(prefix=f"bench_{role}_", suffix=".json")
    os.close(fd)
    os.remove(path)
    cmd = [python or sys.executable, os.path.join(HERE, script), "--_worker", role,
           "--_config", json.dumps(config or {}), "--_result", path]
    proc = subprocess.Popen(cmd, env=env or child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout, proc.kill) if timeout else None
    if timer:
        timer.start()
    tail = []
    try:
        for line in proc.stderr:
            if echo and line.startswith(echo):
                print(line, end="", file=sys.stderr, flush=True)
            else:
                tail = (tail + [line.rstrip()])[-20:]
        proc.wait()
    finally:
        if timer:
            timer.cancel()
    try:
        if proc.returncode or not os.path.exists(path):
            killed = proc.returncode is not None and proc.returncode < 0
            why = f"killed after {timeout} s" if killed else f"exit status {proc.returncode}"
            raise WorkerError(f"{role} worker: {why}: " + " | ".join(t for t in tail[-5:] if t))
        with open(path) as f:
            return json.load(f)
    finally:
        if os.path.exists(path):
            os.remove(path)


def write_worker_result(path, result):
    """A worker's result for `run_worker` (a temporary file the parent reads once)."""
    with open(path, "w") as f:
        json.dump(result, f)


def add_worker_arguments(p):
    """The hidden options `run_worker` passes to a worker."""
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    p.add_argument("--_config", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------- training steps
def step_timer(callback_base, times, sync=False):
    """Two callbacks that append each training step's wall time to `times`: put the
    first first and the second last in the callback list, so that a step is timed
    from before the pruning callback to after every other one. `sync=True` reads
    the loss at the end (JAX dispatches asynchronously)."""
    state = {}

    class First(callback_base):
        def on_train_batch_begin(self, batch, logs=None):
            state["t0"] = time.perf_counter()

    class Last(callback_base):
        def on_train_batch_end(self, batch, logs=None):
            if sync:
                float(logs["loss"])
            times.append(time.perf_counter() - state["t0"])

    return First(), Last()


def pruning_variants(keras, build, prune, callback, frequencies, compile_model):
    """`[plain, pruned_f<f> for f in frequencies]` for `time_fit_chunks`: `build()` a fresh
    model, `prune(model, f)` it, `compile_model(model)` each; `callback()` is the pruning
    callback a pruned variant trains with (`api.UpdatePruningStep`)."""

    def variant(name, model, callbacks):
        compile_model(model)
        return {"name": name, "model": model, "callbacks": callbacks, "callback_base": keras.callbacks.Callback}

    return [variant("plain", build(), lambda: [])] + [
        variant(f"pruned_f{f}", prune(build(), f), lambda: [callback()]) for f in frequencies]


def time_fit_chunks(variants, fit, cfg, log, label):
    """Per-step times of `variants` trained in interleaved `fit` chunks: `{name: [seconds]}`.

    `variants`: `[{"name", "model", "callbacks": () -> [callback], "callback_base"}]`;
    `fit(model, callbacks)` runs one chunk of `cfg["chunk_steps"]` steps. After
    `cfg["warmup_chunks"]` rounds, `cfg["timed_chunks"]` rounds are timed; the
    order of the variants rotates every round, so that drifts in machine load
    hit them alike."""
    timed = {v["name"]: [] for v in variants}
    rounds = cfg["warmup_chunks"] + cfg["timed_chunks"]
    for r in range(rounds):
        k, warm, t_round = r % len(variants), r < cfg["warmup_chunks"], time.perf_counter()
        for v in variants[k:] + variants[:k]:
            times = []
            first, last = step_timer(v["callback_base"], times, sync=cfg.get("sync", False))
            fit(v["model"], [first, *v["callbacks"](), last])
            if len(times) != cfg["chunk_steps"]:
                raise RuntimeError(f"{label} {v['name']}: timed {len(times)} steps, expected {cfg['chunk_steps']}")
            if not warm:
                timed[v["name"]].extend(times)
        if warm or r == rounds - 1 or (r + 1) % max(1, rounds // 6) == 0:
            log(f"{label}: round {r + 1}/{rounds}{' (warm-up)' if warm else ''} {time.perf_counter() - t_round:.1f}s; "
                + ", ".join(f"{n} median {statistics.median(t) * 1e3:.1f}ms" for n, t in timed.items() if t))
    return timed


def step_stats(times_s):
    """Median, mean, 90th percentile and max ms of step times in seconds."""
    ms = sorted(t * 1e3 for t in times_s)
    return {"steps": len(ms), "median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms),
            "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))], "max_ms": ms[-1]}
