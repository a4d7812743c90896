"""KerasHub attention layers with their head size given, not computed from the hidden size.

KerasHub's Llama, Qwen2 and Phi-3 attention layers compute
`head_dim = hidden_dim // num_query_heads` in `build`: after whole heads are
removed that quotient is no longer the head size. kprune's subclasses of
those layers take `head_dim` and build their projections with
`gqa_projections`:

    query:  (hidden, Hq, head_dim)     "bqm,muh->bquh"
    key:    (hidden, Hkv, head_dim)    "bkm,mvh->bkvh"
    value:  (hidden, Hkv, head_dim)    "bkm,mvh->bkvh"
    output: (Hq, head_dim, hidden)     "bquh,uhm->bqm"

(they and their decoder blocks take `head_dim`: `HeadDim`), and their
decoder blocks (`GivenHeadDim`) swap the stock attention layer
KerasHub's `build` makes, as it is assigned, for the subclass with the same
config and `head_dim`; the rest of KerasHub's `build` runs unchanged.

Example (an attention layer with 3 query heads of 4 channels over a hidden size of 16):

>>> from keras_hub.src.models.llama.llama_attention import LlamaAttention
>>> attention = LlamaAttention(num_query_heads=3, num_key_value_heads=1)
>>> [tuple(p.kernel.shape) for p in gqa_projections(attention, (None, None, 16), head_dim=4)]
[(16, 3, 4), (16, 1, 4), (16, 1, 4), (3, 4, 16)]
"""

import keras


def gqa_projections(attention, inputs_shape, head_dim, qkv_bias=False):
    """The built query, key, value and output `EinsumDense` layers of a
    grouped-query `attention` layer with heads of `head_dim` channels.

    Args:
        attention: the attention layer (its `num_query_heads`,
            `num_key_value_heads`, `kernel_initializer`, dtype policy and,
            with `qkv_bias`, `bias_initializer` are read).
        inputs_shape: the shape of its input, `(batch, length, hidden)`.
        head_dim: channels per head.
        qkv_bias: whether query, key and value have a bias per head channel
            (Qwen2); the output projection has none.
    """
    hidden_dim = inputs_shape[-1]

    def projection(equation, output_shape, bias_axes, name, shape):
        extra = dict(bias_axes=bias_axes, bias_initializer=attention.bias_initializer) if bias_axes else {}
        dense = keras.layers.EinsumDense(equation=equation, output_shape=output_shape,
                                         kernel_initializer=attention.kernel_initializer,
                                         dtype=attention.dtype_policy, name=name, **extra)
        dense.build(shape)
        return dense

    q_heads, kv_heads = attention.num_query_heads, attention.num_key_value_heads
    query = projection("bqm,muh->bquh", (None, q_heads, head_dim), "uh" if qkv_bias else None, "query",
                       inputs_shape)
    key = projection("bkm,mvh->bkvh", (None, kv_heads, head_dim), "vh" if qkv_bias else None, "key", inputs_shape)
    value = projection("bkm,mvh->bkvh", (None, kv_heads, head_dim), "vh" if qkv_bias else None, "value",
                       inputs_shape)
    output = projection("bquh,uhm->bqm", (None, hidden_dim), None, "attention_output",
                        (None, None, q_heads, head_dim))
    return query, key, value, output


class HeadDim:
    """A mixin for a KerasHub layer that takes `head_dim` (kept as an int,
    and in its config)."""

    def __init__(self, head_dim, **kwargs):
        super().__init__(**kwargs)
        self.head_dim = int(head_dim)

    def get_config(self):
        return {**super().get_config(), "head_dim": self.head_dim}


class GivenHeadDim(HeadDim):
    """A mixin for a KerasHub decoder block whose attention has a given `head_dim`.

    A subclass names the attribute KerasHub's `build` assigns the attention
    layer to (`attention_attribute`), the stock attention class
    (`stock_attention`) and kprune's subclass of it (`pruned_attention`,
    which takes `head_dim`); `pruned_from` makes the subclass from the
    stock layer's config (override it where that config does not round
    trip). Its `get_config` adds `head_dim`.
    """

    attention_attribute = "_self_attention_layer"
    stock_attention = None
    pruned_attention = None

    def __setattr__(self, name, value):
        if name == self.attention_attribute and type(value) is self.stock_attention:
            value = self.pruned_from(value)
        super().__setattr__(name, value)

    def pruned_from(self, stock):
        """kprune's attention layer with `stock`'s settings and this block's `head_dim`."""
        return self.pruned_attention.from_config({**stock.get_config(), "head_dim": self.head_dim})
