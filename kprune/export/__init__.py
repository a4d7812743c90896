"""Export for phones: strip, remove channels, quantize, convert, verify, report.

`exporter` (`export_tflite` in named steps), `report` (its `ExportReport`),
`prepare` (the plain model it converts: masks applied, pruning removed,
unread channels removed), `convert` (TFLite conversion with the best encoding
LiteRT runs), `tf_convert` and `worker` (the same steps on TensorFlow from a
JAX or PyTorch session), `verify` (the file against the Keras model) and
`evaluate` (`evaluate_tflite`: a file's accuracy on data).

A quantization-aware model (`kprune.quantization`) converts to int8 with
its learned ranges, without calibration.

May import: every subpackage up to `kprune.quantization`.
"""

from kprune.export.evaluate import TFLiteEvaluation, evaluate_tflite
from kprune.export.exporter import export_tflite
from kprune.export.report import ExportReport

__all__ = [
    "ExportReport",
    "TFLiteEvaluation",
    "evaluate_tflite",
    "export_tflite",
]
