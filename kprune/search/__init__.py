"""Per-layer pruning ratios under a budget: budgets, spaces, latency tables and the searches.

`space` (one width per channel group), `budget` (`Budget` and the models that
predict parameters, MACs and latency), `rescale` (budget arithmetic on width
vectors), `latency_table` (NetAdapt's per-layer LiteRT lookup table) and
`latency_check` (latency budgets checked on the exported file), `result`
(`SearchResult`), `options` (`SearchOptions`: the settings every search
shares, documented once), `driver` (the run every search drives: progress,
limits, log, state file, and how it ends), `evaluation` (scoring
candidates: `accuracy`, `negative_loss`), and `algorithms/`, one module per search: the uniform
baseline, sensitivity, NetAdapt, simulated annealing, ADMM, AutoCompress, AMC (with its DDPG agent).

May import: every subpackage up to `kprune.export`.
"""

from kprune.search.algorithms.admm import ADMM, admm
from kprune.search.algorithms.amc import amc
from kprune.search.algorithms.annealing import simulated_annealing
from kprune.search.algorithms.auto_compress import auto_compress
from kprune.search.algorithms.netadapt import netadapt
from kprune.search.algorithms.sensitivity import SensitivityResult, sensitivity
from kprune.search.algorithms.uniform import uniform
from kprune.search.budget import Budget
from kprune.search.evaluation import accuracy, negative_loss
from kprune.search.latency_check import match_latency
from kprune.search.latency_table import LatencyTable, MacsTimer
from kprune.search.options import SearchOptions
from kprune.search.result import SearchResult
from kprune.search.space import SearchSpace

__all__ = [
    "ADMM",
    "Budget",
    "LatencyTable",
    "MacsTimer",
    "SearchOptions",
    "SearchResult",
    "SearchSpace",
    "SensitivityResult",
    "accuracy",
    "admm",
    "amc",
    "auto_compress",
    "match_latency",
    "negative_loss",
    "netadapt",
    "sensitivity",
    "simulated_annealing",
    "uniform",
]
