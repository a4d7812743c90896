"""The hidden size as an opt-in: what `plan_channels(..., hidden=...)` checks and says.

A transformer's residual stream is read by its normalizations, so removing
some of its channels is never output-equivalent: each normalization computes
its statistics over the kept channels only (and Gemma scales its embeddings
by `sqrt(hidden_dim)`, the new one). `kprune.plan_channels` prunes it only
when asked (`hidden=`, a fraction), reading the model with
`ChannelGraph(model, hidden=True)`; this module holds the two things it does
then besides planning: `check_hidden_groups` refuses a model whose hidden
size cannot be pruned (no normalization reads the stream -- then the stream
is an ordinary channel group, which `sparsity` prunes exactly -- or its
group is blocked), and `warn_hidden` says, once per plan, that the result
needs healing.

Example:

>>> import keras
>>> from kprune.dependency.channel_graph import ChannelGraph
>>> x = keras.Input((6, 4))
>>> h = keras.layers.Dense(8, name="embed")(x)
>>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Add()([h, keras.layers.Dense(8)(h)])))
>>> check_hidden_groups(ChannelGraph(model, hidden=True), model, 0.25)
Traceback (most recent call last):
...
ValueError: Argument `hidden` asks to prune the hidden size of model '...', but no normalization \
reads its channels: a residual stream without normalizations is an ordinary channel group, which \
`sparsity` prunes (output-equivalently). Received: hidden=0.25
"""

from kprune.utils import user_warnings

HIDDEN_WARNING = (
    "plan_channels(..., hidden=...) removes channels of the hidden size (the residual stream) of model "
    "'{name}': the smaller model is NOT output-equivalent to the dense one, nor to the masked one "
    "(every normalization computes its statistics over fewer channels; Gemma also scales its "
    "embeddings by sqrt(hidden_dim)). It needs healing: distil it from the dense model "
    "(kprune.distiller; see 'Healing' in the transformers guide) before you use it."
)


def check_hidden_groups(graph, model, hidden):
    """Raise unless `graph` (read with `hidden=True`) has a hidden-size group
    that can be pruned; `hidden` is the fraction asked for (for the message)."""
    groups = [g for g in graph.groups if g.unit == "hidden"]
    if not groups:
        raise ValueError(
            f"Argument `hidden` asks to prune the hidden size of model '{model.name}', but no "
            "normalization reads its channels: a residual stream without normalizations is an "
            f"ordinary channel group, which `sparsity` prunes (output-equivalently). Received: hidden={hidden}"
        )
    if all(g.blocked for g in groups):
        raise ValueError(
            f"Argument `hidden` asks to prune the hidden size of model '{model.name}', but its "
            f"channels cannot be pruned: {groups[0].blocked}. Received: hidden={hidden}"
        )


def warn_hidden(model):
    """The `UserWarning` of a plan that prunes `model`'s hidden size (at the user's line)."""
    user_warnings.warn(HIDDEN_WARNING.format(name=model.name), UserWarning)
