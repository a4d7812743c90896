"""What kprune knows of one KerasHub backbone family, and the helpers its config makers and subclasses share.

A family (`Family`) tells `kprune.transformers.hub_rebuild` how to rebuild a
backbone of that family smaller: the name of its FFN down projection (whose
input axis counts the FFN units), a `stock` function giving the stock
class's config for the new widths (or None when that config cannot say
them), and a `pruned` function giving kprune's registered subclass and its
config, which can. Each `hub_*` module declares the families of its
subclasses in a `FAMILIES` dict keyed by the stock class's qualified name.
The subclasses share their argument checks (`check_query_heads`,
`cache_query_heads`), their inputs (`backbone_inputs`) and the attributes
they set as the stock classes do (`set_widths`).

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
>>> cache_query_heads("Backbone", hidden_dim=16, head_dim=4)  # the head count of hidden_dim // 4 = 4
4
"""

from typing import Callable, NamedTuple

import keras

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
        hidden: whether `stock`/`pruned` build the new hidden size
            (`BlockWidths.hidden`, from `hidden_width`); a family without it
            refuses a pruned hidden size.
    """

    ffn_output: str
    stock: Callable
    pruned: Callable
    pruned_class: type
    tasks: dict = {}
    hidden: bool = False


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


def hidden_width(backbone, widths):
    """The hidden size the pruned blocks read (`BlockWidths.hidden`), or
    `backbone.hidden_dim` when the widths do not say it."""
    hidden = uniform(w.hidden for w in widths) if widths else None
    return backbone.hidden_dim if hidden is None else hidden


def base_config(backbone, names, widths=None):
    """The config entries every kprune subclass takes from `backbone`: its
    attributes `names`, and its name, dtype, vocabulary and hidden sizes (the
    hidden size of `widths` when given: `hidden_width`)."""
    config = {name: getattr(backbone, name) for name in names}
    config.update(name=backbone.name, trainable=backbone.trainable, dtype=backbone.dtype_policy.name,
                  vocabulary_size=backbone.vocabulary_size, hidden_dim=hidden_width(backbone, widths))
    return config


def stock_config(backbone, pruned_class, kept, **keys):
    """`backbone`'s stock config for the blocks `kept`, with `keys` set; None
    when `backbone` is already kprune's subclass `pruned_class` (its config
    differs from the stock one)."""
    if pruned_class is not None and isinstance(backbone, pruned_class):
        return None
    return {**backbone.get_config(), "num_layers": len(kept), **keys}


def check_query_heads(owner, layer_query_heads, num_key_value_heads):
    """Raise unless every layer's query heads are a multiple of the key/value heads."""
    for heads in layer_query_heads:
        if heads % num_key_value_heads:
            raise ValueError(
                f"Argument `layer_query_heads` of {owner} must hold multiples of num_key_value_heads="
                f"{num_key_value_heads}. Received: layer_query_heads={layer_query_heads}"
            )


def cache_query_heads(owner, hidden_dim, head_dim):
    """The `num_query_heads` a subclass reports so that a stock causal LM that
    sizes its KV cache with `hidden_dim // num_query_heads` (Llama, Qwen2,
    Phi-3) gets `head_dim`: `hidden_dim // head_dim`, the query heads of the
    model it was pruned from. Raises when no count gives `head_dim`."""
    heads = hidden_dim // head_dim if 0 < head_dim <= hidden_dim else 0
    if not heads or hidden_dim // heads != head_dim:
        raise ValueError(
            f"Argument `head_dim` of {owner} must be in [1, hidden_dim] and such that "
            f"hidden_dim // (hidden_dim // head_dim) == head_dim (KerasHub's causal LM sizes its KV cache "
            f"with hidden_dim // num_query_heads). Received: head_dim={head_dim}, hidden_dim={hidden_dim}"
        )
    return heads


def backbone_inputs():
    """The symbolic `token_ids` and `padding_mask` inputs of a decoder backbone."""
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    return token_ids, padding_mask


def set_widths(backbone, vocabulary_size, hidden_dim, head_dim, num_key_value_heads, layer_query_heads,
               layer_intermediate_dims, layer_norm_epsilon, dropout):
    """Set the attributes a subclass sets as its stock class does; the stock
    names of one width (`num_query_heads`, `intermediate_dim`) hold the widest
    layer's (a subclass whose causal LM reads `num_query_heads` for its cache
    overrides it with `cache_query_heads`)."""
    backbone.vocabulary_size = vocabulary_size
    backbone.num_layers = len(layer_query_heads)
    backbone.hidden_dim = hidden_dim
    backbone.head_dim = int(head_dim)
    backbone.num_key_value_heads = num_key_value_heads
    backbone.layer_query_heads = layer_query_heads
    backbone.layer_intermediate_dims = layer_intermediate_dims
    backbone.num_query_heads = max(layer_query_heads)
    backbone.intermediate_dim = max(layer_intermediate_dims)
    backbone.layer_norm_epsilon = layer_norm_epsilon
    backbone.dropout = dropout
