"""Per-layer figures as rows and tables: `LayerStats`, `ModelSummary`.

The plain data that `kprune.summary`, `kprune.stats` (Keras models) and
`kprune.litert` (.tflite files) produce, and its text form.

Example:

>>> rows = [LayerStats("dense", "Dense", 10, 4, 8)]
>>> print(format_rows(rows))  # doctest: +NORMALIZE_WHITESPACE
layer  type    params  nonzero  sparsity  MACs
dense  Dense       10        4     60.0%     8
"""

from typing import NamedTuple


class LayerStats(NamedTuple):
    """One layer's figures (MACs for one example).

    `pruned` says whether the weights kprune prunes in this row (kernels,
    embedding tables, the LM head; not biases or norms) are under pruning
    masks: "yes", "no", "partly", or "" (a row without such weights, a model
    without masks, or a .tflite op).
    """

    name: str
    type: str
    params: int
    nonzero: int
    macs: int
    pruned: str = ""

    @property
    def sparsity(self):
        return 1.0 - self.nonzero / self.params if self.params else 0.0


class ModelSummary:
    """Per-layer parameters, nonzero parameters and MACs, with totals.

    Attributes:
        source: what was summarized (a model name or a file path).
        rows: a list of `LayerStats`, one per layer (Keras) or op (TFLite).

    Example:

    >>> s = ModelSummary("demo", [LayerStats("dense", "Dense", 10, 4, 8)])
    >>> s.params, s.nonzero, s.macs, round(s.sparsity, 2)
    (10, 4, 8, 0.6)
    """

    def __init__(self, source, rows):
        self.source = source
        self.rows = list(rows)

    @property
    def params(self):
        return int(sum(r.params for r in self.rows))

    @property
    def nonzero(self):
        return int(sum(r.nonzero for r in self.rows))

    @property
    def macs(self):
        return int(sum(r.macs for r in self.rows))

    @property
    def sparsity(self):
        return 1.0 - self.nonzero / self.params if self.params else 0.0

    def to_dict(self):
        """Plain Python data (`json.dumps` works on it)."""
        return {
            "source": str(self.source),
            "layers": [row_dict(r) for r in self.rows],
            "total": {"params": self.params, "nonzero": self.nonzero,
                      "sparsity": self.sparsity, "macs": self.macs},
        }

    def __str__(self):
        total = LayerStats("total", "", self.params, self.nonzero, self.macs)
        return f"{self.source}\n{format_rows(self.rows, total)}"


def row_dict(row):
    """A `LayerStats` as a plain dict (JSON-ready), with its sparsity.

    Example:

    >>> row_dict(LayerStats("d", "Dense", 4, 1, 3))["sparsity"]
    0.75
    """
    return {**row._asdict(), "sparsity": float(row.sparsity)}


def fold_rows(rows):
    """Rows with MACs as they are, then the rows without (BatchNormalization,
    biases and scales, embeddings, ...) summed up, one per layer type, named
    `(<n> layers)` when there are several.

    Example:

    >>> rows = [LayerStats("c1", "Conv2D", 4, 4, 9), LayerStats("bn1", "BatchNormalization", 4, 4, 0),
    ...         LayerStats("c2", "Conv2D", 4, 2, 9), LayerStats("bn2", "BatchNormalization", 4, 4, 0)]
    >>> [tuple(r)[:5] for r in fold_rows(rows)]  # doctest: +NORMALIZE_WHITESPACE
    [('c1', 'Conv2D', 4, 4, 9), ('c2', 'Conv2D', 4, 2, 9),
     ('(2 layers)', 'BatchNormalization', 8, 8, 0)]

    A folded row is `pruned` "yes" or "no" when all its rows say so, "partly" when they differ:

    >>> fold_rows([LayerStats("e1", "Embedding", 4, 1, 0, "yes"),
    ...            LayerStats("e2", "Embedding", 4, 4, 0, "no")])[0].pruned
    'partly'
    """
    folded = {}
    for r in rows:
        if not r.macs:
            folded.setdefault(r.type, []).append(r)
    out = [r for r in rows if r.macs]
    for kind, group in folded.items():
        if len(group) == 1:
            out.append(group[0])
        else:
            marks = {r.pruned for r in group if r.pruned}
            pruned = "" if not marks else marks.pop() if len(marks) == 1 else "partly"
            out.append(LayerStats(f"({len(group)} layers)", kind, sum(r.params for r in group),
                                  sum(r.nonzero for r in group), 0, pruned))
    return out


def format_rows(rows, total=None):
    """`LayerStats` rows (and an optional `total` row) as a text table, with
    a `pruned` column when some row says whether it is pruned.

    Example:

    >>> print(format_rows([LayerStats("d", "Dense", 4, 1, 3)]))  # doctest: +NORMALIZE_WHITESPACE
    layer  type  params  nonzero  sparsity  MACs
    d      Dense      4        1     75.0%     3
    >>> print(format_rows([LayerStats("d", "Dense", 4, 1, 3, "yes"),
    ...                    LayerStats("e", "Embedding", 4, 4, 0, "no")]))  # doctest: +NORMALIZE_WHITESPACE
    layer  type       params  nonzero  sparsity  MACs  pruned
    d      Dense           4        1     75.0%     3  yes
    e      Embedding       4        4      0.0%     0  no
    """
    width = max([len(r.name) for r in rows + ([total] if total else [])] + [5])
    kind = max([len(r.type) for r in rows] + [4])
    line = "{:<%d}  {:<%d}  {:>10}  {:>10}  {:>8}  {:>12}" % (width, kind)
    pruned = any(r.pruned for r in rows)
    out = [line.format("layer", "type", "params", "nonzero", "sparsity", "MACs")
           + ("  pruned" if pruned else "")]
    for r in rows + ([total] if total else []):
        text = line.format(r.name, r.type, r.params, r.nonzero, f"{r.sparsity:.1%}", r.macs)
        out.append(text + (f"  {r.pruned}" if pruned and r.pruned else ""))
    return "\n".join(out)
