"""The LiteRT `Interpreter` methods kprune needs that LiteRT keeps private.

`_get_full_signature_list` (the signature's input and output names, to match
a file's tensors to a Keras model's) and `_get_ops_details` (each op's name
and tensors, for per-op figures) have no public equivalent. They are called
here only, so a LiteRT upgrade that renames them touches this file.
"""


def signature_list(interpreter):
    """`{signature key: {"inputs": {name: index}, "outputs": {name: index}}}` of a LiteRT interpreter."""
    return interpreter._get_full_signature_list()


def ops_details(interpreter):
    """Each op of an allocated LiteRT interpreter, in execution order: a dict
    with its `op_name`, `index`, `inputs` and `outputs` (tensor indices)."""
    return interpreter._get_ops_details()
