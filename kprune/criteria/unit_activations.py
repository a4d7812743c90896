"""Data criteria from what each unit's readers read: Minitron's activations and FLAP's fluctuation.

A unit of a channel group (a channel, an FFN unit, an attention head) is read
by the layers holding its `"in"` slices: an FFN unit by the down projection
(its input channel), a head by the attention's output projection (its
`head_dim` input channels). On calibration data, each such layer's input is
recorded (`kprune._internal.functional.recording_inputs`, inside KerasHub
blocks too) along the axis that indexes the unit
(`kprune.registry.queries.reader_input_axis`), and summarised per unit:

* `"activation"` -- Minitron (Muralidharan et al., "Compact Language Models
  via Pruning and Knowledge Distillation", 2024; NVIDIA ModelOpt): per
  example, the mean over tokens of each unit's magnitude (`|x|` for a
  channel, the L2 norm over `head_dim` for a head), then the L2 norm over
  examples: `a_u = sqrt(sum_b (mean_t |x_btu|)^2)`.
* `"fluctuation"` -- FLAP (An et al., "Fluctuation-based Adaptive Structured
  Pruning for Large Language Models", AAAI 2024): the variance over tokens
  of each input channel times the squared norm of the reader's weights for
  it, `S_j = Var_t(x_j) * ||W_j||^2`, averaged over a head's channels.
* `"flap"` -- FLAP's metric as its reference code ranks it (`prune_flap`):
  `S_j` (squared for a head's channels), z-scored over the reader's input
  channels (`(S - mean) / std`, `ddof=1`: FLAP's per-layer standardization),
  then averaged over a unit's channels (a head's `head_dim`; a key/value
  group's query heads). These scores are comparable across layers as they
  are (`standardized`), which global ranking keeps; FLAP's selection of heads
  and FFN units for one parameter budget is `global_ranking="pooled"`
  (`kprune.channels.planning`), its bias compensation `compensate=` of
  `mask_channels`/`remove_channels` (`kprune.channels.compensation`).

A unit read by several layers sums their scores; a group none of whose
readers can be recorded scores None (left whole).

Example (one Dense layer reading 3 channels):

>>> import keras, numpy as np
>>> from kprune.dependency.channel_graph import ChannelGraph
>>> x = keras.Input((2, 3))
>>> model = keras.Model(x, keras.layers.Dense(1, name="out")(keras.layers.Dense(3, name="up")(x)))
>>> graph = ChannelGraph(model)
>>> data = np.random.default_rng(0).normal(size=(8, 2, 3)).astype("float32")
>>> scores = ActivationCriterion("activation", data).bind(model)(graph, graph.prunable_groups[0])
>>> scores.shape
(3,)
"""

import keras
import numpy as np

from kprune._internal import functional
from kprune.criteria.importance import DataCriterion, batches
from kprune.dependency.unit_space import rows_of
from kprune.registry import queries


def _readers(graph):
    """`{id(layer): [(group, usage, variable, kernel axis, repeat, input axis)]}`."""
    found = {}
    for group in graph.groups:
        if group.blocked or not group.producers:
            continue
        for usage in group.usages:
            if usage.role != "in":
                continue
            variable, axis, repeat = usage.slices[0]
            reader = queries.weight_owner(usage.layer, variable)
            input_axis = queries.reader_input_axis(reader, variable, axis)
            if input_axis is not None:
                found.setdefault(id(reader), []).append((reader, group, usage, variable, axis, repeat, input_axis))
    return found


class _Statistics:
    """Per-position sums over the recorded inputs of one reader (positions
    along its input axis: channels, or heads with their `head_dim` inside)."""

    def __init__(self):
        self.count = 0  # examples
        self.tokens = 0
        self.sum_sq_mean = None  # sum_b (mean_t ||x_btu||)^2
        self.sum = None  # sum_bt x_btc (per channel)
        self.sum_sq = None  # sum_bt x_btc^2

    def add(self, x, axis):
        """Add a recorded input `x` whose axis `axis` indexes the units (the
        axes after it, a head's `head_dim`, are inside a unit)."""
        x = np.asarray(keras.ops.convert_to_numpy(x), np.float64)
        axis %= x.ndim
        units, inner = x.shape[axis], int(np.prod(x.shape[axis + 1:], dtype=np.int64))
        x = x.reshape(x.shape[0], -1, units, inner)  # (batch, tokens, units, inner)
        magnitude = np.abs(x[..., 0]) if inner == 1 else np.linalg.norm(x, axis=-1)
        self.sum_sq_mean = _plus(self.sum_sq_mean, (magnitude.mean(axis=1) ** 2).sum(axis=0))
        channels = x.reshape(-1, units * inner)
        self.sum = _plus(self.sum, channels.sum(axis=0))
        self.sum_sq = _plus(self.sum_sq, (channels ** 2).sum(axis=0))
        self.count += x.shape[0]
        self.tokens += channels.shape[0]


def _plus(total, value):
    return value if total is None else total + value


class ActivationCriterion(DataCriterion):
    """`"activation"` (Minitron), `"fluctuation"` and `"flap"` (FLAP): see the module docstring."""

    @property
    def standardized(self):
        """Whether the scores are z-scores already (`"flap"`), which global
        ranking compares as they are (`kprune.channels.planning`)."""
        return self.__name__ == "flap"

    def _measure(self, graph):
        readers = _readers(graph)
        layers = [entries[0][0] for entries in readers.values()]
        stats = {key: {} for key in readers}

        def record(layer, x):
            for entry in readers[id(layer)]:
                variable, kernel_axis, axis = entry[3], entry[4], entry[-1]
                # A layer called on other inputs too (a ReversibleEmbedding's
                # lookup of token ids; its LM-head call is the reader) records
                # only the calls that read the unit axis.
                shape = tuple(x.shape)
                if len(shape) < -axis or shape[axis] != variable.shape[kernel_axis] or \
                        not keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype)):
                    continue
                stats[id(layer)].setdefault(axis, _Statistics()).add(x, axis)

        with functional.recording_inputs(layers, record):
            for x, _ in batches(self.data, with_targets=False):
                self.model(x, training=False)
        if not any(stats.values()):
            raise ValueError("Argument `data` holds no examples.")
        scores = {}
        for key, entries in readers.items():
            for _, group, usage, variable, axis, repeat, input_axis in entries:
                per_row = self._per_row(stats[key].get(input_axis), variable, axis, group.unit != "channel")
                if per_row is None:
                    continue
                total = scores.setdefault(group.index, np.zeros(len(group.units)))
                reduce = np.mean if self.standardized else np.sum
                for unit, positions in enumerate(graph.unit_positions(group, usage)):
                    if positions:
                        total[unit] += reduce(per_row[rows_of(positions, repeat)])
        return scores

    def _per_row(self, stat, variable, axis, heads):
        """One score per row of the reader's slice axis (a channel, or a head;
        `heads`: the rows are attention heads)."""
        if stat is None or not stat.count:
            return None
        rows = int(variable.shape[axis])
        if self.__name__ == "activation":
            values = np.sqrt(stat.sum_sq_mean)
            return values if values.size == rows else None
        mean = stat.sum / stat.tokens
        variance = np.maximum(stat.sum_sq / stat.tokens - mean ** 2, 0.0)
        inner = variance.size // rows
        weight = np.moveaxis(keras.ops.convert_to_numpy(variable.value).astype(np.float64), axis, 0)
        if inner * rows != variance.size or (weight.size // rows) % inner:
            return None
        # A head's rows of the output kernel: (heads, head_dim, out), one norm per channel.
        norms = (weight.reshape(rows, inner, -1) ** 2).sum(axis=-1)
        channels = variance.reshape(rows, inner) * norms
        if self.standardized:  # FLAP: squared for heads, z-scored over the layer's channels
            channels = channels ** 2 if heads else channels
            std = channels.std(ddof=1) if channels.size > 1 else 0.0
            channels = (channels - channels.mean()) / (std if std > 0 else 1.0)
        return channels.mean(axis=1)


ACTIVATION_CRITERIA = {"activation": ActivationCriterion, "fluctuation": ActivationCriterion,
                       "flap": ActivationCriterion}
