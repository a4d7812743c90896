"""Timing .tflite files in LiteRT: median invoke time, and two files timed in interleaved rounds.

Latency is the median of timed invokes on one thread after warm-up invokes.
These are the only figures kprune measures with a clock; everything that
decides on them (a latency budget's check) can take a deterministic
`timer=` instead (`kprune.search.MacsTimer`).

Example (a file timed against itself: the figures are this machine's, the
ratio of a file to itself near 1):

>>> import os, tempfile, keras, kprune
>>> from kprune.litert import runtime
>>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
>>> path = os.path.join(tempfile.mkdtemp(), "m.tflite")
>>> _ = kprune.export_tflite(model, path, verify=False, measure_latency=False)
>>> sample = runtime.random_samples(runtime.input_specs(model))[0]
>>> ms, reference_ms, ratio = interleaved_latency(path, path, runtime.io_names(model), sample, rounds=2, runs=5)
>>> ms > 0 and reference_ms > 0 and ratio > 0
True
"""

import time

import numpy as np

from kprune.litert.runtime import WARMUP_RUNS, open_file, set_inputs


def latency_ms(path, io_names, sample, runs):
    """Median milliseconds of one invoke on `sample`, after warm-up invokes."""
    interp, ins, _ = open_file(path, io_names, "path")
    set_inputs(interp, ins, sample)
    for _ in range(WARMUP_RUNS):
        interp.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def interleaved_latency(path, reference, io_names, sample, rounds=9, runs=200):
    """Median ms of `path` and of `reference`, and the median per-round ratio.

    Each of `rounds` rounds times both files (`latency_ms`, `runs` invokes),
    alternating which goes first, so that drifts in machine load hit both
    alike; the ratio `path / reference` of every round is kept and the
    median returned, which is steadier than the ratio of two medians on a
    shared machine. Returns `(ms, reference_ms, ratio)`.
    """
    ms, reference_ms, ratios = [], [], []
    for r in range(rounds):
        if r % 2:
            b = latency_ms(path, io_names, sample, runs)
            a = latency_ms(reference, io_names, sample, runs)
        else:
            a = latency_ms(reference, io_names, sample, runs)
            b = latency_ms(path, io_names, sample, runs)
        ms.append(b)
        reference_ms.append(a)
        ratios.append(b / a)
    return float(np.median(ms)), float(np.median(reference_ms)), float(np.median(ratios))
