"""`register_layer`: teach kprune a custom layer type without changing it.

The record it builds is a `kprune.registry.rules.LayerRule`, the same kind of record
kprune's built-in layers have (`kprune.registry.keras_layers`).
"""

import keras

from kprune.registry.quantize_specs import ROLES, QuantizeSpec
from kprune.registry.rules import ChannelSpec, LayerRule, PrunableWeight, block, register, variable

_CHANNEL_KINDS = ("pass", "merge", "concat", "block")


def _check_names(cls, argname, names):
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"Argument `{argname}` of register_layer({cls.__name__}) must be a list of "
            f"weight attribute names or a callable. Received: {argname}={names!r}"
        )
    return tuple(names)


def _prunable_rule(cls, prunable, input_axes):
    if prunable is None:
        return None
    if callable(prunable):
        def weights(layer):
            found = list(prunable(layer))
            axes = input_axes if input_axes is not None else [-2] * len(found)
            return [w if isinstance(w, PrunableWeight) else PrunableWeight(w, a)
                    for w, a in zip(found, axes)]
        return weights
    names = _check_names(cls, "prunable", prunable)
    axes = tuple(input_axes) if input_axes is not None else (-2,) * len(names)
    if len(axes) != len(names):
        raise ValueError(
            f"register_layer({cls.__name__}): `input_axes` needs one axis per prunable "
            f"weight. Received: prunable={list(names)}, input_axes={list(axes)}"
        )
    return lambda layer: [PrunableWeight(variable(layer, n), a) for n, a in zip(names, axes)]


def _slices(layer, mapping):
    out = []
    for name, axis in mapping.items():
        value = getattr(layer, name, None)
        if isinstance(value, keras.Variable):
            out.append((value, int(axis), 1))
    return tuple(out)


def _channel_rule(cls, channels):
    if channels is None or callable(channels):
        return channels
    if isinstance(channels, str):
        if channels not in _CHANNEL_KINDS:
            raise ValueError(
                f"Argument `channels` of register_layer({cls.__name__}) must be one of "
                f"{_CHANNEL_KINDS}, a dict with 'reads', 'writes' (and 'width'), or a "
                f"callable `(layer, input_shape) -> ChannelSpec`. Received: channels={channels!r}"
            )
        if channels == "block":
            return lambda layer, shape: block(f"registered as 'block' ({cls.__name__})")
        return lambda layer, shape: ChannelSpec(channels)
    if isinstance(channels, dict):
        unknown = set(channels) - {"reads", "writes", "width", "per_channel"}
        if unknown:
            raise ValueError(
                f"Argument `channels` of register_layer({cls.__name__}): unknown keys "
                f"{sorted(unknown)}; a dict takes 'reads' and 'writes' ({{weight name: axis}}, "
                f"a producer), 'width' (its config key), or 'per_channel' ({{weight name: "
                f"axis}}, a pass-through layer with per-channel weights). Received: {channels!r}"
            )
        if "per_channel" in channels:
            per_channel = channels["per_channel"]
            return lambda layer, shape: ChannelSpec("pass", out_slices=_slices(layer, per_channel))
        reads, writes = channels.get("reads", {}), channels.get("writes", {})
        width = channels.get("width")
        return lambda layer, shape: ChannelSpec(
            "producer", _slices(layer, reads), _slices(layer, writes), width)
    raise TypeError(
        f"Argument `channels` of register_layer({cls.__name__}) must be a string, a dict "
        f"or a callable. Received: channels={channels!r}"
    )


def _quantize_spec(cls, quantize):
    if quantize is None or isinstance(quantize, QuantizeSpec):
        return quantize
    if isinstance(quantize, str):
        quantize = {"role": quantize}
    if not isinstance(quantize, dict) or set(quantize) - {"role", "weights"} or quantize.get("role") not in ROLES:
        raise ValueError(
            f"Argument `quantize` of register_layer({cls.__name__}) must be one of the roles "
            f"{ROLES}, a dict {{'role': ..., 'weights': {{name: output-channel axis}}}} or a "
            f"kprune.registry.QuantizeSpec. Received: quantize={quantize!r}"
        )
    weights = []
    for name, axes in (quantize.get("weights") or {}).items():
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        if not isinstance(name, str) or not axes or not all(isinstance(a, int) for a in axes):
            raise ValueError(
                f"Argument `quantize` of register_layer({cls.__name__}): 'weights' maps a weight "
                f"attribute name to its output-channel axis (or axes). Received: {quantize!r}"
            )
        weights.append((name, axes))
    return QuantizeSpec(quantize["role"], tuple(weights))


def register_layer(cls, prunable=None, input_axes=None, channels=None, macs=None, quantize=None):
    """Teach kprune a layer type: what to prune, how channels flow, its MACs.

    Args:
        cls: the layer class (subclasses without a record of their own use it).
        prunable: the weights magnitude pruning may zero: a list of attribute
            names (e.g. `["kernel"]`) or a callable `layer -> [variable]`.
            Defaults to None (the layer stays dense).
        input_axes: per prunable weight, the axis that indexes input channels
            (M:N groups run along it). Defaults to -2 for every weight.
        channels: how the layer treats the channel (last) axis:
            `"pass"` (channel c in is channel c out), `"merge"` (elementwise
            over inputs, like Add), `"concat"`, `"block"` (channels reaching
            it are never pruned); a dict `{"reads": {name: axis}, "writes":
            {name: axis}, "width": config_key}` for a layer that makes new
            channels (Dense: reads kernel axis 0, writes kernel axis 1 and
            bias axis 0, width "units"); a dict `{"per_channel": {name: axis}}`
            for a pass-through layer with per-channel weights; or a callable
            `(layer, input_shape) -> ChannelSpec`. Defaults to None (block).
        macs: `(layer, input_shapes, output_shapes) -> int`, shapes with the
            batch axis. Defaults to None (0 MACs).
        quantize: how TFLite's int8 kernels treat the layer, for
            quantization-aware training (`kprune.quantization`): a role of
            `kprune.registry.QuantizeSpec` (`"requantize"`: output quantized,
            `"same_scale"`: nothing quantized, ...), or a dict `{"role":
            "producer", "weights": {name: output-channel axis}}` for a layer
            whose weights are quantized per channel, or a `QuantizeSpec`.
            Defaults to None (`quantize_model` refuses the layer unless it
            is given a `QuantizeConfig`).

    Returns:
        The `LayerRule` recorded.

    Example:

    >>> import keras, kprune
    >>> class MyDense(keras.layers.Dense):
    ...     pass
    >>> rule = kprune.register_layer(MyDense, prunable=["kernel"],
    ...     channels={"reads": {"kernel": 0}, "writes": {"kernel": 1, "bias": 0},
    ...               "width": "units"},
    ...     macs=lambda layer, ins, outs: ins[0][-1] * layer.units)
    >>> rule.macs(MyDense(4), [(None, 8)], [(None, 4)])
    32
    """
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise TypeError(f"Argument `cls` must be a Keras layer class. Received: cls={cls!r}")
    if macs is not None and not callable(macs):
        raise TypeError(
            f"Argument `macs` of register_layer({cls.__name__}) must be a callable "
            f"`(layer, input_shapes, output_shapes) -> int`. Received: macs={macs!r}"
        )
    rule = LayerRule(
        prunable=_prunable_rule(cls, prunable, input_axes),
        channels=_channel_rule(cls, channels),
        macs=macs,
        quantize=_quantize_spec(cls, quantize),
    )
    register(cls, rule)
    return rule
