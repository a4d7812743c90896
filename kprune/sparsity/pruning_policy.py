"""Pruning policies: which layers of a model `prune_low_magnitude` wraps.

A `PruningPolicy` (tfmot's API) says, layer by layer, whether a layer is
wrapped (`allow_pruning`), and checks the whole model before anything is
wrapped (`ensure_model_supports_pruning`). `PruneForLatencyOnXNNPack` keeps a
model fit for XNNPACK's sparse inference, which speeds up 1x1 convolutions
with sparse weights in a subgraph that starts with a stride-2 3x3 convolution
on a 3-channel image and ends with a global average pooling; it prunes only
those 1x1 convolutions.

References:
    Elsen et al., "Fast Sparse ConvNets", CVPR 2020 (arXiv:1911.09723).
    XNNPACK sparse inference: tensorflow/lite/delegates/xnnpack/README.md.
"""

import keras
from keras import layers as L

from kprune._internal import functional

# Element-wise operations on two tensors that XNNPACK's sparse subgraph runs
# (`x + y` in a Functional model is a `keras.ops` node, tfmot's TFOpLambda).
_ELEMENTWISE_OPS = ("Add", "Subtract", "Multiply", "Identity")
_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid")


class PruningPolicy:
    """Base class of pruning policies: which layers of a model are pruned.

    Subclasses implement `allow_pruning(layer)` (wrap this layer?) and
    `ensure_model_supports_pruning(model)` (raise a `ValueError` naming the
    layer if the model does not fit the policy). Pass an instance as
    `kprune.prune_low_magnitude(model, pruning_policy=...)`; the policy is
    asked only about layers kprune can prune.

    Example:

    >>> import keras, kprune
    >>> class DenseOnly(kprune.PruningPolicy):
    ...     def allow_pruning(self, layer):
    ...         return isinstance(layer, keras.layers.Dense)
    ...     def ensure_model_supports_pruning(self, model):
    ...         pass
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
    ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> pruned = kprune.prune_low_magnitude(model, pruning_policy=DenseOnly())
    >>> [type(layer).__name__ for layer in pruned.layers]
    ['Conv2D', 'Flatten', 'PruneLowMagnitude']
    """

    def allow_pruning(self, layer):
        raise NotImplementedError(f"{type(self).__name__} must implement `allow_pruning(layer)`.")

    def ensure_model_supports_pruning(self, model):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `ensure_model_supports_pruning(model)`."
        )


class _Graph:
    """Producers and consumers of every call node of a built graph model."""

    def __init__(self, model):
        function = functional.function_of(model, purpose="A pruning policy")
        self.nodes = list(functional.nodes(model))
        known = {id(n) for n in self.nodes}
        self.producers = {
            id(n): [p for p in n.parent_nodes if id(p) in known] for n in self.nodes
        }
        self.consumers = {id(n): [] for n in self.nodes}
        for n in self.nodes:
            for p in self.producers[id(n)]:
                self.consumers[id(p)].append(n)
        self.inputs = [n for n in self.nodes if any(p.is_input for p in n.parent_nodes)]
        outputs = {id(t) for t in function.outputs}
        self.outputs = [n for n in self.nodes if any(id(t) in outputs for t in n.outputs)]

    def lookup(self, sources, stop, following):
        """tfmot's search: from `sources`, follow `following` until `stop`
        holds. Returns the nodes where it held, or [] if some path ended
        first (a layer with nothing to follow)."""
        to_visit, seen, found = list(sources), {id(n) for n in sources}, []
        while to_visit:
            node = to_visit.pop()
            if stop(node):
                found.append(node)
                continue
            nexts = following(node)
            if not nexts:
                return []
            for n in nexts:
                if id(n) not in seen:
                    seen.add(id(n))
                    to_visit.append(n)
        return found


def _is_conv2d(op):
    return isinstance(op, L.Conv2D)


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prune only the 1x1 Conv2D layers that XNNPACK's sparse inference speeds up.

    `ensure_model_supports_pruning` checks, as tfmot does, that every input
    branch reaches a `Conv2D` 3x3 with stride 2, `"valid"` padding and 3 input
    channels fed by a `ZeroPadding2D(1)`; that every output branch goes back to
    a `GlobalAveragePooling2D`; and that every layer between them is one
    XNNPACK's sparse subgraph runs: 1x1 `Conv2D` (stride 1, no dilation, no
    groups), 3x3 or 5x5 `DepthwiseConv2D` (`"same"`, or `"valid"` after a
    matching `ZeroPadding2D`, stride 1 or 2), `BatchNormalization` on the
    channel axis, `ReLU`, `LeakyReLU`, `ELU`, `Dropout`, `ZeroPadding2D`,
    `Add`, `Multiply`, bilinear `UpSampling2D`, `Activation` (relu, relu6,
    leaky_relu, elu, sigmoid), `GlobalAveragePooling2D(keepdims=True)`, and
    the element-wise `keras.ops` add, subtract and multiply.

    References:
        Elsen et al., "Fast Sparse ConvNets" (arXiv:1911.09723).

    Example:

    >>> import keras, kprune
    >>> model = keras.Sequential([
    ...     keras.Input((32, 32, 3)), keras.layers.ZeroPadding2D(1),
    ...     keras.layers.Conv2D(8, 3, strides=2), keras.layers.ReLU(),
    ...     keras.layers.Conv2D(16, 1), keras.layers.GlobalAveragePooling2D(keepdims=True),
    ...     keras.layers.Flatten(), keras.layers.Dense(10)])
    >>> pruned = kprune.prune_low_magnitude(
    ...     model, pruning_policy=kprune.PruneForLatencyOnXNNPack())
    >>> [layer.name for layer in pruned.layers if isinstance(layer, kprune.PruneLowMagnitude)]
    ['prune_low_magnitude_conv2d_1']
    """

    def allow_pruning(self, layer):
        """Only 1x1 `Conv2D` layers are pruned."""
        return _is_conv2d(layer) and tuple(layer.kernel_size) == (1, 1)

    @staticmethod
    def _single_padding(graph, node):
        producers = graph.producers[id(node)]
        if len(producers) == 1 and isinstance(producers[0].operation, L.ZeroPadding2D):
            return tuple(tuple(p) for p in producers[0].operation.padding)
        return None

    def _is_start(self, graph, node):
        op = node.operation
        return (
            _is_conv2d(op)
            and op.built
            and tuple(op.kernel.shape[:3]) == (3, 3, 3)
            and tuple(op.strides) == (2, 2)
            and op.padding.lower() == "valid"
            and self._single_padding(graph, node) == ((1, 1), (1, 1))
        )

    def _supported(self, graph, node):
        """Whether XNNPACK's sparse subgraph runs this node (its compatibility check)."""
        op = node.operation
        if isinstance(op, (L.Add, L.Multiply, L.ZeroPadding2D, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout)):
            return True
        if isinstance(op, L.DepthwiseConv2D):
            k, s, padding = tuple(op.kernel_size), tuple(op.strides), op.padding.lower()
            pad = self._single_padding(graph, node)
            shape_ok = k in ((3, 3), (5, 5)) and (
                (s == (1, 1) and padding == "same")
                or (s in ((1, 1), (2, 2)) and padding == "valid"
                    and pad == ((k[0] // 2,) * 2, (k[1] // 2,) * 2))
            )
            return shape_ok and op.depth_multiplier == 1 and tuple(op.dilation_rate) == (1, 1)
        if _is_conv2d(op):
            return (op.groups == 1 and tuple(op.dilation_rate) == (1, 1)
                    and tuple(op.kernel_size) == (1, 1) and tuple(op.strides) == (1, 1))
        if isinstance(op, L.GlobalAveragePooling2D):
            return bool(op.keepdims)
        if isinstance(op, L.BatchNormalization):
            return op.axis in (3, -1)
        if isinstance(op, L.UpSampling2D):
            return op.interpolation == "bilinear"
        if isinstance(op, L.Activation):
            return keras.activations.serialize(op.activation) in _ACTIVATIONS
        if not functional.is_layer(op):
            return type(op).__name__ in _ELEMENTWISE_OPS
        return False

    def ensure_model_supports_pruning(self, model):
        """Raise a `ValueError` unless `model` fits XNNPACK's sparse inference.

        Args:
            model: a built Sequential or Functional model.
        """
        if not functional.is_graph(model):
            raise ValueError(
                f"{type(self).__name__} needs a Sequential or Functional model. Received: "
                f"model '{model.name}' of type {type(model).__name__} (subclassed models "
                "are not supported)."
            )
        if not model.built:
            raise ValueError(
                f"{type(self).__name__} needs a built model: give model '{model.name}' an "
                "`Input` or call `model.build(input_shape)` first."
            )
        graph = _Graph(model)
        starts = graph.lookup(graph.inputs, lambda n: self._is_start(graph, n),
                              lambda n: graph.consumers[id(n)])
        if not starts:
            raise ValueError(
                f"Model '{model.name}' does not fit {type(self).__name__}: could not find a "
                "`Conv2D` 3x3 layer with stride 2x2, 3 input channels and `valid` padding, "
                "preceded by `ZeroPadding2D(padding=1)`, in all input branches of the "
                "model. XNNPACK's sparse inference starts there."
            )
        ends = graph.lookup(graph.outputs, lambda n: isinstance(n.operation, L.GlobalAveragePooling2D),
                            lambda n: graph.producers[id(n)])
        if not ends:
            raise ValueError(
                f"Model '{model.name}' does not fit {type(self).__name__}: could not find a "
                "`GlobalAveragePooling2D` layer in all output branches of the model. "
                "XNNPACK's sparse inference ends there."
            )
        end_ids = {id(n) for n in ends}

        def check(node):
            if id(node) in end_ids:
                return True
            if not self._supported(graph, node):
                op = node.operation
                raise ValueError(
                    f"Layer '{op.name}' ({type(op).__name__}) is not supported for the "
                    f"{type(self).__name__} pruning policy: XNNPACK's sparse inference "
                    "cannot run it between the first convolution and the global average "
                    "pooling. Change or move the layer, or prune without the policy."
                )
            return False

        graph.lookup([c for n in starts for c in graph.consumers[id(n)]], check,
                     lambda n: graph.consumers[id(n)])
