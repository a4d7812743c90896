"""Pruning schedules: `step -> (should_prune, sparsity)`.

A schedule answers two questions for a training step: is this a step at which
masks are recomputed, and which fraction of each pruned weight is zero after
that recomputation. The contract is tfmot's, so custom schedules written for
`tfmot.sparsity.keras.PruningSchedule` port by changing the import.

Steps count training batches from 1, as in tfmot: the first batch of training
is step 1, the `s`-th is step `s`, and masks are recomputed just before a batch
whose step is a pruning turn (so `begin_step=0` is never a turn: with
`frequency=100` the first update happens before batch 100). The callback
stores the step of the last batch run in every wrapper's `pruning_step`.

The built-in schedules are written with `keras.ops` only; they accept a scalar
step or an array of steps (element-wise), and are validated when constructed.
Steps are 32-bit integers on every backend (JAX's default without x64): up to
`MAX_STEP = 2**31 - 1`; a step, `begin_step` or `end_step` beyond raises.
Custom schedules may be scalar-only (Python `if`, `tf.cond`): `ScheduleTable`
finds out once, by comparing an array call with scalar calls, and then calls
the schedule one step at a time.
"""

import numbers

import keras
import numpy as np
from keras import ops

from kprune.utils.validation import check_sparsity

# Vectorized schedules are evaluated this many steps at a time, so the
# per-batch cost is an array lookup rather than a dozen eager ops.
WINDOW = 4096
# Steps are int32 on every backend (JAX's default integer).
STEP_DTYPE = "int32"
MAX_STEP = 2**31 - 1


def _check_int(name, value, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer. "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    if value < minimum:
        raise ValueError(
            f"Argument `{name}` must be >= {minimum}. Received: {name}={value}"
        )
    if maximum is not None and value > maximum:
        raise ValueError(
            f"Argument `{name}` must be <= {maximum} (steps are 32-bit integers). "
            f"Received: {name}={value}"
        )
    return int(value)


def check_steps(steps):
    """Validate training steps (an int or an array of ints) against
    `MAX_STEP`: steps are 32-bit integers on every backend.

    Example:

    >>> check_steps(2**31)
    Traceback (most recent call last):
    ...
    ValueError: Training step 2147483648 is beyond the last step kprune counts, 2**31 - 1 = 2147483647
    (steps are 32-bit integers on every backend). Restart the step count (a fresh prune_low_magnitude or
    prune_channels model) or prune with fewer steps.
    """
    values = np.asarray(steps)
    if values.size and int(values.max()) > MAX_STEP:
        raise ValueError(
            f"Training step {int(values.max())} is beyond the last step kprune counts, "
            f"2**31 - 1 = {MAX_STEP} (steps are 32-bit integers on every backend). "
            "Restart the step count (a fresh prune_low_magnitude or prune_channels "
            "model) or prune with fewer steps."
        )
    return steps


def step_tensor(step):
    """`step` (an int, an array or a tensor of steps) as a 32-bit integer tensor."""
    if isinstance(step, (numbers.Integral, np.ndarray, list, tuple)):
        check_steps(step)
    return ops.convert_to_tensor(step, STEP_DTYPE)


def _check_end_step(end_step, begin_step, allow_none, strict):
    if end_step is None:
        if allow_none:
            return None
        raise ValueError(
            "Argument `end_step` is required. Received: end_step=None"
        )
    if isinstance(end_step, bool) or not isinstance(end_step, numbers.Integral):
        raise TypeError(
            "Argument `end_step` must be an integer"
            + (" or None" if allow_none else "")
            + f". Received: end_step={end_step!r}"
        )
    if end_step > MAX_STEP:
        raise ValueError(
            f"Argument `end_step` must be <= {MAX_STEP} (steps are 32-bit integers). "
            f"Received: end_step={end_step}"
        )
    if end_step < begin_step or (strict and end_step == begin_step):
        hint = " Use end_step=None to prune until training ends." if allow_none else ""
        relation = ">" if strict else ">="
        raise ValueError(
            f"Argument `end_step` must be {relation} begin_step={begin_step}."
            f"{hint} Received: end_step={end_step}"
        )
    return int(end_step)


class PruningSchedule:
    """Base class for pruning schedules.

    Subclasses implement `__call__(step)` returning `(should_prune, sparsity)`:
    a boolean and a float in [0, 1). Written with `keras.ops` element-wise,
    a schedule also accepts an array of steps and is evaluated thousands of
    steps at a time; a tfmot-style schedule written for one scalar step
    (Python `if`, `tf.cond`) works too, called once per step (see
    `ScheduleTable`). `self._should_prune_in_step(step, begin_step, end_step,
    frequency)` is tfmot's helper for the usual turns. Subclasses also
    implement `get_config()`; `from_config(config)` is `cls(**config)`.
    Register custom schedules with
    `keras.saving.register_keras_serializable()` so saved models reload
    without `custom_objects`.

    Example:

    >>> import kprune
    >>> from keras import ops
    >>> class Every10(kprune.PruningSchedule):
    ...     def __call__(self, step):
    ...         step = ops.convert_to_tensor(step, "int32")
    ...         return ops.equal(step % 10, 0), ops.full(ops.shape(step), 0.5)
    ...     def get_config(self):
    ...         return {}
    >>> bool(Every10()(20)[0])
    True

    A scalar-only schedule, as written for tfmot:

    >>> class After5(kprune.PruningSchedule):
    ...     def __call__(self, step):
    ...         if step >= 5:
    ...             return True, 0.5
    ...         return False, 0.0
    ...     def get_config(self):
    ...         return {}
    >>> from kprune.sparsity.schedule_table import ScheduleTable
    >>> ScheduleTable(After5()).last_turn(1, 9)
    0.5
    """

    def __call__(self, step):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `__call__(step)` returning "
            "`(should_prune, sparsity)`."
        )

    def _should_prune_in_step(self, step, begin_step, end_step, frequency):
        """tfmot's helper for custom schedules: `should_prune_in_step`."""
        return should_prune_in_step(step, begin_step, end_step, frequency)

    def get_config(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `get_config()`."
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def should_prune_in_step(step, begin_step, end_step, frequency):
    """True where `begin_step <= step <= end_step` and `step` is a pruning turn.

    Pruning turns are `begin_step + k * frequency` (tfmot's rule); `end_step`
    itself is always a turn, so the final sparsity is applied even when
    `end_step - begin_step` is not a multiple of `frequency` (tfmot never
    applies it then). Custom schedules call it as
    `self._should_prune_in_step(step, begin_step, end_step, frequency)`.

    Args:
        step: a step or an array of steps.
        begin_step: first step that can be a turn.
        end_step: last step that can be a turn, or `None` for no end (tfmot's
            `-1`, which raises here).
        frequency: steps between turns, >= 1.

    Returns:
        A boolean tensor shaped like `step`.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> ops.convert_to_numpy(should_prune_in_step(np.arange(1, 8), 0, 7, 3)).tolist()
    [False, False, True, False, False, True, True]
    """
    if end_step is not None and end_step < 0:
        raise ValueError(
            "Argument `end_step` must be >= 0, or None to prune until training ends "
            f"(tfmot's -1). Received: end_step={end_step}"
        )
    step = step_tensor(step)
    in_range = ops.greater_equal(step, begin_step)
    turn = ops.equal(ops.mod(step - begin_step, frequency), 0)
    if end_step is not None:
        in_range = ops.logical_and(in_range, ops.less_equal(step, end_step))
        turn = ops.logical_or(turn, ops.equal(step, end_step))
    return ops.logical_and(in_range, turn)


@keras.saving.register_keras_serializable(package="kprune")
class ConstantSparsity(PruningSchedule):
    """Prune to a constant sparsity every `frequency` steps.

    `should_prune(step) = begin_step <= step <= end_step and
    (step - begin_step) % frequency == 0` (or `step == end_step`);
    `sparsity(step) = target_sparsity`.

    Args:
        target_sparsity: Fraction of zeros in each pruned weight, in [0, 1).
        begin_step: First step at which masks can be computed (training
            batches count from step 1). Defaults to 0.
        end_step: Last step at which masks are computed, or `None` (the
            default) to keep pruning until training ends.
        frequency: Steps between mask updates. Defaults to 100.

    Example:

    >>> import kprune
    >>> s = kprune.ConstantSparsity(0.8, begin_step=0, frequency=100)
    >>> [bool(s(step)[0]) for step in (1, 50, 100)], round(float(s(7)[1]), 2)
    ([False, False, True], 0.8)
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=None, frequency=100):
        self.target_sparsity = check_sparsity("target_sparsity", target_sparsity)
        self.begin_step = _check_int("begin_step", begin_step, 0, MAX_STEP)
        self.end_step = _check_end_step(end_step, self.begin_step, True, False)
        self.frequency = _check_int("frequency", frequency, 1)

    def __call__(self, step):
        should = should_prune_in_step(step, self.begin_step, self.end_step, self.frequency)
        sparsity = ops.full(ops.shape(should), self.target_sparsity, "float32")
        return should, sparsity

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="kprune")
class PolynomialDecay(PruningSchedule):
    """Sparsity rises from `initial_sparsity` to `final_sparsity` polynomially.

    With `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)`:

        sparsity(step) = final + (initial - final) * (1 - p) ** power

    Masks are recomputed at `begin_step`, every `frequency` steps after it, and
    at `end_step` (tfmot's schedule, plus the guarantee that the final sparsity
    is reached at `end_step`). With tfmot's recipe `end_step = batches_per_epoch
    * epochs`, the final sparsity is applied before the last batch.

    Args:
        initial_sparsity: Sparsity at `begin_step`, in [0, 1).
        final_sparsity: Sparsity from `end_step` on, in [0, 1).
        begin_step: First pruning step (>= 0).
        end_step: Step at which `final_sparsity` is reached (> begin_step).
        power: Exponent of the decay (> 0). Defaults to 3.
        frequency: Steps between mask updates (>= 1). Defaults to 100.

    Example:

    >>> import kprune
    >>> s = kprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, power=1)
    >>> round(float(s(50)[1]), 3), round(float(s(100)[1]), 3)
    (0.4, 0.8)
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        self.initial_sparsity = check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = check_sparsity("final_sparsity", final_sparsity)
        self.begin_step = _check_int("begin_step", begin_step, 0, MAX_STEP)
        self.end_step = _check_end_step(end_step, self.begin_step, False, True)
        if isinstance(power, bool) or not isinstance(power, numbers.Real):
            raise TypeError(f"Argument `power` must be a number. Received: power={power!r}")
        if not power > 0:
            raise ValueError(f"Argument `power` must be > 0. Received: power={power}")
        self.power = float(power)
        self.frequency = _check_int("frequency", frequency, 1)

    def __call__(self, step):
        should = should_prune_in_step(step, self.begin_step, self.end_step, self.frequency)
        step = ops.cast(step_tensor(step), "float32")
        p = (step - self.begin_step) / float(self.end_step - self.begin_step)
        p = ops.clip(p, 0.0, 1.0)
        sparsity = self.final_sparsity + (
            self.initial_sparsity - self.final_sparsity
        ) * ops.power(1.0 - p, self.power)
        return should, ops.cast(sparsity, "float32")

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }
