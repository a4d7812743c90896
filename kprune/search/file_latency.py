"""`FileLatency`: the latency of a pruned model measured on its exported .tflite file.

What `kprune.match_latency` checks a plan with: the dense model and each
pruned one exported to float32 TFLite and timed against each other in
interleaved rounds (so that load from other jobs hits both alike), or timed
by a deterministic `timer=` (`kprune.search.MacsTimer`) where a test or a
reproducible pipeline needs every run to agree.

Example (a deterministic clock: milliseconds from the file's MACs):

>>> import keras, kprune
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="head")])
>>> space = kprune.SearchSpace(model, round_to=4)
>>> timer = kprune.search.MacsTimer(overhead_ms=0.0)
>>> table = kprune.LatencyTable(space, points=2, calibrate=False, cache_dir=False, timer=timer, verbose=0)
>>> measure = FileLatency(space, table, timer=timer)
>>> round(measure(space.widths_from_ratios(0.5)), 2)  # the file's MACs at half the channels, over the dense file's
0.29
>>> measure.close()
"""

import os
import tempfile

import numpy as np

from kprune.litert import runtime as litert
from kprune.litert import timing
from kprune.utils.native_logs import quiet_native_logs


class FileLatency:
    """Measured latency of the model pruned to a width vector, on its exported file.

    Exports the dense model once and each pruned one to float32 TFLite
    (`LatencyTable.export`, into a temporary directory kept while this object
    lives) and times them on one thread in `rounds` interleaved rounds of
    invokes (`kprune.litert.timing.interleaved_latency`): `runs`, or more for a fast
    model, so that a round times each file for at least `round_ms` (on a
    0.07 ms MobileNetV2, 200 invokes per round left two measurements of one
    file up to 3% apart on a shared machine).

    Args:
        space: the `kprune.search.space.SearchSpace` the widths belong to.
        table: a `kprune.LatencyTable` on the same model (it exports).
        relative: return the latency as a fraction of the dense file's (the
            median per-round ratio) rather than in ms. Defaults to True.
        rounds / runs: interleaved rounds and (at least) invokes per round.
            Defaults to 9 and 200.
        round_ms: the least time per file and round, in ms. Defaults to 100.
        timer: `timer(tflite) -> ms` in place of LiteRT's clock (one call
            per file; `rounds`, `runs` and `round_ms` then unused), e.g. a
            deterministic `kprune.search.latency_table.MacsTimer`. Defaults to None.

    Attributes:
        last: `{"ms", "dense_ms", "ratio"}` of the last measurement.
    """

    def __init__(self, space, table, relative=True, rounds=9, runs=200, round_ms=100.0, timer=None):
        if timer is not None and not callable(timer):
            raise ValueError("Argument `timer` must be a callable `timer(tflite) -> ms` or None. "
                             f"Received: timer={timer!r}")
        self.space, self.table, self.relative, self.timer = space, table, bool(relative), timer
        self.rounds = int(rounds)
        self._tmp = tempfile.TemporaryDirectory(prefix="kprune-latency-")
        self.dense_path = os.path.join(self._tmp.name, "dense.tflite")
        table.export(space.dense, self.dense_path, space=space)
        self.io_names = litert.io_names(space.model)
        self.sample = litert.random_samples(litert.input_specs(space.model))[0]
        with quiet_native_logs():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate" and the like
            if timer is None:
                dense_ms = timing.latency_ms(self.dense_path, self.io_names, self.sample, 50)
                self.runs = max(int(runs), int(np.ceil(float(round_ms) / max(dense_ms, 1e-3))))
            else:
                self.runs, self._dense_ms = 1, float(timer(self.dense_path))
        self._files = {}
        self.last = None

    def path(self, widths):
        """The exported file of `widths` (exported once)."""
        key = tuple(int(w) for w in widths)
        if key not in self._files:
            path = os.path.join(self._tmp.name, f"pruned{len(self._files)}.tflite")
            self.table.export(np.asarray(widths), path, space=self.space)
            self._files[key] = path
        return self._files[key]

    def __call__(self, widths):
        path = self.path(widths)
        with quiet_native_logs():
            if self.timer is not None:
                ms, dense_ms = float(self.timer(path)), self._dense_ms
                ratio = ms / dense_ms
            else:
                ms, dense_ms, ratio = timing.interleaved_latency(path, self.dense_path, self.io_names,
                                                                 self.sample, self.rounds, self.runs)
        self.last = {"ms": ms, "dense_ms": dense_ms, "ratio": ratio}
        return ratio if self.relative else ms

    def close(self):
        self._tmp.cleanup()
