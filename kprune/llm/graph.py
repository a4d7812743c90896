"""A model as a sequence of steps, and its blocks: what one-shot pruning runs one at a time.

A Sequential or Functional model -- a KerasHub backbone, a KerasHub task
such as `Llama3CausalLM` (whose graph holds the backbone as one nested
model), a user's Functional model -- is flattened into the calls it makes, in
dependency order (`steps`): nested Sequential/Functional models are opened
(their inputs and outputs become aliases of the outer tensors), every other
layer or `keras.ops` operation is one step.

A *block* is a step whose layer holds linear layers (a layer with a
`kprune.registry.linear.LinearView`: Dense, EinsumDense, Conv1D/2D): a
KerasHub `TransformerDecoder`, a Gemma `DecoderBlock`, or, in a plain
Functional model, a single Dense or convolution. Embeddings and the LM head
of a KerasHub task (`ReversibleEmbedding`) are not linear layers here, so
they are never in a block. `Propagation` runs the steps on calibration
batches, keeping only the tensors later steps read (for a chain of blocks,
the hidden states before and after the current block and the padding mask).

Example:

>>> import keras
>>> inputs = keras.Input((4,))
>>> x = keras.layers.Dense(8, name="a")(inputs)
>>> x = keras.layers.ReLU()(x)
>>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
>>> [(s.name, [name for _, name, _ in s.linears]) for s in model_steps(model) if s.linears]
[('a', ['a']), ('head', ['head'])]
"""

from typing import NamedTuple, Optional

import keras
from keras import tree

from kprune._internal import functional
from kprune.registry import keras_layers


class Step(NamedTuple):
    """One call of a flattened model, or an alias (`node` None) that gives
    the tensors `outputs` the values of `inputs` (a nested model's boundary).

    Attributes:
        name: the layer's or operation's name.
        operation: the layer or operation (None for an alias).
        node: the Keras graph node whose arguments the call fills in.
        inputs, outputs: ids of the symbolic tensors it reads and writes.
        linears: `(layer, name, view)` of the linear layers the call runs
            (empty for a step that is not a block).
    """

    name: str
    operation: object
    node: object
    inputs: tuple
    outputs: tuple
    linears: tuple = ()


def linears_of(layer):
    """`(layer, name, view)` of every linear layer in `layer` (itself, or the
    layers it holds, in tracking order); `name` is the kernel's variable path
    without `/kernel`."""
    found, seen = [], set()

    def visit(current):
        if id(current) in seen:
            return
        seen.add(id(current))
        view = keras_layers.linear_view(current)
        if view is not None:
            found.append((current, view.variable.path.rsplit("/", 1)[0], view))
            return
        for inner in functional.sublayers(current, recursive=False):
            visit(inner)

    visit(layer)
    return tuple(found)


def _nested_inputs(node, inner):
    """The outer symbolic tensors a nested model's call passes as its inputs."""
    args = node.arguments.args
    structure = args[0] if args else node.arguments.kwargs.get("inputs")
    flat = [t for t in tree.flatten(structure) if isinstance(t, keras.KerasTensor)]
    if len(flat) != len(inner.inputs):
        raise ValueError(
            f"One-shot pruning cannot follow the call of nested model '{node.operation.name}': it "
            f"receives {len(flat)} tensors for its {len(inner.inputs)} inputs. Call it with one "
            "tensor per input, in the structure of its inputs.")
    return flat


def _flatten(model, steps):
    for node in functional.nodes(model):
        operation = node.operation
        if functional.is_nested_graph(operation):
            inner = functional.function_of(operation, purpose="One-shot pruning")
            outer = _nested_inputs(node, inner)
            steps.append(Step(operation.name, None, None, tuple(id(t) for t in outer),
                              tuple(id(t) for t in inner.inputs)))
            _flatten(inner, steps)
            steps.append(Step(operation.name, None, None, tuple(id(t) for t in inner.outputs),
                              tuple(id(t) for t in node.outputs)))
            continue
        linears = linears_of(operation) if isinstance(operation, keras.layers.Layer) else ()
        steps.append(Step(operation.name, operation, node, tuple(id(t) for t in node.input_tensors),
                          tuple(id(t) for t in node.outputs), linears))


def model_steps(model):
    """The steps of a Sequential or Functional model (see the module docstring).

    Raises:
        ValueError: a subclassed model, or a layer holding linear layers
            that the model calls more than once.
    """
    steps = []
    _flatten(functional.function_of(model, purpose="One-shot pruning"), steps)
    called = {}
    for step in steps:
        if step.linears:
            if id(step.operation) in called:
                raise ValueError(
                    f"Layer '{step.name}' is called more than once in model '{model.name}': one-shot "
                    "pruning calibrates each block on its one call. Prune a model that calls each "
                    "block once.")
            called[id(step.operation)] = step
    return steps


def head_names(model, steps):
    """Names of the linear layers that compute the model's outputs: a step
    that is one linear layer, whose outputs reach a model output through
    steps without linear layers (a classifier's last Dense, a Functional
    LM's Dense head)."""
    outputs = {id(t) for t in functional.function_of(model, purpose="One-shot pruning").outputs}
    reaches = set(outputs)
    heads = []
    for step in reversed(steps):
        if not reaches.intersection(step.outputs):
            continue
        if step.linears:
            if len(step.linears) == 1 and step.linears[0][0] is step.operation:
                heads.append(step.linears[0][1])
            continue
        reaches.update(step.inputs)
    return heads


class Propagation:
    """Runs the steps of a model on calibration batches, one step at a time.

    `values` maps a symbolic tensor's id to its value on each batch; a value
    is dropped after the last step that reads it.

    Args:
        model: the model.
        steps: its `model_steps`.
        batches: a list of batches, each a flat list of input values in the
            order of the model's inputs.
        needed: the steps to run (indices), in order; others are skipped.
    """

    def __init__(self, model, steps, batches, needed):
        function = functional.function_of(model, purpose="One-shot pruning")
        self.steps = steps
        self.batches = len(batches)
        self.values = {id(t): [b[i] for b in batches] for i, t in enumerate(function.inputs)}
        self.last_use = {}
        self.peak = 0  # the most bytes of activations held at once
        for index in needed:
            for i in steps[index].inputs:
                self.last_use[i] = index

    def call(self, step, batch):
        """The outputs (a flat list) of `step` on batch `batch`."""
        tensors = {i: self.values[i][batch] for i in step.inputs}
        args, kwargs = step.node.arguments.fill_in(tensors)
        return tree.flatten(step.operation(*args, **kwargs))

    def store(self, index, outputs):
        """Record a step's outputs (`outputs[b]` the flat list of batch b) and
        drop the values no later step reads."""
        step = self.steps[index]
        if step.node is None:
            for source, target in zip(step.inputs, step.outputs):
                self.values[target] = self.values[source]
        else:
            for j, target in enumerate(step.outputs):
                self.values[target] = [batch_outputs[j] for batch_outputs in outputs]
        self.peak = max(self.peak, self.nbytes)
        for i in list(self.values):
            if self.last_use.get(i, -1) <= index:
                del self.values[i]

    def run(self, index):
        """Run step `index` on every batch and store its outputs."""
        step = self.steps[index]
        outputs = None if step.node is None else [self.call(step, b) for b in range(self.batches)]
        self.store(index, outputs)

    @property
    def nbytes(self):
        """Bytes of the values held (the activation buffers)."""
        return sum(_size(v) for batches in self.values.values() for v in batches)


def _size(value):
    itemsize = {"float64": 8, "int64": 8, "float32": 4, "int32": 4, "float16": 2, "bfloat16": 2}
    count = 1
    for d in value.shape:
        count *= int(d)
    return count * itemsize.get(keras.backend.standardize_dtype(value.dtype), 4)


def needed_steps(steps, blocks):
    """Indices of the steps that the blocks (indices) depend on, up to the last block."""
    if not blocks:
        return []
    wanted, keep = set(), set()
    for index in range(max(blocks), -1, -1):
        step = steps[index]
        if index in blocks or wanted.intersection(step.outputs):
            keep.add(index)
            wanted.update(step.inputs)
    return sorted(keep)


def block_steps(steps, excluded: Optional[set] = None):
    """Indices of the steps that are blocks with at least one linear layer not in `excluded`."""
    excluded = excluded or set()
    return [i for i, s in enumerate(steps) if any(name not in excluded for _, name, _ in s.linears)]
