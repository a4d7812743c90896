"""The closed loop on latency budgets (`kprune.match_latency`).

Every verdict here is deterministic: the table and the files are timed with
`MacsTimer` (milliseconds from the file's MACs) or a synthetic `measure`, so
that what a test sees is the same on any machine under any load. LiteRT's
clock is only asserted to give positive figures; the loop's convergence on
measured LiteRT latency is a benchmark (`benchmarks/bench_latency_loop.py`).
"""

import keras
import numpy as np
import pytest

import kprune
from kprune import litert
from kprune.latency import MacsTimer
from kprune.latency_check import FileLatency, refit
from kprune.search import SearchResult, uniform

L = keras.layers


def small_cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    x = inputs
    for i, width in enumerate((32, 48, 48, 32)):
        x = L.Conv2D(width, 3, padding="same", activation="relu", name=f"c{i + 1}")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(10, name="head")(x))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = small_cnn()
    space = kprune.SearchSpace(model, round_to=4)
    table = kprune.LatencyTable(space, points=2, timer=MacsTimer(), cache_dir=str(tmp_path_factory.mktemp("lut")))
    return model, space, table


def test_correction_step_with_a_synthetic_latency(setup):
    model, space, table = setup
    dense = table(space.dense)
    result = uniform(model, kprune.Budget(latency_ms=0.6), round_to=4, latency=table)

    def measure(widths):  # the file is 25% slower than the table predicts
        return 1.25 * table(widths) / dense

    checked = kprune.match_latency(result, measure=measure)
    checks = checked.extra["latency_checks"]
    assert len(checks) >= 2
    first, last = checks[0], checks[-1]
    assert first["widths"] == result.widths and first["measured"] == pytest.approx(1.25 * first["predicted"])
    assert first["error"] == pytest.approx(first["measured"] / 0.6 - 1)
    # T_1 = B * p_0 / m_0 = 0.6 / 1.25, and the re-fitted plan meets it on the table
    assert checks[1]["target"] == pytest.approx(0.6 * first["predicted"] / first["measured"])
    assert checks[1]["predicted"] <= checks[1]["target"] + 1e-9
    assert abs(last["error"]) <= 0.03 and checked.extra["latency_within"]
    assert checked.widths == last["widths"] != result.widths
    assert checked.extra["latency_noise"] == 0.0  # a deterministic measure repeats exactly
    assert checked.score is None and checked.model is None and checked.log == result.log
    assert checked.extra["search_widths"] == result.widths


def test_loop_returns_the_closest_plan_when_it_cannot_land(setup):
    model, space, table = setup
    result = uniform(model, kprune.Budget(latency_ms=0.6), round_to=4, latency=table)
    values = iter([0.9, 0.75, 0.68, 0.9, 0.68])  # a stubborn file: never within 3%
    checked = kprune.match_latency(result, measure=lambda widths: next(values), max_iterations=3,
                                   max_neighbours=0)
    checks = checked.extra["latency_checks"]
    assert [c["measured"] for c in checks] == [0.9, 0.75, 0.68, 0.9]
    assert not checked.extra["latency_within"]
    assert checked.widths == checks[2]["widths"]  # the closest one, measured again: 0.68
    assert checked.extra["latency_repeat"] == 0.68


def test_first_check_passing_keeps_the_result(setup):
    model, space, table = setup
    result = uniform(model, kprune.Budget(latency_ms=0.6), round_to=4, latency=table)
    checked = kprune.match_latency(result, measure=lambda widths: 0.61)
    assert checked is result and len(result.extra["latency_checks"]) == 1
    assert result.extra["latency_within"]


@pytest.mark.parametrize("case", ["macs", "json", "tolerance"])
def test_errors(setup, case):
    model, space, table = setup
    if case == "macs":
        result = uniform(model, kprune.Budget(macs=0.5), round_to=4)
        with pytest.raises(ValueError, match="`latency_ms` budget"):
            kprune.match_latency(result, measure=lambda w: 0.5)
    elif case == "json":
        result = uniform(model, kprune.Budget(latency_ms=0.6), round_to=4, latency=table)
        with pytest.raises(ValueError, match="Argument `result` must be a SearchResult as a search returned it"):
            kprune.match_latency(SearchResult.from_json(result.to_json()), measure=lambda w: 0.5)
    else:
        result = uniform(model, kprune.Budget(latency_ms=0.6), round_to=4, latency=table)
        with pytest.raises(ValueError, match=r"Argument `tolerance` must be a number in \(0, 1\). Received: "
                                             "tolerance=0"):
            kprune.match_latency(result, tolerance=0, measure=lambda w: 0.5)


@pytest.mark.parametrize("factor", [0.8, 0.6, 1.3])
def test_refit_meets_the_load_and_moves_every_group_one_way(setup, factor):
    model, space, table = setup
    widths = np.array([4, 32, 40, 24])  # c1 at its narrowest does not block the others
    load = lambda w: table(w) / (factor * table(widths))  # noqa: E731
    new = refit(space, widths, load)
    assert load(new) <= 1.0
    if factor < 1:  # a tighter load narrows groups, never widens one to pay for another
        assert np.all(new <= widths) and np.any(new < widths) and new[0] == 4
    else:  # a looser one widens, never narrows
        assert np.all(new >= widths) and np.any(new > widths)
    # the rounding repair filled the budget as far as one more step of any group allows
    allowed = [a[a <= w] for a, w in zip(space.allowed, widths)] if factor < 1 else space.allowed
    for k, options in enumerate(allowed):
        wider = options[options > new[k]]
        if len(wider):
            trial = new.copy()
            trial[k] = wider[0]
            assert load(trial) > 1.0


def test_loop_lands_on_exported_files_timed_deterministically(setup, tmp_path):
    """The loop exports each plan and times the file; here the file's clock
    (MACs plus a larger per-invoke overhead than the table assumed) differs
    from the table's, so the first plan misses and the loop corrects it."""
    model, space, table = setup
    result = uniform(model, kprune.Budget(latency_ms=0.6), round_to=4, latency=table)
    timer = MacsTimer(overhead_ms=0.3 * table(space.dense))
    checked = kprune.match_latency(result, max_neighbours=6, timer=timer)
    checks = checked.extra["latency_checks"]
    assert len(checks) >= 2 and abs(checks[0]["error"]) > 0.03  # it had to correct
    for check in checks:
        assert check["file"]["ms"] > 0 and check["file"]["dense_ms"] > 0
        assert check["measured"] == pytest.approx(check["file"]["ratio"])
    assert checked.extra["latency_within"] and checked.extra["latency_noise"] == 0.0
    # an independent export and timing of the chosen plan gives the same figure
    measure = FileLatency(space, table, timer=timer)
    try:
        again = measure(space.from_description(checked.widths))
    finally:
        measure.close()
    assert again == pytest.approx(checks[-1]["measured"]) and abs(again / 0.6 - 1) <= 0.03
    pruned, dense = str(tmp_path / "pruned.tflite"), str(tmp_path / "dense.tflite")
    table.export(space.from_description(checked.widths), pruned)
    table.export(space.dense, dense)
    assert again == pytest.approx(timer(pruned) / timer(dense))


def test_file_latency_on_litert_gives_positive_figures(setup):
    """LiteRT's clock: only what holds on any machine (files timed, positive figures)."""
    model, space, table = setup
    measure = FileLatency(space, table, rounds=1, runs=5, round_ms=1.0)
    try:
        ratio = measure(space.widths_from_ratios(0.5))
    finally:
        measure.close()
    assert ratio > 0 and measure.last["ms"] > 0 and measure.last["dense_ms"] > 0
    assert ratio == measure.last["ratio"]


def test_interleaved_latency_of_a_file_against_itself(setup, tmp_path):
    model, space, table = setup
    path = str(tmp_path / "dense.tflite")
    table.export(space.dense, path)
    sample = litert.random_samples(litert.input_specs(model))[0]
    ms, reference_ms, ratio = litert.interleaved_latency(path, path, litert.io_names(model), sample, rounds=3,
                                                         runs=20)
    assert ms > 0 and reference_ms > 0 and ratio > 0
