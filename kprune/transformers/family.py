"""What kprune knows of one KerasHub backbone family, and the helpers its config makers share.

A family (`Family`) tells `kprune.transformers.hub_rebuild` how to rebuild a
backbone of that family smaller: the name of its FFN down projection (whose
input axis counts the FFN units), a `stock` function giving the stock
class's config for the new widths (or None when that config cannot say
them), and a `pruned` function giving kprune's registered subclass and its
config, which can. Each `hub_*` module declares the families of its
subclasses in a `FAMILIES` dict keyed by the stock class's qualified name.

Example (a Llama 3 whose FFN kept 4 units of 8 in each of its 2 layers):

>>> import keras_hub
>>> from kprune.transformers.widths import BlockWidths
>>> backbone = keras_hub.models.Llama3Backbone(vocabulary_size=32, num_layers=2,
...     num_query_heads=4, num_key_value_heads=2, hidden_dim=16, intermediate_dim=8)
>>> widths = [BlockWidths(query_heads=4, kv_heads=2, head_dim=4, ffn=4)] * 2
>>> uniform_widths(widths)
(4, 2, 4)
>>> stock_config(backbone, None, [0, 1], intermediate_dim=4)["intermediate_dim"]
4
"""

from typing import Callable, NamedTuple

from kprune.transformers.widths import uniform


class Family(NamedTuple):
    """What kprune knows of one KerasHub backbone family.

    Attributes:
        ffn_output: name of the FFN's down projection inside a block.
        stock: `(backbone, widths, kept) -> config or None`: the stock
            class's config for these widths, or None if it cannot say them.
        pruned: `(backbone, widths, kept) -> (class, config)`: kprune's
            subclass and its config.
        pruned_class: kprune's subclass (a model of it is never rebuilt
            with the stock class: their configs differ).
        tasks: `{task class: kprune's task class}` for tasks that cannot
            hold the pruned backbone as they are (GPT-2's cache).
    """

    ffn_output: str
    stock: Callable
    pruned: Callable
    pruned_class: type
    tasks: dict = {}


def uniform_widths(widths):
    """`(query heads, kv heads, ffn units)` when every layer has the same, else Nones."""
    return tuple(uniform(getattr(w, k) for w in widths) for k in ("query_heads", "kv_heads", "ffn"))


def one_kv(backbone, widths):
    """The key/value head count every pruned layer keeps (KerasHub's causal
    LMs keep one KV cache for every layer); raises when they differ."""
    kv = uniform(w.kv_heads for w in widths)
    if kv is None:
        raise ValueError(
            f"The pruned layers of backbone '{backbone.name}' keep different numbers of key/value "
            f"heads ({[w.kv_heads for w in widths]}); KerasHub's causal LMs keep one KV cache for every "
            "layer, so they must keep the same. Prune key/value groups with local ranking "
            "(global_ranking=False) or prune query heads (heads='query')."
        )
    return kv


def base_config(backbone, names):
    """The config entries every kprune subclass takes from `backbone`: its
    attributes `names`, and its name, dtype, vocabulary and hidden sizes."""
    config = {name: getattr(backbone, name) for name in names}
    config.update(name=backbone.name, trainable=backbone.trainable, dtype=backbone.dtype_policy.name,
                  vocabulary_size=backbone.vocabulary_size, hidden_dim=backbone.hidden_dim)
    return config


def stock_config(backbone, pruned_class, kept, **keys):
    """`backbone`'s stock config for the blocks `kept`, with `keys` set; None
    when `backbone` is already kprune's subclass `pruned_class` (its config
    differs from the stock one)."""
    if pruned_class is not None and isinstance(backbone, pruned_class):
        return None
    return {**backbone.get_config(), "num_layers": len(kept), **keys}
