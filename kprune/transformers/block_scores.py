"""Which transformer blocks matter: the depth criteria, and `plan_blocks`.

The criteria read the residual stream before and after every block on
calibration data (one forward pass, the hidden states the model already
computes):

* `"block_influence"` -- ShortGPT (Men et al., "ShortGPT: Layers in Large
  Language Models are More Redundant Than You Expect", 2024): `BI_i = 1 -
  E_t cos(x_i[t], x_{i+1}[t])` over the tokens (padding left out) of block
  i's input and output; the blocks with the lowest BI go, wherever they are.
* `"angular"` -- Gromov et al., "The Unreasonable Ineffectiveness of the
  Deeper Layers" (2024): `d(l, n) = arccos(cos(x_l[T], x_{l+n}[T])) / pi` at
  each sequence's last token, averaged; the `n` contiguous blocks starting at
  the `l` that minimises it go. A block's score is the distance of the window
  of `n` blocks that starts at it (lower: removed first).
* `"random"`: seeded random scores, the baseline.

Example (the cosine statistics against NumPy):

>>> x = np.array([[[1.0, 0.0], [0.0, 1.0]]])
>>> y = np.array([[[1.0, 0.0], [1.0, 0.0]]])
>>> float(block_influence_of(x, y, np.ones((1, 2))))
0.5
>>> round(float(angular_of(x, y, np.ones((1, 2)))), 4)
0.5
"""

import keras
import numpy as np

from kprune.criteria.importance import batches
from kprune.transformers.blocks import hub_backbone, transformer_blocks
from kprune.transformers.depth import BlockPlan

BLOCK_CRITERIA = ("block_influence", "angular", "random")


def _cosine(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def block_influence_of(x, y, mask):
    """`1 - mean cos(x[t], y[t])` over the tokens where `mask` is 1 (arrays
    `(batch, tokens, hidden)`, mask `(batch, tokens)`)."""
    cos = _cosine(x, y)
    return 1.0 - (cos * mask).sum() / max(mask.sum(), 1)


def _last(x, mask):
    """Each sequence's last unpadded token: `(batch, hidden)`."""
    last = np.maximum(mask.astype(np.int64).sum(-1) - 1, 0)
    return x[np.arange(len(x)), last]


def angular_of(x, y, mask):
    """`mean arccos(cos(x[T], y[T])) / pi` at each sequence's last token."""
    cos = np.clip(_cosine(_last(x, mask), _last(y, mask)), -1.0, 1.0)
    return float(np.mean(np.arccos(cos) / np.pi))


def _probe(model):
    """`(probe model, blocks)`: a model from the inputs of the graph holding
    the blocks to the residual stream before every block and after the last."""
    blocks = transformer_blocks(model)
    holder = hub_backbone(model) or model
    outputs = [b.stream_in for b in blocks] + [blocks[-1].stream_out]
    return keras.Model(holder.input, outputs), blocks


def _mask_of(x, first):
    if isinstance(x, dict) and "padding_mask" in x:
        return np.asarray(keras.ops.convert_to_numpy(x["padding_mask"]), np.float64)
    return np.ones(first.shape[:2])


def stream_states(model, data):
    """`(states, masks)`: the residual stream at every block boundary, per batch
    of `data` (`states[k][b]`: boundary b of batch k)."""
    probe, blocks = _probe(model)
    states, masks = [], []
    for x, _ in batches(data, with_targets=False):
        outputs = [keras.ops.convert_to_numpy(o) for o in probe(x, training=False)]
        states.append(outputs)
        masks.append(_mask_of(x, outputs[0]))
    if not states:
        raise ValueError("Argument `data` holds no examples.")
    return states, masks, blocks


def block_importance(model, data=None, importance="block_influence", num_blocks=1, seed=0):
    """One score per transformer block of `model` (higher: kept).

    Args:
        model: a KerasHub backbone or task, or a Functional model with residual blocks.
        data: calibration inputs (what the model or its backbone takes: a
            dict `{"token_ids", "padding_mask"}` of arrays for KerasHub, or
            a `tf.data.Dataset` of such batches). Not needed for "random".
        importance: one of `BLOCK_CRITERIA`. Defaults to "block_influence".
        num_blocks: the window length of "angular". Defaults to 1.
        seed: the seed of "random". Defaults to 0.

    Returns:
        `(scores, blocks)`: a float array, one per block, and the `Block`s.
    """
    if importance not in BLOCK_CRITERIA:
        raise ValueError(
            f"Argument `importance` must be one of {BLOCK_CRITERIA}. Received: importance={importance!r}"
        )
    if importance == "random":
        blocks = transformer_blocks(model)
        return np.random.default_rng(seed).random(len(blocks)), blocks
    if data is None:
        raise ValueError(f"Importance {importance!r} measures the model on data: pass `data=`. Received: data=None")
    states, masks, blocks = stream_states(model, data)
    count = len(blocks)
    if importance == "block_influence":
        scores = [np.mean([block_influence_of(s[i], s[i + 1], m) for s, m in zip(states, masks)])
                  for i in range(count)]
        return np.asarray(scores, np.float64), blocks
    scores = np.full(count, np.inf)
    for start in range(count - num_blocks + 1):
        scores[start] = np.mean([angular_of(s[start], s[start + num_blocks], m) for s, m in zip(states, masks)])
    return scores, blocks


def plan_blocks(model, num_blocks, importance="block_influence", data=None, seed=0):
    """Choose `num_blocks` transformer blocks to remove.

    Args:
        model: a KerasHub backbone or task, or a Functional model with residual blocks.
        num_blocks: how many blocks go (at least one block stays).
        importance: `"block_influence"` (default: the lowest-BI blocks),
            `"angular"` (the contiguous window of the smallest angular
            distance) or `"random"`.
        data: calibration inputs (see `block_importance`).
        seed: the seed of `"random"`.

    Returns:
        A `BlockPlan`; apply it with `mask_blocks` or `remove_blocks`.

    Example:

    >>> x = keras.Input((4, 8))
    >>> h = x
    >>> for i in range(3):
    ...     h = keras.layers.Add(name=f"add{i}")([h, keras.layers.Dense(8, name=f"fc{i}")(h)])
    >>> plan = plan_blocks(keras.Model(x, h), 1, importance="random")
    >>> len(plan.removed), [b["name"] for b in plan.blocks]
    (1, ['fc0', 'fc1', 'fc2'])
    """
    blocks = transformer_blocks(model)
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or not 0 <= num_blocks < len(blocks):
        raise ValueError(
            f"Argument `num_blocks` must be an integer in [0, {len(blocks)}) (model '{model.name}' has "
            f"{len(blocks)} blocks; one must stay). Received: num_blocks={num_blocks!r}"
        )
    scores, blocks = block_importance(model, data, importance, max(num_blocks, 1), seed)
    if importance == "angular":
        start = int(np.argmin(scores)) if num_blocks else 0
        removed = list(range(start, start + num_blocks))
    else:
        removed = sorted(np.argsort(scores, kind="stable")[:num_blocks].tolist())
    entries = [{"index": b.index, "name": b.name, "score": float(s) if np.isfinite(s) else None}
               for b, s in zip(blocks, scores)]
    return BlockPlan(entries, removed, importance)
