"""Apply and remove pruning: `prune_low_magnitude`, `strip_pruning`, `prune_scope`,
and the cloning they are built on (`clone_with`). Models that cannot be cloned
layer by layer are pruned in place (`kprune.sparsity.in_place`)."""

import keras

from kprune._internal import functional
from kprune.registry import keras_layers
from kprune.sparsity import in_place, mask_math
from kprune.sparsity.pruning_policy import PruningPolicy
from kprune.sparsity.pruning_wrapper import MaskedWrapper, PruneLowMagnitude


def _leaf_layers(model):
    """All layers of `model`, descending into nested Sequential/Functional models."""
    for layer in model.layers:
        if functional.is_nested_graph(layer):
            yield from _leaf_layers(layer)
        else:
            yield layer


def collect_wrappers(model):
    """Every kprune wrapper (`PruneLowMagnitude`, `PruneChannels`) in `model`
    (a layer, a list or a model)."""
    if isinstance(model, MaskedWrapper):
        return [model]
    if isinstance(model, (list, tuple)):
        return [w for m in model for w in collect_wrappers(m)]
    if not hasattr(model, "layers"):
        return []
    return [layer for layer in _leaf_layers(model) if isinstance(layer, MaskedWrapper)]


def pruned_layers(model):
    """Every holder of magnitude or channel masks in `model`: its kprune
    wrappers and, for a model pruned in place, its `in_place.PrunedInPlace`
    records (which the callbacks, `update_masks` and the summaries treat as
    wrappers)."""
    return collect_wrappers(model) + in_place.targets_of(model)


def copy_layer(layer, config=None, build=True):
    """A fresh copy of `layer` (of its inner layer for a wrapper) from its config.

    With `build`, the copy is built from the recorded input shapes (layers such
    as MultiHeadAttention cannot be built from a single shape later).
    """
    source = layer.layer if isinstance(layer, MaskedWrapper) else layer
    new = source.__class__.from_config(config if config is not None else source.get_config())
    build_config = source.get_build_config() if (build and source.built) else None
    if build_config:
        new.build_from_config(build_config)
    return new


def clone_with(model, clone_layer, weights_of, input_width=None, rebuild=None):
    """Clone a Sequential/Functional model (nested ones too) with fresh variables.

    `clone_layer(old)` returns `(copy, layer_for_the_model)`: the copy receives
    `weights_of(old)` once the clone is built (the second may wrap the first).
    `input_width(nested_model, i)`, if given, is the channel count of the
    nested model's i-th input in the clone (when channels were removed).
    `rebuild(nested_model)`, if given, returns the copy of a nested model that
    is not cloned layer by layer (a KerasHub backbone: its builder,
    `kprune.registry.model_builders.model_builder`), or None to clone it.
    The result shares no variable with `model`.
    """
    copies = []

    def clone_function(layer):
        if not functional.is_layer(layer):
            return layer  # a keras.ops operation: stateless, reused as it is
        if functional.is_nested_graph(layer):
            rebuilt = rebuild(layer) if rebuild is not None else None
            return rebuilt if rebuilt is not None else clone_graph(layer, nested=True)
        copy, used = clone_layer(layer)
        copies.append((layer, copy))
        return used

    def clone_graph(graph_model, nested):
        input_tensors = None
        if nested and input_width is not None:
            input_tensors = [
                keras.Input(batch_shape=(*t.shape[:-1], input_width(graph_model, i)), dtype=t.dtype)
                for i, t in enumerate(graph_model.inputs)
            ]
            if isinstance(graph_model, keras.Sequential):
                input_tensors = input_tensors[0]
        return keras.models.clone_model(
            graph_model, input_tensors=input_tensors, clone_function=clone_function
        )

    clone = clone_graph(model, nested=False)
    for old, new in copies:
        values = weights_of(old)
        if len(values) != len(new.weights):
            raise ValueError(
                f"Could not copy the weights of layer {keras_layers.describe(old)}: the copy "
                f"has {len(new.weights)} weights, the original {len(values)}."
            )
        new.set_weights(values)
    return clone


def _weights(layer):
    if isinstance(layer, MaskedWrapper):
        return layer.masked_layer_weights()
    return layer.get_weights()


def check_model(model):
    """Raise unless `model` is Sequential or Functional (it can be cloned)."""
    if not functional.is_graph(model):
        raise ValueError(
            "Only Sequential and Functional models can be pruned as a whole: subclassed "
            f"models cannot be cloned. Received: model '{model.name}' of type "
            f"{type(model).__name__}. kprune.prune_low_magnitude(model) prunes such a "
            "model in place (and strip_pruning strips it); wrappers placed in its "
            "constructor by hand stay in it."
        )


def _check_not_wrapped(layer):
    if isinstance(layer, MaskedWrapper):
        raise ValueError(
            f"Layer '{layer.name}' is already wrapped by {type(layer).__name__}; a layer can "
            "be pruned only once. Call kprune.strip_pruning(model) first to re-prune "
            "with other settings."
        )


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    pruning_policy=None,
    sparsity_m_by_n=None,
    **kwargs,
):
    """Wrap a layer, a list of layers or a whole model for magnitude pruning.

    The same call as `tfmot.sparsity.keras.prune_low_magnitude`. Weights of
    prunable layers (Dense, Conv*, Embedding, RNNs, MultiHeadAttention, ...:
    see `kprune.registry.keras_layers`) get masks that `UpdatePruningStep` updates during
    `fit`; layers without weights and normalization layers are left as they
    are. A Sequential or Functional model whose layers kprune knows is
    cloned: the original keeps its weights and is not modified. Any other
    model -- a `keras.Model` subclass, or a model with layers that hold layers
    (a custom residual block, KerasHub's `TransformerEncoder`) -- is pruned in
    place and returned (`kprune.sparsity.in_place`): its prunable layers, reached
    through Keras' layer tracking, keep their weights, which masks held
    beside the model zero through the variables' constraints. Embedding
    tables and language-model heads (an untied `ReversibleEmbedding`'s
    `reverse_embeddings`) are pruned too, as tfmot does; a `pruning_policy`
    can leave them dense (see `kprune.sparsity.in_place`), and `kprune.summary` shows
    which rows are pruned.

    Args:
        to_prune: a Keras layer, a list of layers, or a model (built, if it
            is pruned in place).
        pruning_schedule: a `kprune.PruningSchedule`. Defaults to
            `ConstantSparsity(0.5, begin_step=0, frequency=100)`.
        block_size: `(r, c)` blocks over the last two axes of each weight,
            pruned as a unit. Defaults to `(1, 1)` (unstructured).
        block_pooling_type: `"AVG"` (default) or `"MAX"`: how blocks are scored.
        pruning_policy: a `kprune.PruningPolicy` (e.g.
            `kprune.PruneForLatencyOnXNNPack()`) that checks the model and
            chooses which of its prunable layers are wrapped; only when
            `to_prune` is a model. Defaults to `None` (every prunable layer).
        sparsity_m_by_n: `(m, n)`, e.g. `(2, 4)`: `m` zeros in every `n`
            consecutive weights (tfmot's reading) along the input-channel axis. The mask is
            computed once, before the first training step (tfmot's rule);
            the schedule is not used. Defaults to `None`.
        **kwargs: `PruneLowMagnitude` layer arguments (e.g. `name`); only when
            `to_prune` is a single layer.

    Returns:
        The wrapped layer, list or a new model (the model itself, if pruned
        in place).

    Raises:
        ValueError: for invalid arguments, an already pruned layer, or a layer
            with trainable weights kprune cannot prune (named in the message).

    Example:

    >>> import keras, kprune
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8),
    ...                           keras.layers.ReLU(), keras.layers.Dense(2)])
    >>> pruned = kprune.prune_low_magnitude(
    ...     model, pruning_schedule=kprune.PolynomialDecay(0.0, 0.8, 0, 100))
    >>> [type(layer).__name__ for layer in pruned.layers]
    ['PruneLowMagnitude', 'ReLU', 'PruneLowMagnitude']

    Only some layers, with `keras.models.clone_model`:

    >>> def clone_fn(layer):
    ...     if isinstance(layer, keras.layers.Dense) and layer.units > 2:
    ...         return kprune.prune_low_magnitude(layer)
    ...     return layer
    >>> partly = keras.models.clone_model(model, clone_function=clone_fn)
    """
    params = dict(
        pruning_schedule=pruning_schedule,
        block_size=block_size,
        block_pooling_type=block_pooling_type,
        sparsity_m_by_n=sparsity_m_by_n,
    )
    # Validate the arguments once, before any cloning.
    mask_math.check_pattern(block_size, block_pooling_type, sparsity_m_by_n)
    is_model = isinstance(to_prune, keras.Model) and not keras_layers.is_prunable_layer(to_prune)
    if pruning_policy is not None:
        if not isinstance(pruning_policy, PruningPolicy):
            raise TypeError(
                "Argument `pruning_policy` must be a kprune.PruningPolicy. "
                f"Received: pruning_policy={pruning_policy!r}"
            )
        if not is_model:
            raise ValueError(
                "Argument `pruning_policy` applies to a whole Sequential or Functional "
                "model. Received: pruning_policy="
                f"{type(pruning_policy).__name__} with to_prune={to_prune!r}"
            )

    if isinstance(to_prune, (list, tuple)):
        if kwargs:
            raise TypeError(
                "Layer arguments apply to a single layer only. Received: "
                f"{sorted(kwargs)} with a list of {len(to_prune)} layers"
            )
        return [prune_low_magnitude(layer, **params) for layer in to_prune]

    if is_model:
        if kwargs:
            raise TypeError(
                "Layer arguments apply to a single layer only. Received: "
                f"{sorted(kwargs)} with model '{to_prune.name}'"
            )
        leaves = list(_leaf_layers(to_prune)) if functional.is_graph(to_prune) else []
        if in_place.needs_in_place(to_prune, leaves):
            return in_place.prune(to_prune, pruning_policy=pruning_policy, **params)
        problems = []
        for layer in leaves:
            _check_not_wrapped(layer)
            if keras_layers.classify(layer) == "unsupported":
                problems.append(keras_layers.describe(layer))
        if problems:
            raise ValueError(
                f"Model '{to_prune.name}' has layers with trainable weights kprune cannot "
                f"prune: {', '.join(problems)}. Either implement kprune.PrunableLayer "
                "(`get_prunable_weights()`) for them, or prune only the supported "
                "layers with keras.models.clone_model(model, clone_function=...) "
                "(see the README)."
            )
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)

        def clone_layer(old):
            copy = copy_layer(old)
            if keras_layers.classify(old) == "prunable" and (
                pruning_policy is None or pruning_policy.allow_pruning(old)
            ):
                return copy, PruneLowMagnitude(copy, **params)
            return copy, copy

        return clone_with(to_prune, clone_layer, _weights)

    if not isinstance(to_prune, keras.layers.Layer):
        raise TypeError(
            "Argument `to_prune` must be a Keras layer, a list of layers or a "
            f"Sequential/Functional model. Received: to_prune={to_prune!r} "
            f"(of type {type(to_prune).__name__})"
        )
    _check_not_wrapped(to_prune)
    kind = keras_layers.classify(to_prune)
    if kind == "pass_through":
        return to_prune
    if kind == "unsupported":
        raise ValueError(
            f"Layer {keras_layers.describe(to_prune)} has trainable weights kprune cannot "
            "prune. Leave it unwrapped, or implement kprune.PrunableLayer "
            "(`get_prunable_weights()`) for it."
        )
    return PruneLowMagnitude(to_prune, **params, **kwargs)


def strip_pruning(model):
    """Return a plain Keras model with the pruning wrappers removed.

    The result holds no kprune class, its pruned weights are exactly 0, and its
    predictions equal the pruned model's. A cloned model is copied again and
    the input model is not modified; a model pruned in place (a subclassed
    model, ...) is returned itself, its pruned entries zeroed, its variables'
    own constraints restored and its masks dropped.

    Args:
        model: a model (or a single `PruneLowMagnitude` layer) from
            `prune_low_magnitude`.

    Returns:
        A new model (or layer) with fresh variables, or the model pruned in
        place.

    Example:

    >>> import keras, kprune
    >>> pruned = kprune.prune_low_magnitude(
    ...     keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    >>> [type(l).__name__ for l in kprune.strip_pruning(pruned).layers]
    ['Dense']
    """
    if isinstance(model, MaskedWrapper):
        layer = copy_layer(model)
        if model.layer.built:
            layer.set_weights(model.masked_layer_weights())
        return layer
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a Keras model or a PruneLowMagnitude layer. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    if in_place.targets_of(model):
        return in_place.strip(model)
    check_model(model)

    def clone_layer(old):
        copy = copy_layer(old)
        return copy, copy

    return clone_with(model, clone_layer, _weights)


def prune_scope():
    """A scope in which models saved with pruning wrappers load by class name.

    tfmot's `prune_scope`: `.h5` files (and configs) that name
    `PruneLowMagnitude`, `PruneChannels`, `ConstantSparsity`,
    `PolynomialDecay` or any other class kprune registers with Keras
    (`package="kprune"`) by its plain class name load inside it. For `.keras`
    files it changes nothing: they load without it.

    Returns:
        A `keras.saving.custom_object_scope`.

    Example:

    >>> import os, tempfile, warnings, keras, kprune
    >>> pruned = kprune.prune_low_magnitude(
    ...     keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    >>> path = os.path.join(tempfile.mkdtemp(), "pruned.h5")
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     pruned.save(path)
    ...     with kprune.prune_scope():
    ...         loaded = keras.models.load_model(path)
    >>> type(loaded.layers[0]).__name__
    'PruneLowMagnitude'
    """
    registered = {key.split(">", 1)[1]: obj for key, obj in keras.saving.get_custom_objects().items()
                  if key.startswith("kprune>")}
    return keras.saving.custom_object_scope(registered)
