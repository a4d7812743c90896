"""AMC and its DDPG agent: the agent solves a problem with a known optimum,
every action keeps the budget reachable, determinism under a seed, resume."""

import json

import keras
import numpy as np
import pytest

import kprune
from kprune.search.algorithms.amc import Episode, normalize_columns, width_bounds
from kprune.search.algorithms.ddpg import DDPG, ReplayBuffer, truncated_normal
from kprune.search.driver import space_and_constraint

L = keras.layers


def _model():
    x = keras.Input((10, 10, 3))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, padding="same", name="stem")(x)))
    b = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, padding="same", name="r1")(a)))
    b = L.BatchNormalization()(L.Conv2D(32, 3, padding="same", name="r2")(b))
    a = L.ReLU()(L.Add()([a, b]))
    c = L.ReLU()(L.Conv2D(64, 3, strides=2, name="c3")(a))
    return keras.Model(x, L.Dense(5, name="head")(L.GlobalAveragePooling2D()(c)))


def kept_norm(model):
    total = 0.0
    for name in ("stem", "r1", "r2", "c3"):
        kernel = model.get_layer(name).kernel.numpy()
        total += float(np.sum(np.sqrt(np.sum(kernel.reshape(-1, kernel.shape[-1]) ** 2, axis=0))))
    return total


def test_truncated_normal_and_buffer():
    rng = np.random.default_rng(0)
    draws = np.array([truncated_normal([0.95], 0.5, rng)[0] for _ in range(500)])
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    assert 0.55 < draws.mean() < 0.8  # mass pushed below the bound
    buffer = ReplayBuffer(3, 2, 1)
    for i in range(5):
        buffer.add([i, i], [0.1 * i], float(i), [i + 1, i + 1], i == 4)
    assert buffer.size == 3 and sorted(buffer.rewards[:, 0].tolist()) == [2.0, 3.0, 4.0]


def test_ddpg_finds_the_optimum_of_a_two_step_quadratic():
    """Two decisions per episode (AMC's shape: the reward comes at the end and
    is given to both transitions); the best actions are 0.3 then 0.7."""
    agent = DDPG(state_dim=2, hidden=(32, 32), lr_actor=3e-3, lr_critic=3e-3, batch_size=32, warmup=20,
                 tau=0.01, init_delta=0.5, delta_decay=0.95, seed=0)
    best = (0.3, 0.7)
    for episode in range(100):
        s0 = np.array([0.0, 0.0], np.float32)
        a0 = agent.explore(s0, episode)
        s1 = np.array([1.0, a0[0]], np.float32)
        a1 = agent.explore(s1, episode)
        reward = -((a0[0] - best[0]) ** 2 + (a1[0] - best[1]) ** 2)
        agent.observe(s0, a0, reward, s1, False)
        agent.observe(s1, a1, reward, s1, True)
        if episode >= agent.warmup:
            agent.update()
            agent.update()
    a0 = agent.act([0.0, 0.0])[0]
    a1 = agent.act([1.0, a0])[0]
    assert abs(a0 - best[0]) < 0.1 and abs(a1 - best[1]) < 0.1, (a0, a1)  # measured (0.331, 0.701)


def test_ddpg_state_round_trip():
    agent = DDPG(state_dim=3, hidden=(8, 8), batch_size=2, seed=1)
    for i in range(4):
        agent.observe([i, 0, 1], [0.5], 1.0, [i, 1, 1], False)
    agent.update()
    arrays, data = agent.state()
    other = DDPG(state_dim=3, hidden=(8, 8), batch_size=2, seed=2)
    other.set_state(arrays, json.loads(json.dumps(data)))
    np.testing.assert_array_equal(other.act([1, 2, 3]), agent.act([1, 2, 3]))
    assert agent.update() == other.update()


def test_every_action_keeps_the_budget_reachable():
    model = _model()
    space, constraint = space_and_constraint(model, kprune.Budget(macs=0.4), 8, (), None, None)
    env = Episode(space, constraint)
    assert env.static.shape == (len(space), 7)
    varying = np.ptp(env.static, axis=0) > 0  # constant columns keep their value (AMC, NNI)
    assert np.all((env.static[:, varying] >= 0) & (env.static[:, varying] <= 1))
    assert np.allclose(env.static[:, ~varying], env.static[0, ~varying])
    rng = np.random.default_rng(0)
    for _ in range(30):
        widths = space.dense.copy()
        for t in range(len(space)):
            state = env.state(t, widths, 0.5)
            assert state.shape == (10,)
            widths[t] = env.clip(t, widths, rng.uniform())
            reachable = np.where(np.arange(len(space)) > t, space.min_widths, widths)
            assert constraint.load(reachable) <= 1.0 + 1e-12
        assert constraint.load(widths) <= 1.0 + 1e-12
        final = env.finish(widths, space.ratios(widths))
        assert constraint.load(final) <= 1.0 + 1e-12
        for k in range(len(space)):  # no group can widen a step without breaking the budget
            wider = space.allowed[k][space.allowed[k] > final[k]]
            if len(wider):
                assert constraint.load(np.where(np.arange(len(space)) == k, wider[0], final)) > 1.0
    assert normalize_columns([[2.0], [4.0], [3.0]]).ravel().tolist() == [0.0, 1.0, 0.5]
    # the bounds on a linear load, checked by hand: 2 groups of widths 1..4, budget 5
    allowed = [np.arange(1, 5)] * 2
    assert width_bounds(np.array([4, 4]), 0, allowed, np.array([1, 1]), np.array([4, 4]),
                        lambda w: w.sum() / 5.0) == (1, 4)


def test_amc_meets_the_budget_on_the_pruned_model():
    model = _model()
    result = kprune.amc(model, kprune.Budget(macs=0.5), kept_norm, episodes=6, warmup=3, hidden=(16, 16),
                        batch_size=4, verbose=0)
    assert result.method == "amc" and result.evaluations == 6
    macs = kprune.count_macs(kprune.remove_channels(model, result.plan))
    assert macs <= 0.5 * kprune.count_macs(model)
    assert result.score == max(entry["score"] for entry in result.log)
    assert all(entry["load"] <= 1.0 + 1e-12 for entry in result.log)
    assert result.log[0]["warmup"] and not result.log[-1]["warmup"]
    with pytest.raises(ValueError, match="`episodes`"):
        kprune.amc(model, kprune.Budget(macs=0.5), kept_norm, episodes=0)
    with pytest.raises(ValueError, match="narrowest widths"):
        kprune.amc(model, kprune.Budget(macs=0.01), kept_norm, verbose=0)


def test_amc_is_deterministic_and_resumes(tmp_path):
    model = _model()
    settings = dict(episodes=6, warmup=2, hidden=(8, 8), batch_size=4, seed=3, verbose=0)
    full = kprune.amc(model, kprune.Budget(macs=0.5), kept_norm, **settings)
    state = tmp_path / "amc.json"
    first = kprune.amc(model, kprune.Budget(macs=0.5), kept_norm, state_path=str(state), max_evaluations=4,
                       **settings)
    assert first.stopped == "max_evaluations" and first.evaluations == 4
    resumed = kprune.amc(model, kprune.Budget(macs=0.5), kept_norm, state_path=str(state), **settings)
    assert resumed.evaluations == 6
    # two agents built from the same seed (and one restored from the state file) act identically
    assert [e["widths"] for e in resumed.log] == [e["widths"] for e in full.log]
    assert [e["actions"] for e in resumed.log] == [e["actions"] for e in full.log]
    assert [e["score"] for e in resumed.log] == [e["score"] for e in full.log]
    assert resumed.widths == full.widths
    with pytest.raises(ValueError, match="belongs to another search"):
        kprune.amc(model, kprune.Budget(macs=0.6), kept_norm, state_path=str(state), **settings)


def test_max_ratio_bounds_every_action():
    model = _model()
    result = kprune.amc(model, kprune.Budget(macs=0.5), kept_norm, episodes=8, warmup=4, hidden=(8, 8),
                        batch_size=4, round_to=4, verbose=0)  # default max_ratio=0.8 (AMC's lbound 0.2)
    channels = {"stem": 32, "r1": 32, "c3": 64}
    assert result.extra["max_ratio"] == 0.8
    for entry in result.log:
        assert min(entry["actions"]) >= 0.2
        assert all(width >= 0.2 * channels[name] for name, width in entry["widths"].items())
    tight = kprune.amc(model, kprune.Budget(macs=0.5), kept_norm, episodes=8, warmup=4, hidden=(8, 8),
                       batch_size=4, round_to=4, max_ratio=0.5, verbose=0)
    for entry in tight.log:
        assert min(entry["actions"]) >= 0.5
    loose = kprune.amc(model, kprune.Budget(macs=0.5), kept_norm, episodes=8, warmup=4, hidden=(8, 8),
                       batch_size=4, round_to=4, max_ratio=None, verbose=0)
    assert min(min(entry["actions"]) for entry in loose.log) < 0.2  # without the bound, random actions go lower
    for bad in (0.0, 1.0, 1.5, True, "0.8"):
        with pytest.raises(ValueError, match=r"Argument `max_ratio` must be a number in \(0, 1\).*Received: "
                                             f"max_ratio={bad!r}"):
            kprune.amc(model, kprune.Budget(macs=0.5), kept_norm, max_ratio=bad, verbose=0)


def test_reconstruction_makes_the_reward_informative():
    """Same seed and warm-up (random) actions, so both searches try the same
    widths; with least-squares reconstruction every pruned plan's reward
    (fidelity to the unpruned model's outputs) is higher."""
    model = _model()
    x = np.random.default_rng(0).normal(size=(64, 10, 10, 3)).astype("float32")
    reference = model.predict(x, verbose=0)

    def fidelity(m):
        return -float(np.mean((m.predict(x, verbose=0) - reference) ** 2))

    settings = dict(episodes=4, warmup=4, hidden=(8, 8), batch_size=4, round_to=4, verbose=0)
    plain = kprune.amc(model, kprune.Budget(macs=0.5), fidelity, **settings)
    refit = kprune.amc(model, kprune.Budget(macs=0.5), fidelity, reconstruct=x, **settings)
    assert [e["widths"] for e in refit.log] == [e["widths"] for e in plain.log]
    for a, b in zip(plain.log, refit.log):
        assert b["score"] > a["score"]
    assert refit.score > plain.score and refit.extra["reconstruct"]
    # the result carries the best plan reconstructed, with its channels removed
    assert refit.model is not None and plain.model is None
    assert kprune.count_macs(refit.model) == kprune.count_macs(kprune.remove_channels(model, refit.plan))
    assert fidelity_of(refit.model, x, reference) == pytest.approx(refit.score, rel=1e-4, abs=1e-7)


def fidelity_of(model, x, reference):
    return -float(np.mean((model.predict(x, verbose=0) - reference) ** 2))
