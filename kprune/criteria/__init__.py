"""How important each channel is: `(graph, group) -> one score per channel`.

`importance` (weight norms, FPGM, BatchNormalization scales, random; Taylor,
LLM-Pruner's element-wise Taylor, APoZ and mean activation on data),
`unit_activations` (Minitron's activation and FLAP's fluctuation of the
units a layer reads: FFN units, attention heads), `hessian` (Hessian-based importance),
`reconstruction_criteria` (ThiNet and LASSO selection) on top of
`least_squares` (their pure NumPy algorithms) and `sampling` (a layer's input
patches on data), `regularizers` (Network Slimming's `BNScaleRegularizer`),
and `catalog`, the one table `importance=` names are looked up in.

May import: `kprune._internal`, `kprune.utils`, `kprune.registry`,
`kprune.litert`, `kprune.sparsity`, `kprune.stats`, `kprune.dependency`.
"""

from kprune.criteria.catalog import DATA_CRITERIA, WEIGHT_CRITERIA, get
from kprune.criteria.regularizers import BNScaleRegularizer

__all__ = [
    "BNScaleRegularizer",
    "DATA_CRITERIA",
    "WEIGHT_CRITERIA",
    "get",
]
