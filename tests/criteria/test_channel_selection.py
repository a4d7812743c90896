"""ThiNet and LASSO channel selection: the algorithms against NumPy references,
and the `importance="thinet"` / `"lasso"` criteria on models."""

import itertools

import keras
import numpy as np
import pytest
from sklearn.linear_model import Lasso

import kprune
from kprune.criteria import least_squares as selection
from kprune.criteria import sampling
from kprune.criteria.reconstruction_criteria import ThiNetCriterion, consumers, layer_contributions
from kprune.dependency.channel_graph import ChannelGraph

L = keras.layers


def _naive_greedy(X):
    """ThiNet's greedy search written out: recompute every candidate's error."""
    removed, order = [], []
    for _ in range(X.shape[1]):
        best = min((c for c in range(X.shape[1]) if c not in removed),
                   key=lambda c: np.sum(X[:, removed + [c]].sum(axis=1) ** 2))
        removed.append(best)
        order.append(best)
    return order


def _exhaustive(X, k):
    return min(itertools.combinations(range(X.shape[1]), k), key=lambda s: selection.removal_error(X, s))


def test_thinet_greedy_equals_exhaustive_search_on_independent_channels(rng):
    # Orthogonal channel contributions with distinct energies: the removal error
    # of a set is the sum of its channels' energies, so greedy is optimal.
    q, _ = np.linalg.qr(rng.normal(size=(40, 6)))
    X = q * np.array([3.0, 0.5, 2.0, 0.1, 1.0, 4.0])
    order = selection.thinet_order(X)
    for k in range(1, 6):
        assert sorted(order[:k].tolist()) == sorted(_exhaustive(X, k))
    assert order.tolist() == [3, 1, 4, 2, 0, 5]


def test_thinet_greedy_uses_cancellation_like_exhaustive_search(rng):
    # Channels 0 and 1 are weak and cancel (x1 = -x0 + noise): once the weaker is
    # removed, the other one *lowers* the error, which the running sum sees.
    # (Greedy is not exhaustive search in general: a strong cancelling pair is
    # missed because either channel alone costs much.)
    base = rng.normal(size=200)
    X = np.stack([0.3 * base, -0.3 * base + 0.01 * rng.normal(size=200), rng.normal(size=200),
                  rng.normal(size=200) * 2, 0.5 * rng.normal(size=200)], axis=1)
    order = selection.thinet_order(X)
    for k in (1, 2, 3, 4):
        assert sorted(order[:k].tolist()) == sorted(_exhaustive(X, k))
    assert sorted(order[:2].tolist()) == [0, 1]
    assert selection.removal_error(X, [0, 1]) < selection.removal_error(X, [0]) / 100


def test_thinet_order_matches_the_naive_greedy_search(rng):
    X = rng.normal(size=(50, 9)) @ rng.normal(size=(9, 9))
    assert selection.thinet_order(X).tolist() == _naive_greedy(X)


@pytest.mark.parametrize("n_keep", [1, 3, 5, 8])
def test_lasso_select_reaches_exactly_the_target_count(rng, n_keep):
    Z = rng.normal(size=(300, 10)) * rng.uniform(0.1, 3.0, size=10)
    y = Z.sum(axis=1) + 0.1 * rng.normal(size=300)
    kept, beta, alpha = selection.lasso_select(Z, y, n_keep)
    assert len(kept) == n_keep
    assert np.count_nonzero(beta) == n_keep
    assert kept.tolist() == np.flatnonzero(beta).tolist()
    # The same alpha in scikit-learn's coordinate-descent Lasso gives the same support.
    reference = Lasso(alpha=alpha, fit_intercept=False, tol=1e-10, max_iter=100_000).fit(Z, y)
    assert np.flatnonzero(np.abs(reference.coef_) > 1e-8).tolist() == kept.tolist()
    np.testing.assert_allclose(reference.coef_, beta, atol=1e-4)
    # lasso_order ranks the same channels first.
    assert sorted(np.argsort(-selection.lasso_order(Z, y))[:n_keep].tolist()) == kept.tolist()


def test_lasso_select_rejects_a_bad_count(rng):
    with pytest.raises(ValueError, match=r"`n_keep` must be an integer in \[1, 4\]. Received: n_keep=5"):
        selection.lasso_select(rng.normal(size=(20, 4)), rng.normal(size=20), 5)


def test_least_squares_matches_numpy(rng):
    X, Y = rng.normal(size=(60, 5)), rng.normal(size=(60, 3))
    W, b = selection.least_squares(X, Y, intercept=True)
    A = np.hstack([X, np.ones((60, 1))])
    reference = np.linalg.lstsq(A, Y, rcond=None)[0]
    np.testing.assert_allclose(W, reference[:5], atol=1e-10)
    np.testing.assert_allclose(b, reference[5], atol=1e-10)


def test_layer_contributions_sum_to_the_layer_output(rng):
    conv = L.Conv2D(5, 3, strides=2, padding="same", use_bias=False)
    x = rng.random((3, 9, 9, 4), dtype=np.float32)
    y = keras.ops.convert_to_numpy(conv(x))
    positions = sampling.random_positions(rng, 3, sampling.output_spatial(conv, (9, 9)), 6)
    patches = sampling.conv_patches(x, conv, positions)
    contributions, total = layer_contributions(patches, sampling.kernel_matrix(conv), 10, rng)
    assert contributions.shape == (18 * 5, 4)
    expected = y[tuple(positions.T)]  # (18, 5): every filter of every position
    np.testing.assert_allclose(total.reshape(18, 5), expected, rtol=1e-4, atol=1e-5)


def _chain():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    h = L.Conv2D(6, 3, padding="same", name="next")(h)
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(h)))


@pytest.mark.parametrize("criterion", ["thinet", "lasso"])
def test_criteria_prune_the_channels_the_next_layer_ignores(rng, criterion):
    model = _chain()
    kernel = keras.ops.convert_to_numpy(model.get_layer("next").kernel).copy()
    kernel[:, :, [1, 4, 6], :] *= 1e-3
    model.get_layer("next").kernel.assign(kernel)
    x = rng.random((32, 8, 8, 3), dtype=np.float32)
    plan = kprune.plan_channels(model, 3 / 8, importance=criterion, data=x, round_to=1)
    assert next(g for g in plan.groups if g["producers"] == ["conv"])["pruned"] == [1, 4, 6]


def _tied():
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="stem")(x)
    b = L.Conv2D(8, 3, padding="same", name="branch")(L.ReLU()(a))
    s = L.ReLU()(L.Add()([a, b]))
    c1 = L.Conv2D(4, 1, name="c1")(s)
    c2 = L.Conv2D(4, 3, name="c2")(s)
    return keras.Model(x, L.Concatenate()([L.GlobalAveragePooling2D()(c1), L.GlobalAveragePooling2D()(c2)]))


def test_thinet_sums_the_error_over_every_consumer_of_a_tied_group(rng):
    model = _tied()
    x = rng.random((16, 8, 8, 3), dtype=np.float32)
    graph = ChannelGraph(model)
    group = next(g for g in graph.groups if g.producers == ["stem", "branch"])
    criterion = ThiNetCriterion("thinet", x, filters_per_position=100).bind(model)  # every filter
    scores = criterion(graph, group)
    # The reference: the group's matrix stacks the rows of all three consumers
    # (the branch's first conv reads the stem's channels too), each divided by
    # the RMS of its outputs.
    readers = [u.layer for u in consumers(graph, group)]
    assert sorted(layer.name for layer in readers) == ["branch", "c1", "c2"]
    patches, _ = sampling.sample_patches(model, readers, x, criterion.positions_per_image,
                                         criterion.max_images, seed=criterion.seed)
    blocks = []
    for layer in readers:
        P, W = patches[layer.name], sampling.kernel_matrix(layer)
        c = np.einsum("nkc,kcf->nfc", P, W).reshape(-1, W.shape[1])
        blocks.append(c / np.sqrt(np.mean(c.sum(axis=1) ** 2)))
    order = selection.thinet_order(np.concatenate(blocks))
    assert np.argsort(scores, kind="stable").tolist() == order.tolist()
    # A channel that only some consumers ignore is kept.
    for name in ("branch", "c1", "c2"):
        kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel).copy()
        kernel[:, :, 2, :] = 0.0
        if name == "c1":
            kernel[:, :, 5, :] = 0.0
        model.get_layer(name).kernel.assign(kernel)
    plan = kprune.plan_channels(model, 1 / 8, importance="thinet", data=x, round_to=1)
    assert next(g for g in plan.groups if g["producers"] == ["stem", "branch"])["pruned"] == [2]


@pytest.mark.parametrize("criterion", ["thinet", "lasso"])
def test_criteria_need_data(criterion):
    with pytest.raises(ValueError, match=f"Importance '{criterion}' measures the model on data: pass `data=`"):
        kprune.plan_channels(_chain(), 0.5, importance=criterion)
