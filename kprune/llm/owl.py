"""OWL: non-uniform sparsity per block from the blocks' outlier ratios.

Yin et al., "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret
Sauce for Pruning LLMs to High Sparsity", ICML 2024; reference
`luuyin/OWL`, `lib/prune_all.py: prune_wanda_outlier`. Blocks whose Wanda
scores hold more outliers are pruned less:

1. for each block `l`, `A` = the Wanda scores `|W_ij| ||X_i||` of all its
   linear layers (on the dense model, calibrated block by block), and its
   outlier ratio `D_l = 100 * mean(A > M * mean(A))` (percent);
2. `r = (D - min D) / (max D - min D) * 2 lambda`;
3. `sparsity_l = S - (r_l - mean r)`, in `[S - lambda, S + lambda]`, with
   mean `S` over blocks.

Defaults are the paper's: `M = 5`, `lambda = 0.08`. The reference uses the
Wanda scores for every method (Wanda, SparseGPT, magnitude); so does kprune.
Blocks with equal outlier ratios (`max D = min D`, where the reference
divides by zero) get `S`. The N:M variant of the reference (mixed N per
block) is not provided.

Example:

>>> import numpy as np
>>> [round(s, 3) for s in owl_sparsities([2.0, 4.0, 3.0], 0.7)]
[0.78, 0.62, 0.7]
>>> outlier_ratio([np.array([[1., 1.], [1., 9.]])], threshold=2.0)
25.0
"""

import numbers

import numpy as np
from keras import ops


def outlier_ratio(scores, threshold=5.0):
    """`100 * mean(A > threshold * mean(A))` over the entries of every score
    tensor in `scores` (one block's linear layers), computed where they lie."""
    total = sum(float(ops.convert_to_numpy(ops.sum(s))) for s in scores)
    count = sum(int(np.prod(s.shape)) for s in scores)
    if count == 0:
        raise ValueError("Argument `scores` must hold at least one score. Received: no entries")
    bar = threshold * total / count
    above = sum(int(ops.convert_to_numpy(ops.sum(ops.cast(ops.greater(s, bar), "int32")))) for s in scores)
    return 100.0 * above / count


def check_owl(sparsity, threshold, lam):
    """Validate OWL's settings with a uniform `sparsity` (a fraction)."""
    for name, value in (("owl_threshold", threshold), ("owl_lambda", lam)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ValueError(f"Argument `{name}` must be a number >= 0. Received: {name}={value!r}")
    if not (sparsity - lam >= 0 and sparsity + lam < 1):
        raise ValueError(
            "OWL gives blocks sparsities in [sparsity - owl_lambda, sparsity + owl_lambda], which must "
            f"lie in [0, 1). Received: sparsity={sparsity}, owl_lambda={lam}. Lower `owl_lambda`.")


def owl_sparsities(ratios, sparsity, lam=0.08):
    """Per-block sparsities from outlier ratios `ratios` (see the module docstring)."""
    d = np.asarray(ratios, dtype=np.float64)
    spread = d.max() - d.min()
    if spread == 0:
        return [float(sparsity)] * len(d)
    r = (d - d.min()) / spread * 2 * lam
    return [float(v) for v in sparsity - (r - r.mean())]
