"""Einsum equations: which kernel axis is contracted with the input, and MACs.

Example:

>>> einsum_input_axis("abc,cd->abd")
-2
>>> einsum_macs("abc,cd->abd", (None, 4, 8), (8, 16), (None, 4, 16))
512
>>> einsum_kernel_input_axis("bquh,uhm->bqm", 0)  # an output projection's heads
-2
"""

import re


def einsum_input_axis(equation):
    """Axis of an EinsumDense kernel contracted with the input (the last one);
    -2 when the equation cannot be read."""
    match = re.match(r"([\w.]+),([\w.]+)->", equation.replace(" ", ""))
    if match:
        inputs, kernel = match.groups()
        contracted = [i for i, ch in enumerate(kernel) if ch in inputs]
        if contracted:
            return contracted[-1] - len(kernel)
    return -2


def einsum_macs(equation, inp, kernel, out):
    """MACs of `einsum(equation, x, w)` on one example: the product of the size
    of every index (batch and ellipsis axes count once per example)."""
    lhs, out_spec = equation.replace(" ", "").split("->")
    in_spec, kernel_spec = lhs.split(",")
    sizes = {}
    extra = 1
    for spec, shape, skip_batch in ((in_spec, inp, True), (kernel_spec, kernel, False), (out_spec, out, True)):
        letters = spec.replace("...", "")
        dims = list(shape[len(shape) - len(letters):]) if "..." in spec else list(shape)
        if "..." in spec and spec is in_spec:
            for d in shape[1 : len(shape) - len(letters)]:
                extra *= int(d or 1)
        for position, (letter, d) in enumerate(zip(letters, dims)):
            if skip_batch and position == 0 and "..." not in spec and spec.index(letter) == 0:
                sizes.setdefault(letter, 1)
            elif d is not None:
                sizes.setdefault(letter, int(d))
    total = extra
    for d in sizes.values():
        total *= d
    return total


def einsum_contraction(equation):
    """`(input_spec, kernel_spec, contracted, free)` of an EinsumDense
    equation that is a plain matrix product, else None.

    `contracted` are the kernel letters summed with the input (the rows of the
    kernel as a matrix), `free` the kernel letters that reach the output (its
    columns), both in kernel order. `input_spec` may hold an ellipsis. None
    when a kernel letter is also an input and output letter (a batched
    weight), when an input letter is summed away without the kernel, or when
    the kernel has an ellipsis.

    Example:

    >>> einsum_contraction("bquh,uhm->bqm")
    ('bquh', 'uhm', ['u', 'h'], ['m'])
    >>> einsum_contraction("bnd,nde->bne") is None  # one matrix per n
    True
    """
    match = re.fullmatch(r"([\w.]+),(\w+)->([\w.]+)", equation.replace(" ", ""))
    if not match:
        return None
    input_spec, kernel_spec, output_spec = match.groups()
    letters = input_spec.replace("...", "")
    if input_spec.count("...") > 1 or "." in letters:
        return None
    contracted = [c for c in kernel_spec if c in letters and c not in output_spec]
    free = [c for c in kernel_spec if c not in letters and c in output_spec]
    summed_alone = [c for c in letters if c not in kernel_spec and c not in output_spec]
    if len(contracted) + len(free) != len(kernel_spec) or summed_alone or not contracted:
        return None
    return input_spec, kernel_spec, contracted, free
def einsum_kernel_input_axis(equation, kernel_axis):
    """The axis of the input (negative) that kernel axis `kernel_axis` is
    contracted with, or None (an output axis, or an equation kprune cannot read)."""
    match = re.match(r"([\w]+),([\w]+)->", equation.replace(" ", ""))
    if not match:
        return None
    inputs, kernel = match.groups()
    letter = kernel[kernel_axis]
    return inputs.index(letter) - len(inputs) if letter in inputs else None
