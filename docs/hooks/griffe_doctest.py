"""Griffe extension: render kprune's doctest examples as code blocks.

kprune's docstrings are Google style with an `Example:` line followed by
doctest lines at the docstring's own indentation (so that `doctest` and
`tests/test_api.py` run them). Griffe's Google parser only knows an
`Examples:` section with an indented body, so without help those lines
reach Markdown as text (and `['Dense']` in an output line reads as a
reference link). This extension fences every run of doctest lines -- a
`>>>` line, its `...` continuations and the output up to the next blank
line or prompt -- as a `pycon` code block, before griffe parses sections.
The docstrings themselves are not changed.
"""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    """Wrap each run of doctest lines of `text` in a ```pycon fence."""
    lines = text.split("\n")
    out, i, in_fence = [], 0, False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_fence or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        block = []
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            block.append(lines[i])
            i += 1
        if out and out[-1].strip():
            out.append("")
        out.extend([indent + "```pycon", *block, indent + "```"])
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    """Fence doctest examples in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: D102
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
