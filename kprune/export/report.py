"""`ExportReport`: what `kprune.export_tflite` wrote and how it checked it, as plain data.

`print(report)` is a short summary (size, quantization, sparse encoding,
parameters, MACs, verification, latency, notes); `report.layers_table()`
the per-layer figures; `report.to_dict()` / `ExportReport.from_dict` the
JSON form.
"""

import dataclasses
import gzip

from kprune.stats import records

# gzip level of `ExportReport.gzip_bytes`: on a 69 MB half-zero float32 file
# level 9 took 27 s and level 6 3.2 s, for 1% fewer bytes.
GZIP_LEVEL = 6


@dataclasses.dataclass
class ExportReport:
    """What `export_tflite` wrote, and how it checked it.

    Attributes:
        path: the .tflite file.
        file_bytes: its size.
        gzip_bytes: its size gzipped (level 6), computed from the file at
            `path` when first asked for (printing the report asks), so that
            an export does not wait for it (3 s for a 100 MB file).
        params / nonzero_params / macs: of the exported Keras model (after
            stripping wrappers and removing channels).
        params_before / macs_before: of the model passed in (masks applied).
        layers: per-layer `LayerStats` of the exported Keras model
            (`layers_table()` prints them; `str(report)` is the summary).
        quantization: "float32", "dynamic", "float16", "int8" (calibrated)
            or "int8 (QAT ranges)" (a quantization-aware model's own ranges).
        int8_io: whether the file's inputs and outputs are int8.
        sparse_encoding: whether weights are stored in TFLite's sparse format.
        channels_removed: whether channels were physically removed (the model
            had channels that no layer reads, and `remove_pruned_channels`).
        verification: a dict of figures (see `export_tflite`), or None.
        verified: whether LiteRT's outputs were within tolerance (None if
            not verified).
        latency_ms: median LiteRT latency of one invoke on one thread, or None.
        notes: fallbacks and skipped steps, with reasons.
        timings: seconds spent per phase: "strip", "remove_channels",
            "convert", "verify" (LiteRT and Keras on the samples), "write",
            "latency" (only the phases that ran).

    Example:

    >>> report = ExportReport(path="m.tflite", file_bytes=10, gzip_size=8,
    ...     params=4, nonzero_params=2, macs=4, params_before=4, macs_before=4)
    >>> report.to_dict()["sparsity"], report.gzip_bytes
    (0.5, 8)
    """

    path: str
    file_bytes: int
    params: int
    nonzero_params: int
    macs: int
    params_before: int
    macs_before: int
    layers: list = dataclasses.field(default_factory=list)
    quantization: str = "float32"
    int8_io: bool = False
    sparse_encoding: bool = False
    channels_removed: bool = False
    verification: dict = None
    verified: bool = None
    latency_ms: float = None
    notes: list = dataclasses.field(default_factory=list)
    timings: dict = dataclasses.field(default_factory=dict)
    gzip_size: int = None  # `gzip_bytes` once computed

    @property
    def gzip_bytes(self):
        if self.gzip_size is None:
            with open(self.path, "rb") as f:
                self.gzip_size = len(gzip.compress(f.read(), compresslevel=GZIP_LEVEL))
        return self.gzip_size

    @property
    def sparsity(self):
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def to_dict(self, gzip_bytes=True):
        """Plain Python data: `json.dumps(report.to_dict())` works.

        Args:
            gzip_bytes: compute the gzip figure if it is not known yet
                (else `gzip_bytes` is None until it is). Defaults to True.
        """
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "gzip_size"}
        data["gzip_bytes"] = self.gzip_bytes if gzip_bytes else self.gzip_size
        data["layers"] = [records.row_dict(r) for r in self.layers]
        data["notes"] = list(self.notes)
        data["verification"] = dict(self.verification) if self.verification else None
        data["timings"] = dict(self.timings)
        data["sparsity"] = float(self.sparsity)
        return data

    @classmethod
    def from_dict(cls, data):
        """The inverse of `to_dict`."""
        data = {k: v for k, v in data.items() if k != "sparsity"}
        data["gzip_size"] = data.pop("gzip_bytes", None)
        rows = [{k: v for k, v in r.items() if k != "sparsity"} for r in data.get("layers", [])]
        data["layers"] = [records.LayerStats(**r) for r in rows]
        return cls(**data)

    def __str__(self):
        check = "not run"
        if self.verification:
            v = self.verification
            check = f"{'passed' if self.verified else 'FAILED'}: max |diff| {v['max_abs_error']:.3g}, "
            check += f"mean |diff| {v['mean_abs_error']:.3g}"
            if v["top1_agreement"] is not None:
                check += f", top-1 agreement {v['top1_agreement']:.1%}"
            check += f" ({v['samples']} samples)"
        lines = [
            f"TFLite export: {self.path}",
            f"  size            {self.file_bytes:,} bytes ({self.gzip_bytes:,} gzipped)",
            f"  quantization    {self.quantization}{' (int8 inputs/outputs)' if self.int8_io else ''}",
            f"  sparse encoding {'yes' if self.sparse_encoding else 'no'}",
            f"  parameters      {self.params:,} ({self.nonzero_params:,} nonzero, "
            f"{self.sparsity:.1%} sparse); before export {self.params_before:,}",
            f"  MACs            {self.macs:,}; before export {self.macs_before:,}",
            f"  verification    {check}",
            "  latency         " + (
                "not measured" if self.latency_ms is None
                else f"{self.latency_ms:.3f} ms (LiteRT, 1 thread)"),
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def layers_table(self, every_layer=False):
        """Per-layer parameters, nonzeros, sparsity and MACs of the exported
        Keras model, as a text table that ends with the total.

        Args:
            every_layer: one row per layer with parameters or MACs. Defaults
                to False: one row per layer with MACs, then one per type for
                the layers without MACs (BatchNormalization, which the
                converter folds into the convolution before it, ...).

        Example:

        >>> report = ExportReport("m.tflite", 10, 4, 2, 4, 4, 4, layers=[
        ...     records.LayerStats("d", "Dense", 4, 2, 4)])
        >>> print(report.layers_table())  # doctest: +NORMALIZE_WHITESPACE
        layer  type   params  nonzero  sparsity  MACs
        d      Dense       4        2     50.0%     4
        total              4        2     50.0%     4
        """
        rows = self.layers if every_layer else records.fold_rows(self.layers)
        total = records.LayerStats("total", "", self.params, self.nonzero_params, self.macs)
        return records.format_rows(list(rows), total)
