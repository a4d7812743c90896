"""Regularizers that prepare a model for channel pruning during training.

`BNScaleRegularizer` is Network Slimming's sparsity training (Liu et al.,
"Learning Efficient Convolutional Networks through Network Slimming", ICCV
2017): an L1 penalty on BatchNormalization's `gamma` drives the scales of
unimportant channels towards 0, which `importance="bn_scale"` then prunes.
"""

import keras


@keras.saving.register_keras_serializable(package="kprune")
class BNScaleRegularizer(keras.regularizers.Regularizer):
    """L1 penalty on BatchNormalization `gamma` (Network Slimming's sparsity training).

    `loss = strength * sum(|gamma|)`; use it as `gamma_regularizer` of the
    BatchNormalization layers, then prune with `importance="bn_scale"`.

    Args:
        strength: the L1 coefficient (>= 0). Defaults to 1e-4.

    Example:

    >>> import keras, kprune
    >>> bn = keras.layers.BatchNormalization(gamma_regularizer=kprune.BNScaleRegularizer(1e-4))
    """

    def __init__(self, strength=1e-4):
        if not isinstance(strength, (int, float)) or isinstance(strength, bool) or strength < 0:
            raise ValueError(f"Argument `strength` must be a number >= 0. Received: strength={strength!r}")
        self.strength = float(strength)

    def __call__(self, x):
        return self.strength * keras.ops.sum(keras.ops.abs(x))

    def get_config(self):
        return {"strength": self.strength}
