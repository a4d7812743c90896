"""The searches (sensitivity, NetAdapt, simulated annealing) and their driver:
pure parts against hand computations, budgets met on the real pruned model,
determinism, resume, progress and limits."""

import json
import re
import warnings

import keras
import numpy as np
import pytest

import kprune
from kprune.search.algorithms.annealing import assign_by_size, metropolis, perturb
from kprune.search.algorithms.netadapt import propose, reduction_target, selection_key
from kprune.search.algorithms.sensitivity import allocate, loss_curves
from kprune.search.evaluation import MaskedCopy, accuracy
from kprune.search.result import SearchResult
from kprune.search.space import SearchSpace

L = keras.layers


def _model(width=32):
    x = keras.Input((10, 10, 3))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(width, 3, padding="same", name="stem")(x)))
    b = L.ReLU()(L.BatchNormalization()(L.Conv2D(width, 3, padding="same", name="r1")(a)))
    b = L.BatchNormalization()(L.Conv2D(width, 3, padding="same", name="r2")(b))
    a = L.ReLU()(L.Add()([a, b]))
    c = L.ReLU()(L.Conv2D(2 * width, 3, strides=2, name="c3")(a))
    return keras.Model(x, L.Dense(5, name="head")(L.GlobalAveragePooling2D()(c)))


def kept_norm(model):
    """A cheap, deterministic score: the summed L2 norm of the filters kept."""
    total = 0.0
    for name in ("stem", "r1", "r2", "c3"):
        kernel = model.get_layer(name).kernel.numpy()
        total += float(np.sum(np.sqrt(np.sum(kernel.reshape(-1, kernel.shape[-1]) ** 2, axis=0))))
    return total


def _macs(model, plan):
    return kprune.count_macs(kprune.remove_channels(model, plan))


# ---------------------------------------------------------------- pure parts


def test_assign_by_size_and_perturb():
    values = assign_by_size([0.3, 0.1, 0.2, 0.4], sizes=[5, 1, 5, 9])
    assert values.tolist() == [0.2, 0.1, 0.3, 0.4]  # ties by position
    rng = np.random.default_rng(3)
    out = perturb(np.array([0.0, 0.5, 0.9]), 0.35, rng)
    expected = np.maximum(0, np.array([0.0, 0.5, 0.9]) + np.random.default_rng(3).uniform(-0.35, 0.35, 3))
    np.testing.assert_array_equal(out, expected)


def test_metropolis_with_a_fixed_seed():
    rng, reference = np.random.default_rng(7), np.random.default_rng(7)
    decisions = []
    for score, current, temperature in [(0.6, 0.5, 90), (0.4, 0.5, 90), (0.2, 0.5, 20), (0.49, 0.5, 50)]:
        accepted, p = metropolis(score, current, temperature, rng, energy_scale=100)
        if score > current:
            assert (accepted, p) == (True, 1.0)
        else:
            expected = np.exp(-100 * abs(score - current) / temperature)
            assert p == pytest.approx(expected)
            assert accepted == (reference.uniform() < expected)
        decisions.append(accepted)
    # draws 0.625, 0.897, 0.776 against p = 0.895, 0.223, 0.980
    assert decisions == [True, True, False, True]


def test_netadapt_schedule_proposals_and_selection():
    assert reduction_target(2.0, 2.0, 0.025, 0.96, 1) == pytest.approx(1.95)
    assert reduction_target(1.5, 2.0, 0.025, 0.96, 3) == pytest.approx(1.5 - 0.05 * 0.96 ** 2)
    allowed = [np.array([2, 4, 6, 8]), np.array([4, 8]), np.array([8])]
    load = lambda w: (w[0] + 2 * w[1] + w[2]) / 16.0  # noqa: E731
    assert propose(np.array([8, 8, 8]), allowed, load, 1.9) == [(0, 6), (1, 4), (2, None)]
    assert selection_key("accuracy", 0.8, 1.5, 0.9, 2.0) < selection_key("accuracy", 0.7, 1.2, 0.9, 2.0)
    # the official code's ratio rule prefers the smaller accuracy drop per resource saved
    assert selection_key("ratio", 0.7, 1.2, 0.9, 2.0) < selection_key("ratio", 0.8, 1.8, 0.9, 2.0)


def test_allocate_matches_brute_force_on_convex_curves():
    allowed = [np.arange(1, 6), np.arange(1, 6), np.arange(1, 6)]
    rng = np.random.default_rng(0)
    weights = np.array([1.0, 2.0, 3.0])
    curves = [np.cumsum(np.sort(rng.uniform(0, 1, 5)))[::-1] - np.sort(rng.uniform(0, 1, 5)).sum() * 0
              for _ in range(3)]
    curves = [c - c[-1] for c in curves]  # 0 at the full width, convex decreasing in width
    load = lambda w: float(np.dot(weights, w)) / 18.0  # noqa: E731
    widths = allocate(curves, allowed, load)
    assert load(widths) <= 1.0
    best = min((sum(c[a - 1] for c, a in zip(curves, (i, j, k))), (i, j, k))
               for i in range(1, 6) for j in range(1, 6) for k in range(1, 6) if load(np.array([i, j, k])) <= 1.0)
    assert sum(c[w - 1] for c, w in zip(curves, widths)) <= best[0] + 0.35  # greedy is near the optimum
    assert allocate(curves, allowed, lambda w: 2.0) is None


def test_loss_curves_are_monotone():
    curves = loss_curves([16], [np.array([4, 8, 12, 16])], [[12, 8, 4]], [[0.7, 0.8, 0.5]], 0.9)
    assert np.all(np.diff(curves[0]) <= 0) and curves[0][-1] == 0.0
    assert curves[0].tolist()[0] == pytest.approx(0.4)


# ---------------------------------------------------------------- evaluation


def test_masked_copy_computes_what_mask_channels_computes():
    model = _model(16)
    space = SearchSpace(model, round_to=4)
    plan = space.plan(space.widths_from_ratios(0.5))
    copy = MaskedCopy(space)
    x = np.random.default_rng(0).normal(size=(4, 10, 10, 3)).astype("float32")
    np.testing.assert_allclose(copy.apply(plan).predict(x, verbose=0),
                               kprune.mask_channels(model, plan).predict(x, verbose=0), atol=1e-5)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    copy = MaskedCopy(SearchSpace(model, round_to=4))
    copy.apply(plan)
    copy.fine_tune(x, np.arange(4), steps=3, batch_size=2)
    before = [v.numpy() for v in copy.apply(plan).trainable_weights]
    copy.fine_tune(x, np.arange(4), steps=3, batch_size=2)
    masks = copy.masks(plan)
    masked = [v for v in copy.model.trainable_weights if id(v) in masks]
    assert len(masked) >= 8
    for v in masked:  # pruned slices stay exactly 0
        assert np.all(v.numpy()[~masks[id(v)]] == 0)
    after = [v.numpy() for v in copy.model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before))  # the rest trains
    removed = kprune.remove_channels(copy.model, plan)
    np.testing.assert_allclose(removed.predict(x, verbose=0), copy.model.predict(x, verbose=0), atol=1e-4)


def test_accuracy_evaluator():
    model = keras.Sequential([keras.Input((3,)), L.Dense(3, use_bias=False)])
    model.set_weights([np.eye(3)])
    assert accuracy(np.eye(3), [0, 1, 0])(model) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- searches


def test_simulated_annealing_lands_within_3_percent_of_a_mac_budget():
    model = _model()
    result = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, round_to=2,
                                        max_evaluations=25, energy_scale=1.0, verbose=0)
    macs = _macs(model, result.plan)
    assert macs == result.resources["macs"]
    assert 0.97 * result.targets["macs"] <= macs <= result.targets["macs"]
    assert len(result.log) == result.evaluations <= 25
    if result.stopped == "done":  # cooled: 100 * 0.9^k >= 20 for 16 accepted moves, as in NNI
        assert sum(e["accepted"] for e in result.log[1:]) == 16
    assert result.score == max(e["score"] for e in result.log)
    assert isinstance(result.plan, kprune.ChannelPlan)
    again = SearchResult.from_json(result.to_json())
    assert again.widths == result.widths and again.plan.groups == result.plan.groups


def test_simulated_annealing_prior_gives_bigger_groups_more_pruning():
    model = _model()
    result = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, round_to=2,
                                        max_evaluations=6, verbose=0)
    from kprune.search.budget import Constraint
    space = SearchSpace(model, round_to=2)
    sizes = Constraint(space, kprune.Budget(macs=0.5)).sizes()
    order = np.argsort(sizes, kind="stable")
    for entry in result.log:
        ratios = np.array(entry["ratios"])
        assert np.all(np.diff(ratios[order]) >= 0)  # sorted by group size
        assert entry["load"] <= 1.0


def test_simulated_annealing_is_deterministic_under_a_seed():
    model = _model()
    budget = kprune.Budget(macs=0.5)
    runs = [kprune.simulated_annealing(model, budget, kept_norm, seed=s, round_to=2, max_evaluations=8, verbose=0)
            for s in (1, 1, 2)]
    strip = lambda r: [(e["widths"], e["score"], e["accepted"]) for e in r.log]  # noqa: E731
    assert strip(runs[0]) == strip(runs[1])
    assert strip(runs[0]) != strip(runs[2])


def test_simulated_annealing_resumes_from_its_state_file(tmp_path):
    model = _model()
    budget = kprune.Budget(macs=0.5)
    full = kprune.simulated_annealing(model, budget, kept_norm, round_to=2, max_evaluations=12, verbose=0)
    state = tmp_path / "sa.json"
    first = kprune.simulated_annealing(model, budget, kept_norm, round_to=2, max_evaluations=5,
                                       state_path=str(state), verbose=0)
    assert first.stopped == "max_evaluations" and first.evaluations == 5
    resumed = kprune.simulated_annealing(model, budget, kept_norm, round_to=2, max_evaluations=12,
                                         state_path=str(state), verbose=0)
    strip = lambda r: [(e["widths"], e["score"], e["accepted"]) for e in r.log]  # noqa: E731
    assert strip(resumed) == strip(full)
    assert resumed.widths == full.widths and resumed.score == full.score
    with pytest.raises(ValueError, match="belongs to another search"):
        kprune.simulated_annealing(model, kprune.Budget(macs=0.4), kept_norm, round_to=2,
                                   max_evaluations=12, state_path=str(state), verbose=0)


def test_netadapt_meets_the_budget_and_resumes(tmp_path):
    model = _model()
    budget = kprune.Budget(macs=0.5)
    kwargs = dict(fine_tune=0, initial_reduction=0.15, decay=0.9, round_to=2, verbose=0)
    full = kprune.netadapt(model, budget, kept_norm, **kwargs)
    assert full.stopped == "budget met"
    macs = kprune.count_macs(full.model)
    assert macs == _macs(model, full.plan) == full.resources["macs"]
    assert 0.97 * full.targets["macs"] <= macs <= full.targets["macs"]
    state = tmp_path / "na.json"
    with pytest.warns(UserWarning, match="netadapt stopped at its limit `max_evaluations`"):
        first = kprune.netadapt(model, budget, kept_norm, state_path=str(state), max_evaluations=7, **kwargs)
    assert first.stopped == "max_evaluations" and not first.met
    assert len(list(tmp_path.glob("na.json.*.npz"))) == 1
    resumed = kprune.netadapt(model, budget, kept_norm, state_path=str(state), **kwargs)
    assert [(e["group"], e["width"], e["score"]) for e in resumed.log] == [
        (e["group"], e["width"], e["score"]) for e in full.log]
    assert resumed.plan.groups == full.plan.groups


def test_netadapt_with_built_in_fine_tuning_is_deterministic():
    model = _model(16)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 10, 10, 3)).astype("float32"), rng.integers(0, 5, 64)
    kwargs = dict(data=(x[:32], y[:32]), fine_tune=2, fine_tune_data=(x, y), fine_tune_batch_size=8,
                  initial_reduction=0.3, decay=1.0, round_to=4, verbose=0)
    a = kprune.netadapt(model, kprune.Budget(macs=0.6), **kwargs)
    b = kprune.netadapt(model, kprune.Budget(macs=0.6), **kwargs)
    assert [e["score"] for e in a.log] == [e["score"] for e in b.log]
    np.testing.assert_array_equal(a.model.predict(x, verbose=0), b.model.predict(x, verbose=0))
    assert a.load <= 1.0
    with pytest.raises(ValueError, match="needs `fine_tune_data=\\(x, y\\)`"):
        kprune.netadapt(model, kprune.Budget(macs=0.6), data=(x, y), fine_tune=3)


def test_sensitivity_table_allocation_and_resume(tmp_path):
    model = _model()
    state = tmp_path / "sens.json"
    with pytest.warns(UserWarning) as record:
        partial = kprune.sensitivity(model, kept_norm, ratios=(0.25, 0.5, 0.75), round_to=2, max_evaluations=4,
                                     state_path=str(state), verbose=0, budget=kprune.Budget(macs=0.5))
    assert [str(w.message) for w in record if "sensitivity" in str(w.message)] == [
        "sensitivity stopped at its limit `max_evaluations` after 4 of 10 candidates: the scan is incomplete and "
        "no plan was allocated (result.plan is None). Raise `max_evaluations` and run again with the same "
        "`state_path` to resume."]
    assert partial.allocation is None and np.isnan(partial.metrics[-1][-1])
    assert "INCOMPLETE: scanned 4 of 10 candidates, stopped at its limit `max_evaluations`" in str(partial)
    with pytest.raises(ValueError, match="The scan is incomplete \\(4 of 10 candidates"):
        partial.allocate(kprune.Budget(macs=0.5))
    table = kprune.sensitivity(model, kept_norm, ratios=(0.25, 0.5, 0.75), round_to=2, state_path=str(state),
                               verbose=0, budget=kprune.Budget(macs=0.5))
    assert table.names == ["stem", "r1", "c3"]
    assert table.widths == [[24, 16, 8], [24, 16, 8], [48, 32, 16]]
    assert len(table.log) == 1 + 9
    for k in range(3):  # kept_norm only falls as a group loses filters
        assert table.metrics[k] == sorted(table.metrics[k], reverse=True)
        assert table.metrics[k][0] < table.baseline
    macs = _macs(model, table.plan)
    # On this small model one step of r1 (2 of 32 channels) is 7% of the budget: the
    # allocation meets the budget and no single group can widen without breaking it.
    assert 0.95 * table.allocation.targets["macs"] <= macs <= table.allocation.targets["macs"]
    data = json.loads(table.to_json())
    assert data["allocation"]["widths"] == table.allocation.widths
    assert "stem" in str(table) and "sensitivity (scanned 10 candidates;" in str(table)
    assert table.allocation.met and table.allocation.stopped == "scanned"
    assert "sensitivity: score not evaluated, 10 evaluations" in str(table.allocation)
    assert "scanned 10 candidates, allocated by the predicted loss" in str(table.allocation)
    again = table.allocate(kprune.Budget(macs=0.5), verbose=0)
    assert again.widths == table.allocation.widths and again.evaluations == 10


def test_progress_bar_log_file_and_time_limit(tmp_path, capsys):
    model = _model()
    log = tmp_path / "log.json"
    result = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, round_to=2,
                                        max_evaluations=4, log_path=str(log), verbose=1)
    out = capsys.readouterr().out
    assert "best:" in out and "4/4" in out
    logged = json.loads(log.read_text())
    assert logged["method"] == "simulated_annealing" and len(logged["candidates"]) == 4
    assert [c["score"] for c in logged["candidates"]] == [e["score"] for e in result.log]
    quick = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, round_to=2, max_time=1e-9,
                                       verbose=0)
    assert quick.stopped == "max_time" and quick.evaluations == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"cool_down_rate": 1.5}, "Argument `cool_down_rate` must be in \\(0, 1\\). Received: cool_down_rate=1.5"),
    ({"stop_temperature": 200.0}, "must be below `start_temperature`"),
    ({"max_evaluations": 0}, "Argument `max_evaluations` must be a positive int or None. Received: max_evaluations=0"),
    ({"evaluate": None}, "Give `evaluate` .* or `data=\\(x, y\\)`"),
    ({"budget": None}, "Argument `budget` is required"),
])
def test_search_argument_errors(kwargs, message):
    args = dict(budget=kprune.Budget(macs=0.5), evaluate=kept_norm, verbose=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        kprune.simulated_annealing(_model(), **args)


def test_config_list_total_sparsity_is_a_params_budget():
    model = _model()
    result = kprune.simulated_annealing(model, evaluate=kept_norm, round_to=2, max_evaluations=3, verbose=0,
                                        config_list=[{"total_sparsity": 0.4, "op_types": ["Conv2D"]}])
    assert result.targets == {"params": pytest.approx(0.6 * kprune.count_params(model))}
    assert result.resources["params"] <= result.targets["params"]


# ---------------------------------------------------------------- verdicts and progress


def test_a_search_stopped_above_its_budget_says_so(tmp_path):
    """NetAdapt narrows from the dense model: stopped by `max_evaluations` it
    is still above the budget, and says so (issue 23: 62% of MACs for 50%)."""
    model = _model()
    log = tmp_path / "log.json"
    with pytest.warns(UserWarning) as record:
        result = kprune.netadapt(model, kprune.Budget(macs=0.5), kept_norm, fine_tune=0, round_to=2,
                                 max_evaluations=3, log_path=str(log), verbose=0)
    messages = [str(w.message) for w in record if "budget" in str(w.message)]
    assert len(messages) == 1 and [w.filename for w in record if "budget" in str(w.message)] == [__file__]
    macs = _macs(model, result.plan) / kprune.count_macs(model)
    assert messages[0] == (
        f"netadapt stopped at its limit `max_evaluations` (3 evaluations, {result.seconds:.0f} s) with a plan at "
        f"{result.load:.2f} of its budget (macs {macs:.1%} of dense for a budget of 50.0%): the budget is NOT met "
        "(result.met is False). Raise `max_evaluations` (or run again with the same `state_path` to resume), or "
        "use this plan knowingly.")
    assert not result.met and result.load > 1 and macs > 0.5
    assert "stopped at its limit `max_evaluations`" in str(result) and "budget NOT met" in str(result)
    logged = json.loads(log.read_text())["result"]
    assert logged["met"] is False and logged["stopped"] == "max_evaluations" and logged["evaluations"] == 3
    assert SearchResult.from_json(result.to_json()).met is False


def test_a_search_that_meets_its_budget_says_so_quietly(tmp_path):
    model = _model()
    log = tmp_path / "log.json"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, round_to=2,
                                            max_evaluations=3, log_path=str(log), verbose=0)
    assert not [w for w in record if "budget" in str(w.message)]
    assert result.met and result.stopped == "max_evaluations"  # every annealing candidate meets the budget
    assert str(result).splitlines()[1] == f"  budget met (predicted: {result.load:.3f} of the budget)"
    assert json.loads(log.read_text())["result"]["met"] is True


def final_frame(out):
    """The last state of a Keras progress bar, without its colours."""
    return re.sub(r"\x1b\[[0-9;]*m|\x08", "", out.rstrip("\n").split("\r")[-1].split("\n")[-1]).strip()


def test_progress_bars_show_known_totals_and_end_their_line(capsys):
    model = _model()
    kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, round_to=2, max_evaluations=4)
    out = capsys.readouterr().out
    assert out.startswith("simulated_annealing under Budget(macs=0.5) (max_evaluations=4): 'best' is the best "
                          "score so far, 'of budget' the candidate's predicted resources over the budget")
    assert final_frame(out).startswith("4/4") and "of budget: " in out and "load" not in out
    assert out.endswith("\n")
    # a search that ends before its limit (cooled) ends its line at its count
    cooled = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, round_to=2, max_evaluations=60,
                                        cool_down_rate=0.5)
    out = capsys.readouterr().out
    assert cooled.stopped == "done" and cooled.evaluations < 60
    assert final_frame(out).startswith(f"{cooled.evaluations}/60") and out.endswith("\n")
    # NetAdapt stops at the budget: no total is known, the count alone shows
    na = kprune.netadapt(model, kprune.Budget(macs=0.7), kept_norm, fine_tune=0, round_to=2, initial_reduction=0.2)
    out = capsys.readouterr().out
    assert re.match(rf"{na.evaluations}/Unknown", final_frame(out)) and out.endswith("\n")
    # the scan's total: the dense model and each group at each distinct width (here 1 + 3 x 3)
    kprune.sensitivity(model, kept_norm, ratios=(0.25, 0.5, 0.75, 0.76), round_to=2)
    out = capsys.readouterr().out
    assert final_frame(out).startswith("10/10") and out.endswith("\n")


# ---------------------------------------------------------------- the settings every search shares


def test_search_options_are_shared_and_keywords_override_them():
    model = _model()
    shared = kprune.search.SearchOptions(round_to=2, max_evaluations=3, verbose=0)
    by_object = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, options=shared)
    by_keywords = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, round_to=2, max_evaluations=3,
                                             verbose=0)
    assert by_object.widths == by_keywords.widths and by_object.evaluations == 3
    overridden = kprune.simulated_annealing(model, kprune.Budget(macs=0.5), kept_norm, options=shared,
                                            max_evaluations=2)
    assert overridden.evaluations == 2 and shared.max_evaluations == 3  # the object is not changed


def test_a_misspelt_shared_setting_is_an_error_not_ignored():
    with pytest.raises(TypeError, match=r"netadapt\(\) got unexpected keyword argument\(s\) 'round_too'.*the shared "
                                        r"ones are importance, round_to"):
        kprune.netadapt(_model(), kprune.Budget(macs=0.5), kept_norm, round_too=2)
    with pytest.raises(TypeError, match="Argument `options` must be a kprune.search.SearchOptions or None. Received: "
                                        "options={'round_to': 2}"):
        kprune.amc(_model(), kprune.Budget(macs=0.5), kept_norm, options={"round_to": 2})
    with pytest.raises(ValueError, match=r"Argument `seed` must be an integer >= 0. Received: seed=-1"):
        kprune.search.SearchOptions(seed=-1)
