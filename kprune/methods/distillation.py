"""Fine-tune a pruned student with knowledge distillation from its dense teacher.

`distiller(student, teacher)` returns Keras' own `keras.distillation.Distiller`
set up for the usual logits distillation (Hinton et al., 2015):

    loss = alpha * task_loss(y, student(x))
           + (1 - alpha) * T^2 * KL(softmax(teacher(x) / T) || softmax(student(x) / T))

The student may be wrapped by `prune_low_magnitude` or `prune_channels`:
`UpdatePruningStep` finds its wrappers inside the distiller. After `fit`,
`distiller.student` is the trained student (strip or remove channels as usual).
Both models must output logits.

Example:

>>> import keras, numpy as np, kprune
>>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
>>> student = kprune.prune_low_magnitude(
...     keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
>>> model = kprune.distiller(student, teacher, temperature=4.0, alpha=0.5)
>>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> _ = model.fit(np.ones((8, 4)), np.zeros(8), verbose=0,
...               callbacks=[kprune.UpdatePruningStep()])
>>> model.student is student
True
"""

import keras


def distiller(student, teacher, temperature=4.0, alpha=0.5):
    """A `keras.distillation.Distiller` that trains `student` on labels and on
    the softened logits of `teacher` (frozen).

    Args:
        student: the model to train (pruned or not); outputs logits.
        teacher: the trained dense model; outputs logits. A copy of it is
            frozen (Sequential and Functional models), so `teacher` itself
            stays trainable; `distiller.teacher` is the copy.
        temperature: softmax temperature `T` (> 0). Defaults to 4.0.
        alpha: weight of the task loss in [0, 1]; `1 - alpha` goes to the
            distillation term. Defaults to 0.5.

    Returns:
        A Keras model to `compile` (with the task loss) and `fit`.
    """
    try:
        from keras import distillation
    except ImportError:  # Keras < 3.12
        raise ImportError(
            "kprune.distiller uses keras.distillation, new in Keras 3.12. Upgrade with "
            f"`pip install -U keras`. Installed: keras {keras.__version__}"
        ) from None
    for name, model in (("student", student), ("teacher", teacher)):
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"Argument `{name}` must be a Keras model. Received: {name}={model!r}"
            )
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"Argument `temperature` must be > 0. Received: temperature={temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"Argument `alpha` must be in [0, 1]. Received: alpha={alpha!r}")
    # Keras' Distiller freezes its teacher (`trainable = False`); freeze a copy
    # so the caller's model, and every model later derived from it, stays
    # trainable.
    teacher = _frozen_copy(teacher)
    # A KLDivergence *instance*: LogitsDistillation softmaxes the scaled logits
    # and multiplies by T^2 only for it (its default, the string
    # "kl_divergence", resolves to a function and is applied to raw logits).
    logits = distillation.LogitsDistillation(
        temperature=float(temperature), loss=keras.losses.KLDivergence()
    )
    return distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=logits,
        student_loss_weight=float(alpha),
    )


def _frozen_copy(model):
    """A copy of `model` with the same weights (the model itself if it cannot
    be cloned, e.g. a subclassed model: then Keras freezes it)."""
    try:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    except Exception:  # subclassed or custom models clone_model cannot rebuild
        return model
    return copy
