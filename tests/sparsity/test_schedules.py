import keras
import numpy as np
import pytest

import kprune


def _pair(schedule, step):
    should, sparsity = schedule(step)
    return bool(keras.ops.convert_to_numpy(should)), float(keras.ops.convert_to_numpy(sparsity))


def _reference_polynomial(step, initial, final, begin, end, power):
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    return final + (initial - final) * (1 - p) ** power


@pytest.mark.parametrize("power", [1, 2, 3, 0.5])
def test_polynomial_decay_matches_formula(power):
    s = kprune.PolynomialDecay(0.1, 0.9, begin_step=10, end_step=110, power=power, frequency=7)
    for step in [0, 9, 10, 11, 50, 109, 110, 500]:
        should, sparsity = _pair(s, step)
        expected = _reference_polynomial(step, 0.1, 0.9, 10, 110, power)
        assert sparsity == pytest.approx(expected, abs=1e-6)
        turn = 10 <= step <= 110 and ((step - 10) % 7 == 0 or step == 110)
        assert should == turn, step


def test_polynomial_end_step_is_always_a_turn():
    # 100 - 0 is not a multiple of 30: tfmot would never apply final_sparsity.
    s = kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=30)
    turns = [step for step in range(0, 200) if _pair(s, step)[0]]
    assert turns == [0, 30, 60, 90, 100]
    assert _pair(s, 100)[1] == pytest.approx(0.8)


def test_constant_sparsity_without_end():
    s = kprune.ConstantSparsity(0.6, begin_step=5, frequency=10)
    turns = [step for step in range(0, 60) if _pair(s, step)[0]]
    assert turns == [5, 15, 25, 35, 45, 55]
    assert _pair(s, 3)[1] == pytest.approx(0.6)


def test_constant_sparsity_with_end():
    s = kprune.ConstantSparsity(0.6, begin_step=0, end_step=25, frequency=10)
    turns = [step for step in range(0, 60) if _pair(s, step)[0]]
    assert turns == [0, 10, 20, 25]


def test_schedules_are_vectorized():
    s = kprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=100, frequency=10)
    steps = np.arange(0, 150)
    should, sparsity = s(steps)
    should = keras.ops.convert_to_numpy(should)
    sparsity = keras.ops.convert_to_numpy(sparsity)
    assert should.shape == sparsity.shape == (150,)
    for step in (0, 13, 40, 100, 149):
        assert (bool(should[step]), pytest.approx(float(sparsity[step]), abs=1e-6)) == _pair(s, step)


@pytest.mark.parametrize(
    "schedule",
    [
        kprune.ConstantSparsity(0.5, begin_step=3, frequency=4),
        kprune.ConstantSparsity(0.5, begin_step=3, end_step=30, frequency=4),
        kprune.PolynomialDecay(0.2, 0.7, begin_step=1, end_step=99, power=2.5, frequency=3),
    ],
)
def test_schedule_serialization_roundtrip(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    assert restored == schedule
    assert set(schedule.get_config()) == set(
        type(schedule).__init__.__code__.co_varnames[1 : type(schedule).__init__.__code__.co_argcount]
    )


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(target_sparsity=1.0), ValueError,
         "Argument `target_sparsity` must be in [0, 1). Received: target_sparsity=1.0"),
        (dict(target_sparsity=-0.1), ValueError, "Received: target_sparsity=-0.1"),
        (dict(target_sparsity=0.5, begin_step=-1), ValueError,
         "Argument `begin_step` must be >= 0. Received: begin_step=-1"),
        (dict(target_sparsity=0.5, frequency=0), ValueError,
         "Argument `frequency` must be >= 1. Received: frequency=0"),
        (dict(target_sparsity=0.5, begin_step=10, end_step=5), ValueError, "Received: end_step=5"),
        (dict(target_sparsity=0.5, end_step=-1), ValueError, "end_step=None"),
        (dict(target_sparsity=0.5, frequency=2.5), TypeError, "Argument `frequency` must be an integer"),
        (dict(target_sparsity="0.5"), TypeError, "Argument `target_sparsity` must be a float"),
    ],
)
def test_constant_sparsity_errors(kwargs, error, message):
    with pytest.raises(error) as info:
        kprune.ConstantSparsity(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(initial_sparsity=0.0, final_sparsity=1.2), "Received: final_sparsity=1.2"),
        (dict(initial_sparsity=-0.5, final_sparsity=0.5), "Received: initial_sparsity=-0.5"),
        (dict(power=0), "Argument `power` must be > 0. Received: power=0"),
        (dict(power=-2), "Received: power=-2"),
        (dict(begin_step=100, end_step=50), "Argument `end_step` must be > begin_step=100. Received: end_step=50"),
        (dict(begin_step=100, end_step=100), "Received: end_step=100"),
        (dict(frequency=0), "Argument `frequency` must be >= 1. Received: frequency=0"),
        (dict(begin_step=-5), "Argument `begin_step` must be >= 0. Received: begin_step=-5"),
    ],
)
def test_polynomial_decay_errors(kwargs, message):
    args = dict(initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=100)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        kprune.PolynomialDecay(**args)
    assert message in str(info.value)


def test_custom_schedule_contract():
    class Half(kprune.PruningSchedule):
        def __call__(self, step):
            step = keras.ops.convert_to_tensor(step, "int64")
            return keras.ops.equal(step % 2, 0), keras.ops.full(keras.ops.shape(step), 0.25)

        def get_config(self):
            return {}

    assert _pair(Half(), 4) == (True, 0.25)
    with pytest.raises(NotImplementedError, match="must implement"):
        kprune.PruningSchedule()(0)


class _ScalarOnly(kprune.PruningSchedule):
    """tfmot-style: Python `if` on the step, scalar results."""

    def __init__(self):
        self.calls = 0

    def __call__(self, step):
        self.calls += 1
        if step % 3 == 0:
            return True, 0.25 + 0.01 * (step // 3)
        return False, 0.0

    def get_config(self):
        return {}


class _BroadcastsWrongly(kprune.PruningSchedule):
    """Returns one scalar for any input: no error, wrong shape for arrays."""

    def __call__(self, step):
        return keras.ops.convert_to_tensor(True), keras.ops.convert_to_tensor(0.5)

    def get_config(self):
        return {}


class _Vectorized(kprune.PruningSchedule):
    def __call__(self, step):
        return self._should_prune_in_step(step, 2, None, 4), keras.ops.full(keras.ops.shape(step), 0.3)

    def get_config(self):
        return {}


def test_vectorizes_is_decided_by_comparing_with_scalar_calls():
    from kprune.sparsity.schedule_table import vectorizes

    assert vectorizes(kprune.PolynomialDecay(0.0, 0.8, 0, 100, frequency=10))
    assert vectorizes(kprune.ConstantSparsity(0.5, 3, frequency=2))
    assert vectorizes(_Vectorized())
    assert not vectorizes(_ScalarOnly())
    assert not vectorizes(_BroadcastsWrongly())


def test_schedule_table_calls_a_scalar_schedule_per_step():
    from kprune.sparsity.schedule_table import ScheduleTable

    schedule = _ScalarOnly()
    table = ScheduleTable(schedule)
    assert table.last_turn(1, 2) is None
    assert table.vectorized is False
    assert table.last_turn(1, 7) == pytest.approx(0.27)
    assert table.last_turn(8, 9) == pytest.approx(0.28)
    calls = schedule.calls
    table.last_turn(10, 10)
    assert schedule.calls == calls + 1  # one call for one step, no window
    vectorized = ScheduleTable(kprune.PolynomialDecay(0.0, 0.8, 0, 100, power=1, frequency=10))
    assert vectorized.last_turn(1, 25) == pytest.approx(0.16) and vectorized.vectorized


def test_should_prune_in_step_is_tfmots_helper_with_the_end_step_guarantee():
    s = kprune.ConstantSparsity(0.5, begin_step=0, end_step=25, frequency=10)
    steps = np.arange(0, 40)
    helper = keras.ops.convert_to_numpy(s._should_prune_in_step(steps, 0, 25, 10))
    assert np.flatnonzero(helper).tolist() == [0, 10, 20, 25]
    np.testing.assert_array_equal(helper, keras.ops.convert_to_numpy(s(steps)[0]))
    with pytest.raises(ValueError, match=r"or None to prune until training ends \(tfmot's -1\). Received: end_step=-1"):
        s._should_prune_in_step(3, 0, -1, 10)


def test_schedule_returning_wrong_sizes_raises():
    from kprune.sparsity.schedule_table import ScheduleTable

    class Bad(kprune.PruningSchedule):
        def __call__(self, step):
            return np.array([True, False]), np.array([0.1, 0.2])

        def get_config(self):
            return {}

    with pytest.raises(ValueError, match="must return one `should_prune` and one `sparsity` per step"):
        ScheduleTable(Bad()).last_turn(1, 1)
