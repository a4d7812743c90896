"""Callbacks that drive pruning during `fit`: `UpdatePruningStep`, `PruningSummaries`."""

import importlib.util
import os

import keras
import numpy as np

from kprune.sparsity import prune as pruning
from kprune.sparsity.pruning_schedule import check_steps
from kprune.sparsity.schedule_table import ScheduleTable
from kprune.utils import backends


class UpdatePruningStep(keras.callbacks.Callback):
    """Advances the pruning step and updates masks when the schedules say so.

    Required when training a model wrapped by `kprune.prune_low_magnitude` or
    `kprune.prune_channels` (for the latter, channels are chosen for the whole
    model at once at each pruning turn of its schedule).

    Steps are tfmot's: training batches count from 1 (the first batch ever is
    step 1, and a resumed model goes on from its stored step), and the masks
    are recomputed just before a batch whose step is a pruning turn of the
    layer's schedule, so that batch and the following ones run with the new
    masks. M:N layers (`sparsity_m_by_n`) get their mask once, before step 1,
    as in tfmot. After `N` batches every wrapper's `pruning_step` holds `N`:
    it is stored at each mask update, at the last batch of each epoch and at
    the end of training, so a saved model resumes where it stopped. With
    `ModelCheckpoint(save_freq=<int>)`, list this callback first.

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
        self._quiet = (0, -1)  # steps known to hold no pruning turn
        self._wrappers = []
        self._tables = {}
        self._epoch_start = None
        self._epoch_iterations = None

    def on_train_begin(self, logs=None):
        self._wrappers = pruning.pruned_layers(self.model)
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
            w.mark_driven()
            # The training forward pass reads the variables as they are, so
            # they must hold masked values (set_weights may have changed them).
            w.apply_masks()
        self._tables = {}
        # Wrappers whose masks are chosen for the whole model at once (channel
        # groups), by class; the class prepares what its updates need now, so
        # that the cost does not land on a training step.
        self._model_level = {}
        for w in self._wrappers:
            if type(w).model_level:
                self._model_level.setdefault(type(w), []).append(w)
        for cls, wrappers in self._model_level.items():
            cls.prepare_model_masks(self.model, wrappers)
        for w in self._wrappers:
            self._tables.setdefault(id(w.pruning_schedule), ScheduleTable(w.pruning_schedule))
        self.step = max(int(keras.ops.convert_to_numpy(w.pruning_step)) for w in self._wrappers)
        self._quiet = (0, -1)  # steps known to hold no pruning turn
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
        # Not `self.model`: on JAX that copies the training state back to the
        # variables, which is needed only when masks change.
        model = backends.model_of(self)
        span = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        # The batches about to run are steps `first..last` (1-based).
        first, last = self.step + 1, self.step + span
        if self._quiet[0] <= first and last <= self._quiet[1]:  # no schedule has a turn here
            self.step += 1
            return
        check_steps(last)
        # One lookup per distinct schedule, not per layer.
        turns = {key: table.last_turn(first, last) for key, table in self._tables.items()}
        updates = []
        for w in self._wrappers:
            if type(w).model_level:
                continue
            if getattr(w, "sparsity_m_by_n", None) is not None:
                # tfmot computes M:N masks once, at step 1, whatever the schedule.
                if first <= 1 <= last:
                    updates.append((w, None))
                continue
            sparsity = turns[id(w.pruning_schedule)]
            if sparsity is not None:
                updates.append((w, sparsity))
        # Model-level masks follow the schedule of their class's first wrapper.
        model_updates = [(cls, wrappers, turns[id(wrappers[0].pruning_schedule)])
                         for cls, wrappers in self._model_level.items()]
        model_updates = [update for update in model_updates if update[2] is not None]
        self.step += 1
        if not updates and not model_updates:
            if not any(getattr(w, "sparsity_m_by_n", None) is not None for w in self._wrappers) or first > 1:
                # Steps before the next turn of any schedule need no lookup.
                self._quiet = (first, min(t.quiet_until(first) for t in self._tables.values()))
            return
        backends.sync(model)
        for w, sparsity in updates:
            w.update_masks(sparsity)
        for cls, wrappers, sparsity in model_updates:
            cls.update_model_masks(model, wrappers, sparsity)
        if not backends.optimizer_sees_masks():
            changed = [w for w, _ in updates] + [w for _, wrappers, _ in model_updates for w in wrappers]
            pairs = [pair for w in changed for pair in w.pruned_weights]
            backends.zero_pruned_slots(getattr(model, "optimizer", None), pairs)
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
        if not backends.optimizer_sees_masks():
            # Optimizers without per-entry state of their own kind (Muon's
            # orthogonalized update) can move pruned entries: zero them.
            for w in self._wrappers:
                w.apply_masks()
        self._epoch_start = None

    def _store_step(self, step):
        backends.sync(backends.model_of(self))
        for w in self._wrappers:
            w.pruning_step.assign(step)


def pruning_scalars(model):
    """The scalars `PruningSummaries` writes, from the model as it is now.

    Returns:
        `(kprune_scalars, tfmot_scalars)`: dicts from tag to value. kprune's
        tags are `sparsity/<layer>/<weight>`; tfmot's are
        `<layer>/mask:0/sparsity` and `<layer>/threshold:0/threshold` (the
        second pruned weight of a layer is `mask_1:0`, ...: tfmot gives every
        mask of a layer the same name, so only its last one is logged). The
        threshold is the smallest magnitude the mask keeps, 0 while nothing
        is pruned (tfmot's value right after a mask update).

    Example:

    >>> import keras, kprune
    >>> model = kprune.prune_low_magnitude(
    ...     keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")]))
    >>> kprune.update_masks(model, sparsity=0.5)
    >>> ours, tfmot = pruning_scalars(model)
    >>> ours["sparsity/prune_low_magnitude_d/kernel"], tfmot["prune_low_magnitude_d/mask:0/sparsity"]
    (0.5, 0.5)
    """
    ours, theirs = {}, {}
    for layer in pruning.pruned_layers(model):
        for i, (variable, mask) in enumerate(layer.pruned_weights):
            m = np.asarray(keras.ops.convert_to_numpy(mask)) != 0
            sparsity = float(1.0 - m.mean())
            kept = np.abs(np.asarray(keras.ops.convert_to_numpy(variable.value)))[m]
            threshold = float(kept.min()) if sparsity > 0 and kept.size else 0.0
            suffix = "" if i == 0 else f"_{i}"
            ours[f"sparsity/{layer.name}/{variable.name}"] = sparsity
            theirs[f"{layer.name}/mask{suffix}:0/sparsity"] = sparsity
            theirs[f"{layer.name}/threshold{suffix}:0/threshold"] = threshold
    return ours, theirs


class PruningSummaries(keras.callbacks.TensorBoard):
    """TensorBoard callback that also logs the sparsity of every pruned weight.

    Writes, next to the usual `keras.callbacks.TensorBoard` logs:

    * kprune's scalars `sparsity/<layer>/<weight>` (fraction of zeros in the
      mask) to the training log (`<log_dir>/train`) at the end of each epoch
      (or every `update_freq` batches);
    * tfmot's scalars `<layer>/mask:0/sparsity` and
      `<layer>/threshold:0/threshold` to `<log_dir>/metrics` at the beginning
      of each epoch, at the optimizer's iteration, as tfmot does, so
      dashboards made for tfmot work unchanged (see `pruning_scalars`).

    Args:
        log_dir: where to write the logs.
        update_freq: `"epoch"` (default), `"batch"` or an integer number of
            batches between writes of kprune's scalars.
        **kwargs: other `keras.callbacks.TensorBoard` arguments.

    Example:

    >>> import tempfile, keras, numpy as np, kprune
    >>> model = kprune.prune_low_magnitude(
    ...     keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]))
    >>> model.compile("sgd", "mse")
    >>> _ = model.fit(np.ones((4, 8)), np.ones((4, 4)), verbose=0, callbacks=[
    ...     kprune.UpdatePruningStep(), kprune.PruningSummaries(tempfile.mkdtemp())])
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
        self._metrics_writer = None

    def _write(self, writer, scalars, step):
        import tensorflow as tf

        with writer.as_default():
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value, step=step)
        writer.flush()

    def _log_sparsity(self, step):
        self._write(self._train_writer, pruning_scalars(self.model)[0], step)

    def _log_tfmot(self):
        import tensorflow as tf

        if self._metrics_writer is None:
            self._metrics_writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "metrics"))
        optimizer = getattr(self.model, "optimizer", None)
        step = 0 if optimizer is None else int(keras.ops.convert_to_numpy(optimizer.iterations))
        self._write(self._metrics_writer, pruning_scalars(self.model)[1], step)

    def on_epoch_begin(self, epoch, logs=None):
        # tfmot's custom loop calls this alone, after `set_model`, perhaps
        # on a model without an optimizer.
        if getattr(self.model, "optimizer", None) is not None:
            super().on_epoch_begin(epoch, logs)
        self._log_tfmot()

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

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._metrics_writer is not None:
            self._metrics_writer.close()
            self._metrics_writer = None
