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


def distiller(student, teacher, temperature=4.0, alpha=0.5, copy_teacher=True):
    """A `keras.distillation.Distiller` that trains `student` on labels and on
    the softened logits of `teacher` (frozen).

    Args:
        student: the model to train (pruned or not); outputs logits.
        teacher: the trained dense model; outputs logits. Keras' Distiller
            freezes its teacher (`trainable = False`); a copy of it is frozen,
            so `teacher` itself stays trainable, and `distiller.teacher` is
            the copy.
        temperature: softmax temperature `T` (> 0). Defaults to 4.0.
        alpha: weight of the task loss in [0, 1]; `1 - alpha` goes to the
            distillation term. Defaults to 0.5.
        copy_teacher: freeze a copy of `teacher` (True), or `teacher` itself
            (False: the caller's model is then not trainable afterwards). A
            model that cannot be copied (a subclassed model without
            `get_config`) raises unless this is False. Defaults to True.

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
    if copy_teacher:
        teacher = _copy(teacher)
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


def _copy(model):
    """A copy of `model` with the same weights: cloned (Sequential, Functional),
    or rebuilt from its config (a subclassed model with `get_config`)."""
    errors = []
    for make in (keras.models.clone_model, lambda m: type(m).from_config(m.get_config())):
        try:
            copy = make(model)
            if not copy.built and model.built:
                copy.build_from_config(model.get_build_config())
            copy.set_weights(model.get_weights())
            return copy
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            errors.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    raise ValueError(
        f"Could not copy the teacher '{model.name}' ({type(model).__name__}) to freeze it: keras.models.clone_model "
        f"failed ({errors[0]}) and so did rebuilding it from its config ({errors[1]}). Keras' Distiller freezes "
        "its teacher: give the model a get_config(), or pass copy_teacher=False to let it freeze this model "
        "itself (it is then not trainable afterwards)."
    )
