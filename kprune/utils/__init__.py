"""Infrastructure every subsystem uses; nothing here knows about pruning.

Holds `atomic` (files written through a temporary file and a rename),
`files` (.keras files loaded in safe mode with one-line errors),
`native_logs` (TensorFlow's, the converter's and LiteRT's C++ log lines kept
off the terminal), `backends` (what differs between TensorFlow, JAX and
PyTorch), `progress` (progress bars that always end their line) and
`validation` (argument checks with Keras-style errors).

May import: `kprune._internal`.
"""
