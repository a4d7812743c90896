"""Private: every read of Keras' and LiteRT's private attributes.

Holds `functional` (the functional graph's nodes, nested models, the
stateless scope, the mark that keeps Keras from decorating kprune's errors),
`tracing` (symbolic traces of the calls a composite layer makes), `keras_layers` (private attributes of
Keras layers: MultiHeadAttention's projections, `_call_has_training_arg`) and
`litert_interpreter` (LiteRT's private interpreter methods). A Keras or
LiteRT upgrade that renames one of them touches this folder only
(`tests/test_architecture.py` checks that no other module reads a private
attribute of an object it does not own).

May import: nothing else of kprune.
"""
