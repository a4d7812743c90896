"""What differs between Keras 3 backends (TensorFlow, JAX, PyTorch), in one place.

kprune's math is `keras.ops` and NumPy, so it runs on every backend; what
differs is how training holds state:

* On TensorFlow and PyTorch the optimizer updates the variables in place, so
  the mask constraint (`w -> w * mask`) reads the current masks after every
  step and pruned weights stay exactly 0.
* On JAX, `fit` and `optimizer.stateless_apply` run a compiled function on a
  copy of the state: the constraint runs inside it and cannot read a mask
  (masks are non-trainable state the optimizer is not given; a value read at
  trace time would be a stale constant). There the forward pass multiplies by
  the mask, pruned weights get exactly zero gradient, and at each mask update
  the optimizer's per-weight slots (momentum, Adam's moments) of the pruned
  entries are zeroed, so that for gradient-based optimizers those entries stay
  exactly 0 too. `fit` keeps the state off the variables between steps, so
  callbacks write it back (`sync`) before they read or assign variables.
* Gradients for the "taylor" criterion come from `tf.GradientTape`,
  `jax.grad` or `torch.autograd`.

Example:

>>> from kprune.utils import backends
>>> backends.name() in ("tensorflow", "jax", "torch")
True
"""

import keras
import numpy as np

from kprune._internal import functional


def name():
    """The Keras backend: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def optimizer_sees_masks():
    """Whether a variable's constraint reads the current mask during training
    (the optimizer updates variables in place): not on JAX."""
    return name() != "jax"


def mask_is_readable(mask, value):
    """Whether a constraint applied to `value` can read `mask` as it is now.

    Not on JAX inside `fit`'s or `optimizer.stateless_apply`'s optimizer step:
    the step runs on a copy of the state that does not include the masks (the
    variable then holds a stale value, or none while `fit` runs), compiled or
    not. Elsewhere (TensorFlow, PyTorch, an eager `optimizer.apply`) it can.
    """
    if optimizer_sees_masks():
        return True
    import jax

    return not (functional.scope_hides(mask) or isinstance(value, jax.core.Tracer))


def on_accelerator(variable):
    """Whether `variable` lives on a GPU or TPU (not the host's CPU)."""
    value = variable.value
    backend = name()
    if backend == "tensorflow":
        device = getattr(value, "device", "") or ""
        return "GPU" in device or "TPU" in device
    if backend == "jax":
        devices = getattr(value, "devices", None)
        return devices is not None and any(d.platform != "cpu" for d in devices())
    device = getattr(value, "device", None)
    return device is not None and getattr(device, "type", "cpu") != "cpu"


def zero_in_place(variable, mask):
    """PyTorch: zero the entries of `variable` where `mask` is False, in place
    (`value.mul_(mask)`: one pass and no new tensor, where `where` then
    `assign` make a tensor and copy it: 2.3x the time on a 3.2M-entry
    kernel). A boolean mask is read as `uint8` (the same bytes): PyTorch's
    float-by-bool multiply takes 2x the time of float-by-uint8 on CPU
    (1.27 vs 0.62 ms on a 3.2M-entry kernel here). Returns the variable's
    value, whose `assign` to the same variable PyTorch skips (a copy onto
    itself)."""
    import torch

    factor = mask.value
    if factor.dtype == torch.bool:
        factor = factor.view(torch.uint8)
    with torch.no_grad():
        return variable.value.mul_(factor)


def model_of(callback):
    """The callback's model without writing the training state back to it.

    `callback.model` does that on JAX (`jax_state_sync`), which costs a copy
    of every variable; callbacks call `sync` only when they need the values.
    """
    return functional.callback_model(callback)


def sync(model):
    """Write JAX's training state to the model's variables, and make the next
    train step read them back (so values assigned now are used). A no-op on
    other backends and outside `fit`."""
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def optimizer_slots(optimizer, variable):
    """The optimizer's per-entry state for `variable` (momentum, Adam's first
    and second moments, ...): its variables made from `variable`, which Keras
    names `<variable path with _>_<slot name>` and shapes like it.

    Args:
        optimizer: a built `keras.optimizers.Optimizer` (or None).
        variable: a model variable.

    Returns:
        A list of optimizer variables (empty if the optimizer is not built).
    """
    if optimizer is None or not getattr(optimizer, "built", False):
        return []
    prefix = variable.path.replace("/", "_") + "_"
    shape = tuple(variable.shape)
    return [
        v for v in optimizer.variables
        if tuple(v.shape) == shape and v.name.startswith(prefix)
    ]


def zero_pruned_slots(optimizer, pairs):
    """Zero the optimizer's state of the pruned entries: `slot <- slot * mask`
    for every `(variable, mask)` in `pairs`. With zero gradient and zero state
    a pruned entry then receives no update (SGD with momentum, Adam, AdamW,
    RMSprop, Adagrad, Lion, ...)."""
    for variable, mask in pairs:
        keep = None
        for slot in optimizer_slots(optimizer, variable):
            if keep is None:
                keep = keras.ops.convert_to_numpy(mask.value) != 0
            value = keras.ops.convert_to_numpy(slot.value)
            slot.assign(np.where(keep, value, np.zeros((), value.dtype)))


def gradients(model, x, loss_of, variables, training=False):
    """Gradients of `loss_of(model(x, training=training))` (a scalar) with
    respect to `variables` (trainable variables of `model`), as backend
    tensors (None where a variable does not affect the loss).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    >>> _ = model.layers[0].kernel.assign([[1.0], [2.0]])
    >>> g = gradients(model, np.ones((1, 2), "float32"), keras.ops.sum, model.trainable_variables)
    >>> keras.ops.convert_to_numpy(g[0]).ravel().tolist()
    [1.0, 1.0]
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_of(model(x, training=training))
        return tape.gradient(value, [v.value for v in variables])
    if backend == "jax":
        import jax

        trainable = model.trainable_variables
        non_trainable = [v.value for v in model.non_trainable_variables]

        def value_of(values):
            outputs, _ = model.stateless_call(values, non_trainable, x, training=training)
            return loss_of(outputs)

        grads = jax.grad(value_of)([v.value for v in trainable])
        by_id = {id(v): g for v, g in zip(trainable, grads)}
        return [by_id.get(id(v)) for v in variables]
    if backend == "torch":
        import torch

        value = loss_of(model(x, training=training))
        return list(torch.autograd.grad(value, [v.value for v in variables], allow_unused=True))
    raise ValueError(
        "Gradients are implemented for the tensorflow, jax and torch backends. "
        f"Received: backend {backend!r}"
    )
