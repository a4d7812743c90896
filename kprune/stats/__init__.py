"""Parameters, nonzero parameters and MACs of a Keras model, a .keras or a .tflite file.

`keras_stats` counts a Keras model layer by layer (through composite layers
and nested models, masks applied), `tflite_ops` counts a .tflite file op
by op the same way, `summaries` gives either as a `ModelSummary`, and
`records` holds the plain rows and their text tables.

May import: `kprune._internal`, `kprune.utils`, `kprune.registry`,
`kprune.litert`, `kprune.sparsity`.
"""

from kprune.stats.keras_stats import count_macs, count_params, layer_stats
from kprune.stats.records import LayerStats, ModelSummary
from kprune.stats.summaries import summary
from kprune.stats.tflite_ops import tflite_stats

__all__ = [
    "LayerStats",
    "ModelSummary",
    "count_macs",
    "count_params",
    "layer_stats",
    "summary",
    "tflite_stats",
]
