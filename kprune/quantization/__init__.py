"""Quantization-aware training with tfmot's API: `kprune.quantization` is `tfmot.quantization.keras`.

File names follow tfmot's: `quantize` (`quantize_model`,
`quantize_annotate_layer`, `quantize_annotate_model`, `quantize_apply`,
`quantize_scope`), `quantizers` (`LastValueQuantizer`,
`MovingAverageQuantizer`, `AllValuesQuantizer`, kprune's per-channel weight
quantizer), `quant_ops` (fake quantization in `keras.ops`, TFLite's
arithmetic), `quantize_config` (`QuantizeConfig` and the simple configs),
`quantize_wrapper` (`QuantizeWrapper`), `quantize_layer` (`QuantizeLayer`,
`QuantizeAnnotate`), `default_8bit` (the default scheme, its registry and
configs), `layout` (where TFLite fuses ops, so fake quantization is not put
between them) and `prune_preserve` (the PQAT scheme, tfmot's
`tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme`).

Which layer types are quantized and how (weights per output channel on which
axes, what TFLite fuses) is the layer registry's (`kprune.registry`'s
`QuantizeSpec`); this subpackage turns it into fake quantization.
`kprune.export_tflite` converts a quantization-aware model with its learned
ranges.

May import: every subpackage up to `kprune.methods`.
"""

from kprune.quantization import quantizers
from kprune.quantization.default_8bit import (
    Default8BitQuantizeConfig,
    Default8BitQuantizeRegistry,
    Default8BitQuantizeScheme,
    QuantizeRegistry,
    QuantizeScheme,
)
from kprune.quantization.prune_preserve import Default8BitPrunePreserveQuantizeScheme
from kprune.quantization.quantize import (
    is_quantize_aware,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
    quantize_scope,
)
from kprune.quantization.quantize_config import QuantizeConfig
from kprune.quantization.quantize_layer import QuantizeAnnotate, QuantizeLayer
from kprune.quantization.quantize_wrapper import QuantizeWrapper

__all__ = [
    "Default8BitPrunePreserveQuantizeScheme",
    "Default8BitQuantizeConfig",
    "Default8BitQuantizeRegistry",
    "Default8BitQuantizeScheme",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeLayer",
    "QuantizeRegistry",
    "QuantizeScheme",
    "QuantizeWrapper",
    "is_quantize_aware",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_model",
    "quantize_scope",
    "quantizers",
]
