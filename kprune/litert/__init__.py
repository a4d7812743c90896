"""Running and timing .tflite files in LiteRT.

`runtime` opens a file (or its bytes), matches its inputs and outputs to the
Keras model's by signature names, quantizes int8 inputs, dequantizes outputs
and runs samples; `timing` measures the median invoke time and two files in
interleaved rounds; `op_names` names each op after the Keras layer it came
from. Export, verification, summaries and latency tables all run files
through here.

May import: `kprune._internal`, `kprune.utils`, `kprune.registry`.
"""
