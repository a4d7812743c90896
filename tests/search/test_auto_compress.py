"""AutoCompress: the per-round budget schedule, the budget met on the pruned
model, widths that never widen between rounds, determinism and resume."""

import keras
import numpy as np
import pytest

import kprune
from kprune.search.algorithms.auto_compress import capped_candidate, load_function, round_targets
from kprune.search.driver import space_and_constraint

L = keras.layers


def _model():
    x = keras.Input((8, 8, 3))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, padding="same", name="stem")(x)))
    b = L.ReLU()(L.Conv2D(32, 3, padding="same", name="r1")(a))
    a = L.Add()([a, L.Conv2D(32, 3, padding="same", name="r2")(b)])
    c = L.ReLU()(L.Conv2D(32, 3, strides=2, name="c3")(a))
    return keras.Model(x, L.Dense(4, name="head")(L.GlobalAveragePooling2D()(c)))


DATA = np.random.default_rng(0).normal(size=(48, 8, 8, 3)).astype("float32")
LABELS = np.random.default_rng(1).integers(0, 4, size=48)


def train(model, epochs, callbacks):
    if getattr(model, "optimizer", None) is None:
        model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(DATA, LABELS, epochs=epochs, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks)


def score(model):
    return float(-np.mean(np.square(model.predict(DATA[:16], verbose=0))))


SETTINGS = dict(num_iterations=2, sa_max_evaluations=3, admm_num_iterations=2, admm_training_epochs=1,
                rho=1e-2, verbose=0)


def test_round_targets_follow_the_geometric_schedule():
    targets = [round_targets({"macs": 0.25}, {"macs": 1.0}, i, 2)["macs"] for i in (1, 2)]
    np.testing.assert_allclose(targets, [0.5, 0.25])
    load = load_function({"macs": lambda w: float(np.sum(w))}, {"macs": 10.0})
    assert load(np.array([2, 3])) == 0.5


def test_capped_candidates_never_widen():
    model = _model()
    space, constraint = space_and_constraint(model, kprune.Budget(macs=0.4), 8, (), None, None)
    cap = np.array([24, 32, 16])[: len(space)]
    rng = np.random.default_rng(0)
    for _ in range(5):
        ratios, widths = capped_candidate(lambda r, a: r.uniform(0, 1, len(space)), rng, constraint.sizes(),
                                          constraint.load, np.full(len(space), 0.75), space, cap)
        assert widths is not None and np.all(widths <= cap) and constraint.load(widths) <= 1.0 + 1e-12


def test_auto_compress_meets_the_budget_round_by_round():
    model = _model()
    result = kprune.auto_compress(model, kprune.Budget(macs=0.4), score, train, **SETTINGS)
    assert result.method == "auto_compress" and result.stopped == "done"
    dense = kprune.count_macs(model)
    assert kprune.count_macs(result.model) == result.resources["macs"] <= 0.4 * dense
    assert result.load >= 0.9  # lands near the budget
    admm_rounds = [e for e in result.log if e["phase"] == "admm"]
    assert [e["iteration"] for e in admm_rounds] == [1, 2]
    first, second = (np.array(list(e["widths"].values())) for e in admm_rounds)
    assert np.all(second <= first)  # a round never widens a group
    assert admm_rounds[0]["load"] <= 1.0 + 1e-12  # round 1 meets its share, sqrt(0.4) of the dense MACs
    assert len(admm_rounds[0]["residuals"]) == 2
    # the pruned model computes what the masked working model computed
    assert result.model.count_params() < model.count_params()
    assert result.score == pytest.approx(score(result.model), rel=1e-4, abs=1e-5)


def test_auto_compress_is_deterministic_and_resumes(tmp_path):
    model = _model()
    full = kprune.auto_compress(model, kprune.Budget(macs=0.4), score, train, **SETTINGS)
    state = tmp_path / "ac.json"
    with pytest.warns(UserWarning, match=r"auto_compress stopped at its limit `max_evaluations` \(2 evaluations, "
                                         r".*macs 100.0% of dense for a budget of 40.0%\): the budget is NOT met"):
        part = kprune.auto_compress(model, kprune.Budget(macs=0.4), score, train, state_path=str(state),
                                    max_evaluations=2, **SETTINGS)
    assert part.stopped == "max_evaluations" and not part.met and full.met
    resumed = kprune.auto_compress(model, kprune.Budget(macs=0.4), score, train, state_path=str(state), **SETTINGS)
    assert [e["widths"] for e in resumed.log] == [e["widths"] for e in full.log]
    assert resumed.widths == full.widths
    np.testing.assert_allclose(resumed.score, full.score, rtol=1e-5)
    with pytest.raises(ValueError, match="`train`"):
        kprune.auto_compress(model, kprune.Budget(macs=0.4), score, None)
    with pytest.raises(ValueError, match="`cool_down_rate`"):
        kprune.auto_compress(model, kprune.Budget(macs=0.4), score, train, cool_down_rate=1.0)
