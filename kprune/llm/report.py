"""What one-shot pruning did: `OneShotReport`, one `LayerReport` per pruned layer.

Example:

>>> report = OneShotReport("wanda", 0.5, [LayerReport("block_0/query", "block_0", (8, 8), 0.5, 0.5)])
>>> report.sparsity_by_block()
{'block_0': 0.5}
>>> print(report.table())
layer          block    shape  target  sparsity  error  damping
block_0/query  block_0  8 x 8  0.500   0.500     -      -
"""

import dataclasses
from typing import Optional


@dataclasses.dataclass
class LayerReport:
    """One pruned linear layer.

    Attributes:
        name: the layer's name (its kernel's variable path without `/kernel`).
        block: the name of the block it belongs to.
        shape: `(d_in, d_out)` of its matrix.
        target: the sparsity asked for the layer (a fraction; N:M: N/M).
        sparsity: the fraction of its kernel that is exactly 0 afterwards.
        error: `||X W - X W'||^2 / ||X W||^2` on the calibration inputs it
            saw (with `measure_error=True`), else None.
        damping: SparseGPT's relative damping used (None for other methods).
    """

    name: str
    block: str
    shape: tuple
    target: float
    sparsity: float
    error: Optional[float] = None
    damping: Optional[float] = None


@dataclasses.dataclass
class OneShotReport:
    """The result of `kprune.prune_oneshot` (the model is pruned in place).

    Attributes:
        method: `"magnitude"`, `"wanda"` or `"sparsegpt"`.
        sparsity: the sparsity asked for (a fraction or `"n:m"`).
        layers: a `LayerReport` per pruned layer, in the order they were pruned.
        block_sparsity: the sparsity given to each block (name -> fraction),
            non-uniform with `ratios="owl"`.
        outlier_ratios: OWL's outlier ratio per block (percent), or {}.
        excluded: names of the linear layers left dense.
        seconds: wall time of the whole call.
        peak_statistics_bytes: the largest statistics held at once (one block's).
        peak_activation_bytes: the largest activations held at once.
    """

    method: str
    sparsity: object
    layers: list
    block_sparsity: dict = dataclasses.field(default_factory=dict)
    outlier_ratios: dict = dataclasses.field(default_factory=dict)
    excluded: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    peak_statistics_bytes: int = 0
    peak_activation_bytes: int = 0

    def sparsity_by_block(self):
        """Fraction of zeros over each block's pruned layers (weighted by size)."""
        zeros, sizes = {}, {}
        for layer in self.layers:
            size = layer.shape[0] * layer.shape[1]
            zeros[layer.block] = zeros.get(layer.block, 0.0) + layer.sparsity * size
            sizes[layer.block] = sizes.get(layer.block, 0) + size
        return {block: zeros[block] / sizes[block] for block in sizes}

    @property
    def overall_sparsity(self):
        """Fraction of zeros over all pruned layers."""
        sizes = [layer.shape[0] * layer.shape[1] for layer in self.layers]
        total = sum(sizes)
        return sum(layer.sparsity * s for layer, s in zip(self.layers, sizes)) / total if total else 0.0

    def table(self):
        """A plain-text table, one line per layer."""
        rows = [("layer", "block", "shape", "target", "sparsity", "error", "damping")]
        for layer in self.layers:
            rows.append((layer.name, layer.block, f"{layer.shape[0]} x {layer.shape[1]}", f"{layer.target:.3f}",
                         f"{layer.sparsity:.3f}", "-" if layer.error is None else f"{layer.error:.4g}",
                         "-" if layer.damping is None else f"{layer.damping:g}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
