"""One-shot pruning of language models from calibration data: Wanda, SparseGPT, OWL.

`prune_oneshot` prunes the linear layers of a model (Dense, EinsumDense,
convolutions) block by block from a little calibration data, without
retraining: the algorithms on one matrix (`wanda`, `sparsegpt`, the
selection in `selection`), the per-block ratios (`owl`), the statistics of
layer inputs (`statistics`), the block-by-block run of a Functional model or
a KerasHub backbone or task (`calibration`), and the driver (`oneshot`).

May import: `kprune._internal`, `kprune.utils`, `kprune.registry`,
`kprune.litert`, `kprune.sparsity`, `kprune.stats`, `kprune.dependency`,
`kprune.criteria`, `kprune.channels`, `kprune.methods`.
"""

from kprune.llm.fine_tune import keep_zeros
from kprune.llm.oneshot import prune_oneshot
from kprune.llm.report import LayerReport, OneShotReport

__all__ = [
    "LayerReport",
    "OneShotReport",
    "keep_zeros",
    "prune_oneshot",
]
