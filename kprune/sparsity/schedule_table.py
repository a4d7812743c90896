"""Evaluating a schedule over many steps: `vectorizes` and `ScheduleTable`.

`UpdatePruningStep` asks a schedule `(should_prune, sparsity)` at every batch.
A schedule written element-wise with `keras.ops` is evaluated `WINDOW` steps
per call and looked up; one written for a scalar step (a Python `if`, as
tfmot's custom schedules often are) is called once per step. Which of the two
is decided once, by `vectorizes`.

Example:

>>> import kprune
>>> vectorizes(kprune.ConstantSparsity(0.5, begin_step=0, frequency=10))
True
"""

import keras
import numpy as np

from kprune.sparsity.pruning_schedule import MAX_STEP, WINDOW, check_steps


def _as_pair(result):
    should, sparsity = result
    should = np.asarray(keras.ops.convert_to_numpy(should)).reshape(-1)
    sparsity = np.asarray(keras.ops.convert_to_numpy(sparsity), np.float64).reshape(-1)
    return should.astype(bool), sparsity


def vectorizes(schedule, steps=(1, 2, 3)):
    """Whether `schedule` evaluates an array of steps element-wise.

    The schedule is called once on `steps` (an array of at least two steps)
    and once per step; it vectorizes if the array call neither raises nor
    differs from the scalar calls. A scalar-only schedule (Python `if` on the
    step raises "truth value of an array is ambiguous") does not.

    Args:
        schedule: a `PruningSchedule`.
        steps: the steps to compare on. Defaults to `(1, 2, 3)`.

    Returns:
        bool.

    Example:

    >>> import kprune
    >>> vectorizes(kprune.PolynomialDecay(0.0, 0.8, 0, 100, frequency=10))
    True
    """
    steps = np.asarray(sorted(set(int(s) for s in steps)), np.int64)
    try:
        should, sparsity = _as_pair(schedule(steps))
    except Exception:  # noqa: BLE001 (any failure on an array means "call per step")
        return False
    if should.shape != steps.shape or sparsity.shape != steps.shape:
        return False
    for i, step in enumerate(steps):
        one_should, one_sparsity = _as_pair(schedule(np.asarray(step)))  # a 0-d array
        if one_should.size != 1 or bool(one_should[0]) != bool(should[i]):
            return False
        if not np.isclose(one_sparsity[0], sparsity[i], rtol=1e-6, atol=1e-7):
            return False
    return True


class ScheduleTable:
    """`(should_prune, sparsity)` of one schedule, looked up step by step.

    Whether the schedule vectorizes is decided once, on first use
    (`vectorizes`, on steps around the first one looked up); a vectorized
    schedule is then evaluated `WINDOW` steps per call, any other one call per
    step.

    Args:
        schedule: a `PruningSchedule`.

    Example:

    >>> import kprune
    >>> table = ScheduleTable(kprune.PolynomialDecay(0.0, 0.8, 0, 20, power=1, frequency=10))
    >>> table.last_turn(1, 9), round(table.last_turn(1, 10), 3), round(table.last_turn(11, 20), 3)
    (None, 0.4, 0.8)
    """

    def __init__(self, schedule):
        self.schedule = schedule
        self.vectorized = None
        self.start = None
        self.should = self.sparsity = None

    def _fill(self, start):
        check_steps(start)
        if self.vectorized is None:
            near = (min(start + k, MAX_STEP) for k in range(3))
            self.vectorized = vectorizes(self.schedule, (*near, 1, 2))
        size = min(WINDOW, MAX_STEP - start + 1) if self.vectorized else 1
        steps = np.arange(start, start + size, dtype=np.int64)
        should, sparsity = _as_pair(self.schedule(steps if self.vectorized else int(start)))
        if should.size != size or sparsity.size != size:
            raise ValueError(
                f"Schedule {self.schedule!r} must return one `should_prune` and one "
                f"`sparsity` per step. Received: {should.size} and {sparsity.size} "
                f"values for {size} step(s)"
            )
        self.start, self.should, self.sparsity = start, should, sparsity

    def quiet_until(self, first):
        """The last step before the first pruning turn at or after `first`, or
        the last step of the looked-up window if it holds no turn (a turn may
        come after it): no step in `[first, quiet_until(first)]` is a turn.

        Example:

        >>> import kprune
        >>> ScheduleTable(kprune.ConstantSparsity(0.5, 0, frequency=100)).quiet_until(1)
        99
        """
        if self.start is None or not self.start <= first < self.start + len(self.should):
            self._fill(first)
        hits = np.flatnonzero(self.should[first - self.start :])
        return first + int(hits[0]) - 1 if hits.size else self.start + len(self.should) - 1

    def last_turn(self, first, last):
        """Sparsity of the last pruning turn in steps `[first, last]`, or None."""
        result = None
        step = first
        while step <= last:
            if self.start is None or not self.start <= step < self.start + len(self.should):
                self._fill(step)
            end = min(last + 1, self.start + len(self.should))
            hits = np.flatnonzero(self.should[step - self.start : end - self.start])
            if hits.size:
                result = float(self.sparsity[step - self.start + hits[-1]])
            step = end
        return result
