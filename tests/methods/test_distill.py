"""Distillation of a pruned student from its dense teacher."""

import keras
import numpy as np
import pytest
from keras import layers as L

import kprune


def _net(width=16, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(width, 3, activation="relu", name="conv"),
        L.GlobalAveragePooling2D(),
        L.Dense(10, name="head"),
    ])


def _data():
    rng = np.random.default_rng(0)
    return rng.random((64, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 64)


@pytest.mark.parametrize("kind", ["unstructured", "channels"])
def test_pruned_student_trains_inside_the_distiller(kind):
    x, y = _data()
    teacher = _net(seed=1)
    if kind == "unstructured":
        student = kprune.prune_low_magnitude(_net(), pruning_schedule=kprune.ConstantSparsity(0.75, 0, frequency=1))
    else:
        student = kprune.prune_channels(_net(), kprune.ConstantSparsity(0.5, 0, frequency=1), round_to=1)
    teacher_before = teacher.get_weights()
    model = kprune.distiller(student, teacher, temperature=3.0, alpha=0.25)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[kprune.UpdatePruningStep()])
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The teacher is not trained (a frozen copy is used) and stays trainable
    # for the caller; the student reached its sparsity.
    for a, b in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert teacher.trainable and len(teacher.trainable_weights) == 4
    assert model.teacher is not teacher and not model.teacher.trainable
    if kind == "unstructured":
        kernel = student.get_layer("prune_low_magnitude_conv").layer.kernel.numpy()
        assert (kernel == 0).mean() == 0.75
    else:
        assert kprune.channel_sparsity(student)["conv"] == (8, 16)


def test_distillation_term_matches_the_formula():
    x, y = _data()
    teacher, student = _net(seed=1), _net(seed=2)
    model = kprune.distiller(student, teacher, temperature=2.0, alpha=0.0)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    t = keras.ops.softmax(teacher.predict(x, verbose=0) / 2.0).numpy()
    s = keras.ops.softmax(student.predict(x, verbose=0) / 2.0).numpy()
    kl = (t * np.log(np.clip(t, 1e-7, 1) / np.clip(s, 1e-7, 1))).sum(axis=1).mean() * 4.0
    logs = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(kl, rel=1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(temperature=0), "Received: temperature=0"), (dict(alpha=1.5), "Received: alpha=1.5")],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kprune.distiller(_net(), _net(), **kwargs)


class _Subclassed(keras.Model):
    def __init__(self, config=True, **kwargs):
        super().__init__(**kwargs)
        self.with_config = config
        self.dense = L.Dense(3)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        if not self.with_config:
            raise NotImplementedError("no config")
        return {"config": True, "name": self.name}


def test_a_subclassed_teacher_is_copied_or_the_caller_chooses_to_freeze_it():
    """Keras' Distiller freezes its teacher: kprune freezes a copy, and when
    no copy can be made it says so rather than freezing the caller's model."""
    student = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    teacher = _Subclassed()
    teacher(np.ones((1, 4), "float32"))
    model = kprune.distiller(student, teacher)
    assert model.teacher is not teacher and teacher.trainable and not model.teacher.trainable
    np.testing.assert_array_equal(model.teacher.dense.kernel.numpy(), teacher.dense.kernel.numpy())
    opaque = _Subclassed(config=False, name="opaque")
    opaque(np.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match=r"Could not copy the teacher 'opaque' \(_Subclassed\) to freeze it: .*"
                                         r"pass copy_teacher=False"):
        kprune.distiller(student, opaque)
    assert opaque.trainable
    model = kprune.distiller(student, opaque, copy_teacher=False)
    assert model.teacher is opaque and not opaque.trainable
