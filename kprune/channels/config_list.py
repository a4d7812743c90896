"""NNI's `config_list` vocabulary, mapped onto kprune's channel arguments.

Users who come from NNI describe what to prune as a list of dicts::

    [{"sparsity": 0.5, "op_types": ["Conv2D"]},
     {"exclude": True, "op_names": ["fc3"]}]

`channel_arguments(graph, config_list)` turns such a list into the arguments
kprune's own functions take (`sparsity`, `ratios`, `exclude`,
`global_ranking`) plus per-layer caps for the searches; `plan_channels`,
`prune_channels` and the searches accept `config_list=` and call it.

Keys (NNI v2 names): selectors `op_types` (Keras class names such as
"Conv2D", "Dense", "DepthwiseConv2D"; NNI's "Conv2d"/"Linear" and "default"
= every prunable layer are accepted too), `op_names`, `op_partial_names`
(substrings); targets `sparsity` (an alias of `sparsity_per_layer`: the
fraction of each matched layer's output channels to prune),
`total_sparsity` (one fraction for all matched layers together, ranked
globally), `max_sparsity_per_layer` (a cap per matched layer, with
`total_sparsity`); and `exclude: True`. A config with several selector keys
matches the layers that satisfy all of them; later configs override earlier
ones for the layers they match; layers matched by no config keep their width,
as in NNI. Only layers that write a prunable channel group can be matched.

Example:

>>> import keras
>>> from kprune.dependency.channel_graph import ChannelGraph
>>> model = keras.Sequential([keras.Input((8, 8, 3)),
...     keras.layers.Conv2D(16, 3, name="c1"), keras.layers.Conv2D(16, 3, name="c2"),
...     keras.layers.Flatten(), keras.layers.Dense(32, name="fc1"),
...     keras.layers.Dense(10, name="fc3")])
>>> args = channel_arguments(ChannelGraph(model), [
...     {"sparsity": 0.5, "op_types": ["Conv2D"]},
...     {"sparsity": 0.25, "op_names": ["fc1"]},
...     {"exclude": True, "op_names": ["fc3"]}])
>>> args["ratios"], args["exclude"]
({'c1': 0.5, 'c2': 0.5, 'fc1': 0.25}, ())
"""

SELECTORS = ("op_types", "op_names", "op_partial_names")
TARGETS = ("sparsity", "sparsity_per_layer", "total_sparsity")
KNOWN_KEYS = SELECTORS + TARGETS + ("max_sparsity_per_layer", "exclude")
# NNI (PyTorch) type names and their Keras counterparts.
TYPE_ALIASES = {
    "Conv1d": "Conv1D",
    "Conv2d": "Conv2D",
    "Conv3d": "Conv3D",
    "ConvTranspose2d": "Conv2DTranspose",
    "Linear": "Dense",
}


def _fraction(where, key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"config_list[{where}]['{key}'] must be a number in [0, 1). Received: {key}={value!r}"
        )
    return float(value)


def _names(where, key, value):
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
        isinstance(v, str) for v in value
    ):
        raise ValueError(
            f"config_list[{where}]['{key}'] must be a list of strings. Received: {key}={value!r}"
        )
    return list(value)


def check_config_list(config_list):
    """Validate the shape of a config_list; returns it as a list of dicts.

    Example:

    >>> check_config_list([{"sparsity": 0.5, "op_type": ["Conv2D"]}])
    Traceback (most recent call last):
    ...
    ValueError: config_list[0] has unknown key 'op_type'. Known keys: op_types, op_names, ...
    """
    if isinstance(config_list, dict) or not isinstance(config_list, (list, tuple)):
        raise ValueError(
            "Argument `config_list` must be a list of dicts (NNI's format). "
            f"Received: config_list={config_list!r}"
        )
    configs = []
    for i, config in enumerate(config_list):
        if not isinstance(config, dict):
            raise ValueError(f"config_list[{i}] must be a dict. Received: {config!r}")
        for key in config:
            if key not in KNOWN_KEYS:
                raise ValueError(
                    f"config_list[{i}] has unknown key {key!r}. Known keys: {', '.join(KNOWN_KEYS)}."
                )
        if not any(k in config for k in SELECTORS):
            raise ValueError(
                f"config_list[{i}] selects no layer: give 'op_types', 'op_names' or "
                f"'op_partial_names'. Received: {config!r}"
            )
        for key in SELECTORS:
            if key in config:
                _names(i, key, config[key])
        exclude = config.get("exclude", False)
        if not isinstance(exclude, bool):
            raise ValueError(f"config_list[{i}]['exclude'] must be True or False. Received: {exclude!r}")
        targets = [k for k in TARGETS if k in config]
        if exclude and (targets or "max_sparsity_per_layer" in config):
            raise ValueError(
                f"config_list[{i}] excludes layers and also gives {targets or ['max_sparsity_per_layer']}: "
                "an exclude config takes selectors only."
            )
        if not exclude and len(targets) != 1:
            raise ValueError(
                f"config_list[{i}] must give exactly one of 'sparsity', 'sparsity_per_layer', "
                f"'total_sparsity' (or 'exclude': True). Received keys: {sorted(config)}"
            )
        for key in targets + (["max_sparsity_per_layer"] if "max_sparsity_per_layer" in config else []):
            _fraction(i, key, config[key])
        if "max_sparsity_per_layer" in config and "total_sparsity" not in config:
            raise ValueError(
                f"config_list[{i}]: 'max_sparsity_per_layer' caps the layers of a 'total_sparsity' "
                "config; with 'sparsity' each layer already gets exactly its value."
            )
        configs.append(dict(config))
    totals = {c["total_sparsity"] for c in configs if "total_sparsity" in c}
    if len(totals) > 1:
        raise ValueError(
            "config_list gives different 'total_sparsity' values "
            f"{sorted(totals)}: kprune ranks one global pool. Use one value."
        )
    return configs


def _matches(config, name, type_name):
    types = config.get("op_types")
    if types is not None:
        wanted = {TYPE_ALIASES.get(t, t) for t in types}
        if "default" not in wanted and type_name not in wanted:
            return False
    if "op_names" in config and name not in config["op_names"]:
        return False
    if "op_partial_names" in config and not any(p in name for p in config["op_partial_names"]):
        return False
    return True


def resolve(config_list, groups, layer_names):
    """Map a config_list onto channel groups (pure: no model needed).

    Args:
        config_list: NNI-style list of dicts (see the module docstring).
        groups: one list of `(layer_name, class_name)` per prunable channel
            group: the layers that write its channels.
        layer_names: every layer name of the model (exclude configs may name
            layers that cannot be pruned, such as the classifier).

    Returns:
        A dict with `sparsity`, `ratios` (`{layer: sparsity}`), `exclude`
        (layer names that keep their width), `global_ranking`, `max_ratios`
        (`{layer: cap}`) and `total_sparsity` (or None).

    Example:

    >>> groups = [[("a", "Conv2D")], [("b", "Conv2D"), ("c", "Conv2D")], [("d", "Dense")]]
    >>> r = resolve([{"total_sparsity": 0.4, "max_sparsity_per_layer": 0.8,
    ...               "op_types": ["Conv2D"]}], groups, ["a", "b", "c", "d", "head"])
    >>> r["sparsity"], r["global_ranking"], r["exclude"], r["max_ratios"]
    (0.4, True, ('d',), {'a': 0.8, 'b': 0.8, 'c': 0.8})
    """
    configs = check_config_list(config_list)
    producers = [(name, kind) for group in groups for name, kind in group]
    known = set(layer_names)
    prunable = {name for name, _ in producers}
    target = {}  # layer -> ("layer", s) | ("total", s) | ("exclude",)
    caps = {}
    for i, config in enumerate(configs):
        for name in config.get("op_names", ()):
            if name not in known:
                raise ValueError(f"config_list[{i}]['op_names'] names '{name}', which is not a layer of the model.")
            if name not in prunable and not config.get("exclude"):
                raise ValueError(
                    f"config_list[{i}]['op_names'] names '{name}', whose output channels cannot be "
                    "pruned (they reach a model output or a layer without a channel rule, or it "
                    "makes no channels of its own). Exclude it or remove it from the config."
                )
        matched = [name for name, kind in producers if _matches(config, name, kind)]
        if not matched and not config.get("exclude"):
            raise ValueError(
                f"config_list[{i}] matches no prunable layer. Received: {config!r}. Prunable "
                f"layers: {', '.join(f'{n} ({k})' for n, k in producers) or 'none'}."
            )
        for name in matched:
            if config.get("exclude"):
                target[name] = ("exclude",)
                caps.pop(name, None)
            elif "total_sparsity" in config:
                target[name] = ("total", config["total_sparsity"])
                if "max_sparsity_per_layer" in config:
                    caps[name] = float(config["max_sparsity_per_layer"])
            else:
                key = "sparsity" if "sparsity" in config else "sparsity_per_layer"
                target[name] = ("layer", float(config[key]))
                caps.pop(name, None)
    ratios = {name: t[1] for name, t in target.items() if t[0] == "layer"}
    totals = [t[1] for t in target.values() if t[0] == "total"]
    exclude = [name for name, t in target.items() if t[0] == "exclude"]
    for group in groups:  # a group no config reaches keeps its width, as in NNI
        if not any(name in target and target[name][0] != "exclude" for name, _ in group):
            exclude.extend(name for name, _ in group if name not in exclude)
    order = {name: k for k, (name, _) in enumerate(producers)}
    return {
        "sparsity": float(totals[0]) if totals else 0.0,
        "ratios": dict(sorted(ratios.items(), key=lambda kv: order[kv[0]])),
        "exclude": tuple(sorted(exclude, key=lambda n: order.get(n, len(order)))),
        "global_ranking": bool(totals),
        "max_ratios": dict(sorted(caps.items(), key=lambda kv: order[kv[0]])),
        "total_sparsity": float(totals[0]) if totals else None,
    }


def prunable_groups(graph):
    """`[(layer_name, class_name), ...]` per prunable group of a `ChannelGraph`."""
    groups = []
    for group in graph.prunable_groups:
        names = group.producers
        if not names:
            continue
        kinds = {u.layer.name: type(u.layer).__name__ for u in group.usages}
        groups.append([(name, kinds[name]) for name in names])
    return groups


def channel_arguments(graph, config_list):
    """`resolve` for the model of a `ChannelGraph` (see the module example)."""
    names = set()
    for node_layer in graph.model.layers if hasattr(graph.model, "layers") else ():
        names.add(node_layer.name)
    names.update(u.layer.name for u in graph.usages)
    return resolve(config_list, prunable_groups(graph), sorted(names))


def from_config_list(graph, config_list, sparsity, ratios, exclude, global_ranking):
    """`(sparsity, ratios, exclude, global_ranking)` from an NNI config_list, which
    replaces those arguments (passing both is an error)."""
    if sparsity is not None or ratios or exclude or global_ranking:
        raise ValueError(
            "Pass either `config_list` or `sparsity`/`ratios`/`exclude`/`global_ranking`, not "
            f"both. Received: config_list={config_list!r} with sparsity={sparsity!r}, "
            f"ratios={ratios!r}, exclude={exclude!r}, global_ranking={global_ranking!r}"
        )
    args = channel_arguments(graph, config_list)
    if args["max_ratios"]:
        raise ValueError(
            "config_list key 'max_sparsity_per_layer' caps layers in the searches "
            "(kprune.simulated_annealing, kprune.netadapt, kprune.sensitivity); a one-shot plan "
            "ranks globally without caps. Remove it, or give per-layer 'sparsity' values."
        )
    return args["sparsity"], args["ratios"], args["exclude"], args["global_ranking"]
