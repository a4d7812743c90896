"""The searches, one per module, each an algorithm over `kprune.search`'s space and budget.

`sensitivity` (prune one group at a time, allocate by the losses), `netadapt`
(NetAdapt: shrink one group per iteration), `annealing` (NNI's simulated
annealing over ratios), `admm` with `admm_sets` (ADMM training towards a
sparse set), `auto_compress` (AutoCompress: annealing, then ADMM, in
rounds) and `amc` with `ddpg` (AMC's DDPG agent). Import them from
`kprune.search`.
"""
