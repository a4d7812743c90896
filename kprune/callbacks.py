"""Callbacks that drive pruning during `fit`: `UpdatePruningStep`, `PruningSummaries`."""

import importlib.util

import keras
import numpy as np

from kprune import pruning, structured
from kprune.graph import ChannelGraph
from kprune.wrapper import PruneChannels

# Schedules are evaluated for this many steps at a time (one vectorized call),
# so the per-batch cost is an array lookup rather than a dozen eager ops.
_WINDOW = 4096


class _ScheduleTable:
    """`(should_prune, sparsity)` of one schedule over a window of steps."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.start = None
        self.should = self.sparsity = None
        self.vectorized = True

    def _fill(self, start):
        steps = np.arange(start, start + _WINDOW, dtype=np.int64)
        if self.vectorized:
            should, sparsity = self.schedule(steps)
            should = np.asarray(keras.ops.convert_to_numpy(should)).reshape(-1)
            sparsity = np.asarray(keras.ops.convert_to_numpy(sparsity)).reshape(-1)
            if should.shape == sparsity.shape == (_WINDOW,):
                self.start, self.should, self.sparsity = start, should.astype(bool), sparsity
                return
            self.vectorized = False  # a scalar-only custom schedule
        should, sparsity = self.schedule(int(start))  # one step at a time
        self.start = start
        self.should = np.array([bool(keras.ops.convert_to_numpy(should))])
        self.sparsity = np.array([float(keras.ops.convert_to_numpy(sparsity))])

    def last_turn(self, first, last):
        """Sparsity of the last pruning turn in steps `[first, last]`, or None."""
        result = None
        step = first
        while step <= last:
            if self.start is None or not self.start <= step < self.start + len(self.should):
                self._fill(step)
            end = min(last + 1, self.start + len(self.should))
            should = self.should[step - self.start : end - self.start]
            hits = np.flatnonzero(should)
            if hits.size:
                result = float(self.sparsity[step - self.start + hits[-1]])
            step = end
        return result


class UpdatePruningStep(keras.callbacks.Callback):
    """Advances the pruning step and updates masks when the schedules say so.

    Required when training a model wrapped by `kprune.prune_low_magnitude` or
    `kprune.prune_channels` (for the latter, channels are chosen for the whole
    model at once at each pruning turn of its schedule).
    The step is counted in batches; `step` `s` runs with the masks of the
    latest pruning turn `<= s`. The step is stored in every wrapper's
    `pruning_step` variable at each mask update, at the last batch of each
    epoch and at the end of training, so a saved model resumes where it
    stopped. With `ModelCheckpoint(save_freq=<int>)`, list this callback first.

    In a custom training loop, call `set_model(model)` and `on_train_begin()`
    once, `on_train_batch_begin(step)` before each step, and `on_train_end()`
    at the end.

    Example:

    >>> import keras, numpy as np, kprune
    >>> model = kprune.prune_low_magnitude(
    ...     keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]),
    ...     pruning_schedule=kprune.ConstantSparsity(0.5, begin_step=0, frequency=1))
    >>> model.compile("sgd", "mse")
    >>> _ = model.fit(np.ones((4, 8)), np.ones((4, 4)), verbose=0,
    ...               callbacks=[kprune.UpdatePruningStep()])
    >>> float(np.mean(model.layers[0].masks[0].numpy()))
    0.5
    """

    def __init__(self):
        super().__init__()
        self.step = None
        self._wrappers = []
        self._tables = {}
        self._epoch_start = None
        self._epoch_iterations = None

    def on_train_begin(self, logs=None):
        self._wrappers = pruning.collect_wrappers(self.model)
        if not self._wrappers:
            raise ValueError(
                "UpdatePruningStep found no pruned layers in the model. Wrap the model "
                "with kprune.prune_low_magnitude(model) or kprune.prune_channels(model) "
                "before training it with this callback."
            )
        for w in self._wrappers:
            if not w.built:
                raise ValueError(
                    f"Layer '{w.name}' is not built. Build the model (call it on data "
                    "or give it an Input) before training."
                )
            w._driven = True
            # The training forward pass reads the variables as they are, so
            # they must hold masked values (set_weights may have changed them).
            w.apply_masks()
        self._tables = {}
        self._channel_wrappers = [w for w in self._wrappers if isinstance(w, PruneChannels)]
        self._channel_graph = None
        for w in self._wrappers:
            self._tables.setdefault(id(w.pruning_schedule), _ScheduleTable(w.pruning_schedule))
        self.step = max(int(keras.ops.convert_to_numpy(w.pruning_step)) for w in self._wrappers)
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step
        self._epoch_iterations = self._optimizer_iterations()

    def _optimizer_iterations(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not getattr(optimizer, "built", False):
            return None
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def on_train_batch_begin(self, batch, logs=None):
        if self.step is None:
            self.on_train_begin()
        span = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        last = self.step + span - 1
        # One lookup per distinct schedule, not per layer.
        turns = {key: table.last_turn(self.step, last) for key, table in self._tables.items()}
        updated = False
        for w in self._wrappers:
            sparsity = turns[id(w.pruning_schedule)]
            if sparsity is not None and not isinstance(w, PruneChannels):
                w.update_masks(sparsity)
                updated = True
        if self._channel_wrappers:
            # Channels are chosen for the whole model at once, on the
            # schedule of its first channel wrapper.
            sparsity = turns[id(self._channel_wrappers[0].pruning_schedule)]
            if sparsity is not None:
                if self._channel_graph is None:
                    self._channel_graph = ChannelGraph(
                        structured.graph_model(self.model, self._channel_wrappers)
                    )
                structured.update_channel_masks(
                    self.model, sparsity, self._channel_wrappers, self._channel_graph
                )
                updated = True
        self.step += 1
        if updated:
            self._store_step(self.step + span - 1)

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports the batch index at the end of each execution; with
        # `steps_per_execution > 1` it overshoots on a short last execution,
        # so it is clamped to the epoch's length.
        if self._epoch_start is not None and isinstance(batch, (int, np.integer)) and batch >= 0:
            steps = (self.params or {}).get("steps")
            done = min(int(batch) + 1, steps) if steps else int(batch) + 1
            self.step = self._epoch_start + done
            if steps and done >= steps:
                self._store_step(self.step)

    def on_epoch_end(self, epoch=None, logs=None, **kwargs):
        # `**kwargs` accepts tfmot's custom-loop call `on_epoch_end(batch=-1)`.
        if self._epoch_start is not None and self._epoch_iterations is not None:
            now = self._optimizer_iterations()
            if now is not None and now > self._epoch_iterations:
                self.step = self._epoch_start + now - self._epoch_iterations
        self._store_step(self.step)

    def on_train_end(self, logs=None):
        self._store_step(self.step)
        self._epoch_start = None

    def _store_step(self, step):
        for w in self._wrappers:
            w.pruning_step.assign(step)


class PruningSummaries(keras.callbacks.TensorBoard):
    """TensorBoard callback that also logs the sparsity of every pruned weight.

    Writes a scalar `sparsity/<layer>/<weight>` (fraction of zeros in the mask)
    to the training log at the end of each epoch, next to the usual
    `keras.callbacks.TensorBoard` logs.

    Args:
        log_dir: where to write the logs.
        update_freq: `"epoch"` (default), `"batch"` or an integer number of
            batches between writes.
        **kwargs: other `keras.callbacks.TensorBoard` arguments.
    """

    def __init__(self, log_dir, update_freq="epoch", **kwargs):
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(
                f"Argument `log_dir` must be a non-empty path. Received: log_dir={log_dir!r}"
            )
        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "PruningSummaries writes TensorBoard logs and needs the `tensorboard` "
                "package, which TensorFlow no longer installs. Install it with "
                "`pip install tensorboard` (or `pip install kprune[tensorboard]`)."
            )
        super().__init__(log_dir=log_dir, update_freq=update_freq, **kwargs)
        self._kprune_step = 0

    def _log_sparsity(self, step):
        import tensorflow as tf

        with self._train_writer.as_default():
            for layer in pruning.collect_wrappers(self.model):
                for variable, mask in layer.pruned_weights:
                    m = keras.ops.convert_to_numpy(mask)
                    tf.summary.scalar(
                        f"sparsity/{layer.name}/{variable.name}",
                        float(1.0 - m.mean()),
                        step=step,
                    )
            self._train_writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self._kprune_step += 1
        freq = self.update_freq
        if freq == "batch" or (isinstance(freq, int) and self._kprune_step % freq == 0):
            self._log_sparsity(self._kprune_step)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.update_freq == "epoch":
            self._log_sparsity(epoch)
