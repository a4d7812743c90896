"""The closed loop on latency budgets (`kprune.match_latency`).

Every verdict here is deterministic: the table and the files are timed with
`MacsTimer` (milliseconds from the file's MACs) or a synthetic `measure`, so
that what a test sees is the same on any machine under any load. LiteRT's
clock is only asserted to give positive figures; the loop's convergence on
measured LiteRT latency is a benchmark (`benchmarks/bench_latency_loop.py`).
"""

import re
import warnings

import keras
import numpy as np
import pytest

import kprune
from kprune.litert import runtime as litert
from kprune.litert import timing
from kprune.search import uniform
from kprune.search.file_latency import FileLatency
from kprune.search.latency_check import refit
from kprune.search.latency_table import MacsTimer
from kprune.search.result import SearchResult

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
    table = kprune.LatencyTable(space, points=2, timer=MacsTimer(), cache_dir=str(tmp_path_factory.mktemp("lut")),
                                 verbose=0)
    return model, space, table


def test_correction_step_with_a_synthetic_latency(setup):
    model, space, table = setup
    dense = table(space.dense)
    result = uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, check_latency=False, verbose=0)

    def measure(widths):  # the file is 25% slower than the table predicts
        return 1.25 * table(widths) / dense

    checked = kprune.match_latency(result, measure=measure, verbose=0)
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
    result = uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, check_latency=False, verbose=0)
    values = iter([0.9, 0.75, 0.68, 0.9, 0.68])  # a stubborn file: never within 3%
    with pytest.warns(UserWarning) as record:
        checked = kprune.match_latency(result, measure=lambda widths: next(values), max_iterations=3,
                                       max_neighbours=0, verbose=0)
    assert [str(w.message) for w in record if "NOT met" in str(w.message)] == [
        "uniform: the exported file measured 0.680 of the dense model's latency for a budget of 0.600 (+13.3%, "
        "tolerance 3%) after 5 measurements: the latency budget is NOT met (result.met is False). Pass "
        "`check_latency={'max_iterations': 6, 'max_neighbours': 8}` for more re-fits, a looser `tolerance`, or use "
        "this plan knowingly."]
    assert [w.filename for w in record if "NOT met" in str(w.message)] == [__file__]  # points at the caller
    checks = checked.extra["latency_checks"]
    assert [c["measured"] for c in checks] == [0.9, 0.75, 0.68, 0.9]
    assert not checked.extra["latency_within"] and not checked.met
    assert "budget NOT met" in str(checked)
    assert checked.widths == checks[2]["widths"]  # the closest one, measured again: 0.68
    assert checked.extra["latency_repeat"] == 0.68


def test_first_check_passing_keeps_the_result(setup):
    model, space, table = setup
    result = uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, check_latency=False, verbose=0)
    checked = kprune.match_latency(result, measure=lambda widths: 0.61, verbose=0)
    assert checked is result and len(result.extra["latency_checks"]) == 1
    assert result.extra["latency_within"]


@pytest.mark.parametrize("case", ["macs", "json", "tolerance"])
def test_errors(setup, case):
    model, space, table = setup
    if case == "macs":
        result = uniform(model, kprune.Budget(macs=0.5), round_to=4, verbose=0)
        with pytest.raises(ValueError, match="must come from a search with a latency budget"):
            kprune.match_latency(result, measure=lambda w: 0.5)
    elif case == "json":
        result = uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, check_latency=False, verbose=0)
        with pytest.raises(ValueError, match="Argument `result` must be a SearchResult as a search returned it"):
            kprune.match_latency(SearchResult.from_json(result.to_json()), measure=lambda w: 0.5)
    else:
        result = uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, check_latency=False, verbose=0)
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
    result = uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, check_latency=False, verbose=0)
    timer = MacsTimer(overhead_ms=0.3 * table(space.dense))
    checked = kprune.match_latency(result, max_neighbours=6, timer=timer, verbose=0)
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
    ms, reference_ms, ratio = timing.interleaved_latency(path, path, litert.io_names(model), sample, rounds=3,
                                                         runs=20)
    assert ms > 0 and reference_ms > 0 and ratio > 0


# ------------------------------------------------------- the check every search runs


def test_search_checks_its_plan_on_the_exported_file_by_default(setup, tmp_path):
    """The README's snippet: `remove_channels(model, result.plan)` of a search
    with a latency budget gives a file within 3% of the budget. Here the
    file's clock (MACs plus a per-invoke overhead the table does not know)
    differs from the table's, so the search's own plan misses and the check
    that runs inside the search re-fits it."""
    model, space, table = setup
    timer = MacsTimer(overhead_ms=0.3 * table(space.dense))

    def score(m):  # deterministic: the kept filters' norms
        return float(sum(np.abs(m.get_layer(f"c{i}").kernel.numpy()).sum() for i in range(1, 5)))

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = kprune.simulated_annealing(model, kprune.Budget(latency=0.6), score, round_to=4, latency=table,
                                            max_evaluations=3, verbose=0,
                                            check_latency={"timer": timer, "max_neighbours": 6})
    assert not [w for w in record if "budget" in str(w.message)]  # a plan that lands says nothing
    check = result.extra["latency_check"]
    assert len(result.extra["latency_checks"]) >= 2 and abs(result.extra["latency_checks"][0]["error"]) > 0.03
    assert result.met and check["within"] and check["goal"] == 0.6 and check["unit"] == "of dense"
    assert result.score == pytest.approx(score(kprune.mask_channels(model, result.plan)))  # re-scored
    assert result.extra["search_widths"] != result.widths
    small = kprune.remove_channels(model, result.plan)
    dense_file, small_file = str(tmp_path / "dense.tflite"), str(tmp_path / "small.tflite")
    kprune.export_tflite(model, dense_file, verify=False, measure_latency=False)
    kprune.export_tflite(small, small_file, verify=False, measure_latency=False)
    assert abs(timer(small_file) / timer(dense_file) / 0.6 - 1) <= 0.03
    text = str(result)
    assert "  budget met (predicted" in text
    assert f"measured {check['measured']:.3f} of dense for a budget of 0.600 of dense" in text and "within 3%" in text


def test_default_check_uses_the_table_clock_and_can_be_skipped(setup):
    model, space, table = setup
    checked = uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, verbose=0)
    # the table's MacsTimer is also the file's clock: the prediction is exact and the first check lands
    assert checked.extra["latency_check"]["measurements"] == 2 and checked.met
    first = checked.extra["latency_checks"][0]
    assert first["measured"] == pytest.approx(first["predicted"], rel=1e-6)
    unchecked = uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, verbose=0,
                        check_latency=False)
    assert "latency_check" not in unchecked.extra and unchecked.met
    assert "not checked on the exported file (check_latency=False)" in str(unchecked)
    with pytest.raises(ValueError, match=r"Argument `check_latency` must be True, False, or a dict of "
                                         r"kprune.match_latency's keyword arguments \(tolerance, max_iterations, "
                                         r"max_neighbours, measure, rounds, runs, evaluate, timer\). Received: "
                                         r"check_latency=\{'tol': 0.1\}"):
        uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, check_latency={"tol": 0.1})


def test_search_whose_check_cannot_land_says_so(setup):
    model, space, table = setup
    with pytest.warns(UserWarning, match=r"uniform: the exported file measured 0.900 of the dense model's latency "
                                         r"for a budget of 0.600 \(\+50.0%, tolerance 3%\) after \d+ measurements: "
                                         r"the latency budget is NOT met \(result.met is False\)") as record:
        result = uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, verbose=0,
                         check_latency={"measure": lambda widths: 0.9, "max_iterations": 1, "max_neighbours": 0})
    assert [w.filename for w in record if "NOT met" in str(w.message)] == [__file__]  # points at the caller
    assert not result.met and not result.extra["latency_check"]["within"]
    assert "budget NOT met" in str(result)
    assert SearchResult.from_json(result.to_json()).met is False


def test_latency_progress_bars_count_measurements(setup, capsys, tmp_path):
    model, space, table = setup
    kprune.LatencyTable(space, points=2, timer=MacsTimer(), cache_dir=str(tmp_path), verbose=1)
    out = capsys.readouterr().out
    steps = len(table.entries) + 4  # one per layer, then the four calibration files
    assert "Latency table: timing 5 layers at up to 2x2 widths, then 4 whole files to calibrate" in out
    assert final_frame(out) .startswith(f"{steps}/{steps}") and out.endswith("\n")
    kprune.LatencyTable(space, points=2, timer=MacsTimer(), cache_dir=str(tmp_path), verbose=1)
    assert capsys.readouterr().out == f"Latency table read from {table_path(tmp_path)}\n"
    uniform(model, kprune.Budget(latency=0.6), round_to=4, latency=table, verbose=1,
            check_latency={"measure": lambda widths: 0.61})
    out = capsys.readouterr().out
    assert "Latency check on exported files: budget 0.6 of dense, tolerance 3%, at most 9 measurements" in out
    assert final_frame(out).startswith("2/9") and "of budget: 1.0167" in final_frame(out) and out.endswith("\n")


def table_path(directory):
    import glob
    import os

    (path,) = glob.glob(os.path.join(str(directory), "latency-*.json"))
    return path


def final_frame(out):
    """The last state of a Keras progress bar, without its colours."""
    return re.sub(r"\x1b\[[0-9;]*m|\x08", "", out.rstrip("\n").split("\r")[-1].split("\n")[-1]).strip()
