"""A per-layer LiteRT latency lookup table (NetAdapt's resource estimator).

For every layer with MACs (convolutions, Dense, ...), `LatencyTable` builds a
one-layer model at several input/output widths -- multiples of `round_to`
between the narrowest and the full width, at most `points` per axis --
converts it to float32 TFLite and times it in LiteRT on one thread (median of
`runs` invokes after warm-up), as NetAdapt's lookup table does. Between
grid points the table interpolates bilinearly (a convolution's latency is
close to bilinear in its input and output widths). Layers with the same
configuration and input shape are measured once.

The sum over layers misses the ops outside the table (Add, pooling,
activations that are not fused) and counts each one-layer file's invoke
overhead, so the table is calibrated on whole exported files: the dense
model and three uniformly pruned ones are exported (`kprune.export_tflite`) and
timed, and the prediction is `a + b * sum_l LUT_l(widths)` with `a, b` fitted
by least squares. `calibration` holds the measured and predicted times.

The table is cached as JSON in `cache_dir` (default `~/.cache/kprune`, or
`$KPRUNE_CACHE`), keyed by a hash of the model's architecture, the searched
groups, the grid settings, the LiteRT version and the machine.

Times come from LiteRT by default. `timer=` replaces the clock with any
`timer(tflite) -> ms` (a path or the file's bytes); `MacsTimer` is a
deterministic one (milliseconds proportional to the file's MACs), for tests
and for pipelines that must give the same plan on every machine.

Example (not run: it measures for a minute):

    table = LatencyTable(SearchSpace(model))
    table(space.dense), table.calibration
"""

import hashlib
import json
import os
import platform
import tempfile
import time

import numpy as np

from kprune.channels.oneshot import masked_copy
from kprune.dependency.unit_space import usage_name
from kprune.export import convert
from kprune.export.exporter import export_tflite
from kprune.litert import timing
from kprune.registry import keras_layers
from kprune.search.space import LayerFractions
from kprune.stats.keras_stats import layer_stats
from kprune.stats.tflite_ops import tflite_stats
from kprune.utils import atomic
from kprune.utils.native_logs import quiet_native_logs
from kprune.utils.progress import Progress, heading


def default_cache_dir():
    return os.environ.get("KPRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kprune")


def grid(low, high, points, round_to):
    """At most `points` widths from `low` to `high` (both included), the inner
    ones rounded to multiples of `round_to`.

    >>> grid(8, 64, 4, 8), grid(16, 16, 4, 8), grid(8, 20, 4, 8)
    ([8, 24, 48, 64], [16], [8, 16, 20])
    """
    if high <= low:
        return [int(high)]
    inner = np.linspace(low, high, max(points, 2))[1:-1]
    values = {int(low), int(high)} | {int(min(high, max(low, round_to * round(v / round_to)))) for v in inner}
    return sorted(values)


def interpolate(xs, ys, table, x, y):
    """Bilinear interpolation of `table[i, j]` (at `xs[i]`, `ys[j]`), clamped at the edges.

    >>> interpolate([0, 10], [0, 10], np.array([[0.0, 1.0], [1.0, 2.0]]), 5, 5)
    1.0
    """
    column = np.array([np.interp(x, xs, table[:, j]) for j in range(len(ys))])
    return float(np.interp(y, ys, column))


class MacsTimer:
    """A deterministic latency: `overhead_ms + ms_per_mmac * MACs / 1e6` of a .tflite file.

    The MACs are those `kprune.stats.tflite_ops` counts in the file
    (convolutions, fully connected ops and activation-by-activation matmuls),
    so the figure depends on the file alone, never on the machine or its
    load. Pass it as `timer=` to `LatencyTable`, `FileLatency` or
    `kprune.match_latency` where a test or a reproducible pipeline needs a
    latency that every run agrees on.

    Args:
        ms_per_mmac: milliseconds per million MACs. Defaults to 1.0.
        overhead_ms: a fixed cost per invoke. Defaults to 0.01.

    Example:

    >>> import os, tempfile, keras, kprune
    >>> model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1000)])
    >>> path = os.path.join(tempfile.mkdtemp(), "m.tflite")
    >>> _ = kprune.export_tflite(model, path, verify=False, measure_latency=False)
    >>> MacsTimer(ms_per_mmac=2.0, overhead_ms=0.5)(path)  # 10,000 MACs
    0.52
    """

    def __init__(self, ms_per_mmac=1.0, overhead_ms=0.01):
        for name, value in (("ms_per_mmac", ms_per_mmac), ("overhead_ms", overhead_ms)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"Argument `{name}` must be a number >= 0. Received: {name}={value!r}")
        self.ms_per_mmac, self.overhead_ms = float(ms_per_mmac), float(overhead_ms)

    @property
    def cache_key(self):
        """What a cached `LatencyTable` measured with this timer is keyed by."""
        return f"macs:{self.ms_per_mmac!r}:{self.overhead_ms!r}"

    def __repr__(self):
        return f"MacsTimer(ms_per_mmac={self.ms_per_mmac!r}, overhead_ms={self.overhead_ms!r})"

    def __call__(self, tflite):
        macs = sum(row.macs for row in tflite_stats(tflite))
        return self.overhead_ms + self.ms_per_mmac * macs / 1e6


def check_timeable(space, method=None):
    """Refuse a space the table cannot time: it rebuilds one Keras layer at a
    time from its config at each width, which says no attention layer's head
    count (`kprune.registry.keras_layers.resized_config` sets a channel width)
    and reaches no layer inside a transformer block (a KerasHub block builds
    its layers from its own config).

    >>> import keras
    >>> from kprune.search.space import SearchSpace
    >>> x = keras.Input((6, 8))
    >>> y = keras.layers.MultiHeadAttention(num_heads=4, key_dim=2, name="mha")(x, x)
    >>> check_timeable(SearchSpace(keras.Model(x, y)), "netadapt")
    Traceback (most recent call last):
    ...
    ValueError: netadapt cannot meet a latency budget on model 'functional...
    """
    graph = space.graph
    attention = list(dict.fromkeys(usage_name(u) for u in graph.usages if u.kind == "head"))
    blocks = [t.name for t in graph.traced]
    if not (attention or blocks):
        return
    what = (f"attention layers ({', '.join(attention[:3])}{', ...' if len(attention) > 3 else ''})"
            if attention else f"layers inside blocks ({', '.join(blocks[:3])}{', ...' if len(blocks) > 3 else ''})")
    raise ValueError(
        f"{method or 'A search'} cannot meet a latency budget on model '{space.model.name}' "
        f"({type(space.model).__name__}): its LatencyTable times one layer at a time, rebuilt from its config at "
        f"each width, and cannot time {what}. Give a parameter or MAC budget instead (kprune.Budget(params=...) "
        "or kprune.Budget(macs=...)), and measure the smaller model's latency on its exported file "
        "(kprune.export_tflite(..., measure_latency=True))."
    )


def _one_layer_tflite(layer, config, input_shape):
    """Float32 TFLite bytes of `layer`'s class built from `config` on `input_shape`.

    Converted as a Keras model, so the weights are frozen into constants as
    in an exported file (a concrete function of the bare layer keeps them as
    resource variables: the file then reads and transposes them on every
    invoke, which is not what a deployed model runs).
    """
    import keras

    new = type(layer).from_config(config)
    model = keras.Sequential([keras.Input(tuple(input_shape[1:]), batch_size=int(input_shape[0])), new])
    return convert.convert(model)


class LatencyTable:
    """Predicted LiteRT latency (ms, one thread) of the model pruned to a width vector.

    Args:
        space: a `kprune.search.space.SearchSpace`.
        points: grid widths per axis and layer. Defaults to 4.
        runs: timed invokes per grid point (the median is kept). Defaults to 30.
        calibrate: fit `a + b * sum` on whole exported files. Defaults to True.
        calibration_runs: timed invokes per whole file. Defaults to 100.
        cache_dir: where the table is cached; None for the default, False to
            neither read nor write a cache.
        progress: a callable `progress(message)` for status lines, or None.
        timer: `timer(tflite) -> ms` for a .tflite path or bytes, in place of
            LiteRT's clock (`runs` then unused), e.g. a deterministic
            `MacsTimer`. A timer without a `cache_key` attribute is never
            cached. Defaults to None (LiteRT, one thread).
        verbose: 1 for a progress bar while the table is measured (one step
            per layer, then one per whole file calibrated on; a table read
            from the cache shows one line), 0 for none. LiteRT's and
            TensorFlow's native log lines are kept off the terminal either
            way. Defaults to 1.

    Attributes:
        entries: per layer: name, widths grid and measured milliseconds.
        calibration: `{"a", "b", "points": [{"widths", "measured_ms",
            "table_ms", "predicted_ms"}]}`.
        path: the cache file (or None).
    """

    kind = "latency_ms"

    def __init__(self, space, points=4, runs=30, calibrate=True, calibration_runs=100,
                 cache_dir=None, progress=None, timer=None, verbose=1):
        check_timeable(space)
        self.space = space
        self.fractions = LayerFractions(space)
        self.points, self.runs = int(points), int(runs)
        self._progress = progress or (lambda message: None)
        if timer is not None and not callable(timer):
            raise ValueError("Argument `timer` must be a callable `timer(tflite) -> ms` or None. "
                             f"Received: timer={timer!r}")
        self.timer = timer
        timer_key = "litert" if timer is None else getattr(timer, "cache_key", None)
        key = json.dumps({
            "space": space.fingerprint(), "points": self.points, "runs": self.runs,
            "litert": _litert_version(), "machine": platform.machine(), "cpu": platform.processor(),
            "calibrate": bool(calibrate), "timer": timer_key,
        }, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.path = None
        if cache_dir is not False and timer_key is not None:
            directory = cache_dir or default_cache_dir()
            os.makedirs(directory, exist_ok=True)
            self.path = os.path.join(directory, f"latency-{digest}.json")
        cached = atomic.read_json(self.path) if self.path and os.path.isfile(self.path) else None
        if cached is not None:
            self.entries, self.calibration = cached["entries"], cached["calibration"]
            if verbose:
                heading(f"Latency table read from {self.path}")
        else:
            started = time.perf_counter()
            layers = self._layers()
            files = 4 if calibrate else 0
            clock = "LiteRT, one thread" if timer is None else f"timer {timer!r}"
            bar = Progress(f"Latency table: timing {len(layers)} layers at up to {self.points}x{self.points} "
                           f"widths{f', then {files} whole files to calibrate' if files else ''} ({clock})",
                           target=len(layers) + files, unit_name="step", verbose=verbose)
            self.entries = self._measure(layers, bar)
            self._index()
            self.calibration = {"a": 0.0, "b": 1.0, "points": []}
            if calibrate:
                self.calibration = self._calibrate(calibration_runs, bar)
            bar.finish()
            self.calibration["seconds"] = time.perf_counter() - started
            if self.path:
                atomic.write_json(self.path, {"key": json.loads(key), "entries": self.entries,
                                              "calibration": self.calibration})
        self._index()

    def _index(self):
        self._arrays = [(np.array(e["in"], float), np.array(e["out"], float), np.array(e["ms"]))
                        for e in self.entries]
        index = {n: j for j, n in enumerate(self.fractions.layers)}
        self._rows = [index[e["layer"]] for e in self.entries]

    # ------------------------------------------------------------ measuring
    def _layers(self):
        """`(layer, name)` of each layer with MACs, in graph order."""
        with_macs = {r.name for r in layer_stats(self.space.model) if r.macs > 0}
        seen, out = set(), []
        for usage in self.space.graph.usages:
            layer = keras_layers.unwrap(usage.layer)
            if layer.name in with_macs and layer.name not in seen:
                seen.add(layer.name)
                out.append(layer)
        return out

    def _measure(self, layers, bar):
        graph, fr = self.space.graph, self.fractions
        lo_in, lo_out = fr.kept(self.space.min_widths)
        index = {n: j for j, n in enumerate(fr.layers)}
        memo, entries = {}, []
        for count, layer in enumerate(layers):
            j = index[layer.name]
            in_shape = tuple(layer.input.shape)
            width = graph.widths.get(id(layer))
            tied = np.array_equal(fr.in_counts[j], fr.out_counts[j]) and fr.in_total[j] == fr.out_total[j]
            ins = grid(lo_in[j], int(fr.in_total[j]), self.points, self.space.round_to)
            outs = ins if tied else grid(lo_out[j], int(fr.out_total[j]), self.points, self.space.round_to)
            if width is None:  # the output width follows the input (depthwise) or is fixed
                outs = ins if tied else [int(fr.out_total[j])]
            self._progress(f"latency table: layer {count + 1}/{len(layers)} {layer.name} "
                           f"({len(ins)}x{1 if tied else len(outs)} widths)")
            table = np.zeros((len(ins), len(outs)))
            for a, cin in enumerate(ins):
                for b, cout in enumerate(outs):
                    if tied and cin != cout:
                        continue
                    config = layer.get_config()
                    if width is not None:
                        config = keras_layers.resized_config(layer, width[0], int(cout))
                    shape = (1,) + tuple(int(d) for d in in_shape[1:-1]) + (int(cin),)
                    signature = json.dumps([type(layer).__name__, {k: v for k, v in config.items() if k != "name"},
                                            shape], sort_keys=True, default=str)
                    if signature not in memo:
                        content = _one_layer_tflite(layer, config, shape)
                        sample = [np.random.default_rng(0).normal(size=shape).astype("float32")]
                        with quiet_native_logs():
                            memo[signature] = (float(self.timer(content)) if self.timer is not None else
                                               timing.latency_ms(content, ([], []), sample, self.runs))
                    table[a, b] = memo[signature]
            if tied:  # a diagonal: store it as a (n, 1) table read with the input width
                table = np.diag(table)[:, None]
                outs = [0]
            entries.append({"layer": layer.name, "tied": bool(tied), "in": [int(v) for v in ins],
                            "out": [int(v) for v in outs], "ms": table.tolist()})
            bar.update(count + 1)
        return entries

    def table_ms(self, widths):
        """The uncalibrated sum of the per-layer table entries."""
        f_in, f_out = self.fractions.fractions(widths)
        total = 0.0
        for (xs, ys, table), entry, j in zip(self._arrays, self.entries, self._rows):
            cin = f_in[j] * self.fractions.in_total[j]
            cout = 0.0 if entry["tied"] else f_out[j] * self.fractions.out_total[j]
            total += interpolate(xs, ys, table, cin, cout)
        return total

    def __call__(self, widths):
        return self.calibration["a"] + self.calibration["b"] * self.table_ms(widths)

    def export(self, widths, path, measure_latency=False, runs=100, space=None):
        """Export the model pruned to `widths` (of `space`, default the table's)
        to the float32 file `path`; returns the `kprune.export_tflite` report."""
        space = space or self.space
        model = space.model
        if not np.array_equal(widths, space.dense):
            model = masked_copy(model, space.plan(widths))
        return export_tflite(model, path, verify=False, measure_latency=measure_latency, latency_runs=runs)

    def measure(self, widths, runs=None, directory=None):
        """Export the model pruned to `widths` and time the whole file (ms)."""
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            path = os.path.join(tmp, "m.tflite")
            if self.timer is not None:
                self.export(widths, path)
                with quiet_native_logs():
                    return float(self.timer(path))
            report = self.export(widths, path, measure_latency=True, runs=runs or 100)
        return report.latency_ms

    def _calibrate(self, runs, bar=None):
        points = []
        for ratio in (0.0, 0.25, 0.5, 0.7):
            widths = self.space.widths_from_ratios(ratio)
            self._progress(f"latency table: calibrating on the whole file at ratio {ratio}")
            points.append({"widths": self.space.describe(widths), "measured_ms": self.measure(widths, runs),
                           "table_ms": self.table_ms(widths)})
            if bar is not None:
                bar.update(bar.current + 1)
        x = np.array([p["table_ms"] for p in points])
        y = np.array([p["measured_ms"] for p in points])
        (b, a), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), y, rcond=None)
        if b <= 0:  # noise swamped the slope: scale only
            a, b = 0.0, float(np.sum(y) / np.sum(x))
        for p in points:
            p["predicted_ms"] = float(a + b * p["table_ms"])
        return {"a": float(a), "b": float(b), "points": points}

    def agreement(self, widths_list, runs=None):
        """Predicted vs measured whole-file latency for some width vectors:
        a list of `{"predicted_ms", "measured_ms", "error"}` (error relative
        to the measurement)."""
        out = []
        for widths in widths_list:
            predicted, measured = self(widths), self.measure(widths, runs)
            out.append({"predicted_ms": predicted, "measured_ms": measured,
                        "error": (predicted - measured) / measured})
        return out


def _litert_version():
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - a missing distribution only weakens the cache key
        return "unknown"

