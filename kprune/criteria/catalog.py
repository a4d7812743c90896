"""Every channel importance criterion by name: the one table `importance=` is looked up in.

* weight criteria (`kprune.criteria.importance`): `"l1"`, `"l2"`, `"fpgm"`,
  `"bn_scale"`, `"random"`;
* data criteria, built on calibration `data` (and a `loss` where they need
  gradients): `"taylor"`, `"taylor_element"` (LLM-Pruner), `"apoz"`,
  `"mean_activation"` (`kprune.criteria.importance`), `"activation"`
  (Minitron), `"fluctuation"` and `"flap"` (FLAP) (`kprune.criteria.unit_activations`),
  `"thinet"`, `"lasso"`
  (`kprune.criteria.reconstruction_criteria`), `"hessian"`
  (`kprune.criteria.hessian`).

Example:

>>> sorted(WEIGHT_CRITERIA)
['bn_scale', 'fpgm', 'l1', 'l2', 'random']
>>> sorted(DATA_CRITERIA)  # doctest: +NORMALIZE_WHITESPACE
['activation', 'apoz', 'flap', 'fluctuation', 'hessian', 'lasso', 'mean_activation', 'taylor',
 'taylor_element', 'thinet']
>>> get("l3")
Traceback (most recent call last):
...
ValueError: Argument `importance` must be one of ['bn_scale', 'fpgm', 'l1', 'l2', 'random', 'activation', \
'apoz', 'flap', 'fluctuation', 'hessian', 'lasso', 'mean_activation', 'taylor', 'taylor_element', 'thinet'] or a \
callable `(graph, group) -> scores`. Received: importance='l3'
"""

from kprune.criteria import importance as importance_lib
from kprune.criteria.hessian import HessianCriterion
from kprune.criteria.reconstruction_criteria import RECONSTRUCTION_CRITERIA
from kprune.criteria.unit_activations import ACTIVATION_CRITERIA

WEIGHT_CRITERIA = dict(importance_lib.CRITERIA)
"""`{name: criterion}` of the criteria that read the weights alone: `(graph, group) -> scores`."""

DATA_CRITERIA = {**importance_lib.DATA_CRITERIA, **RECONSTRUCTION_CRITERIA, **ACTIVATION_CRITERIA,
                 "hessian": HessianCriterion}
"""`{name: class}` of the criteria built on calibration data: `class(name, data, loss)` is the criterion."""


def get(importance, data=None, loss=None):
    """Resolve a criterion name or callable: `(graph, group) -> scores`.

    Args:
        importance: a name of `WEIGHT_CRITERIA` or `DATA_CRITERIA`, or a
            callable `(graph, group) -> np.ndarray | None` (returned as is).
        data: calibration batches, for a data criterion. Defaults to None.
        loss: the loss a gradient-based data criterion differentiates
            (`"taylor"`, `"hessian"`). Defaults to None (the model's).
    """
    if callable(importance):
        return importance
    if importance in DATA_CRITERIA:
        return DATA_CRITERIA[importance](importance, data, loss)
    if importance not in WEIGHT_CRITERIA:
        raise ValueError(
            f"Argument `importance` must be one of {sorted(WEIGHT_CRITERIA) + sorted(DATA_CRITERIA)} "
            f"or a callable `(graph, group) -> scores`. Received: importance={importance!r}"
        )
    return WEIGHT_CRITERIA[importance]
