"""Every notebook in notebooks/ runs end to end in fast mode and draws a figure.

Each notebook is executed with nbclient in a fresh "python3" kernel (the
kernelspec ipykernel provides) with `KPRUNE_NOTEBOOK_FAST=1` in the kernel's
environment. The executed copy is written to a temporary directory: the
committed notebooks (and their full-mode outputs) are never modified.
"""

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds; a whole notebook takes about a minute in fast mode


def test_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {
        "rethinking.ipynb",
        "sparsity_vs_accuracy.ipynb",
        "structured_vs_unstructured.ipynb",
        "selection.ipynb",
    }


def _kernel_env():
    env = dict(os.environ)
    env["KPRUNE_NOTEBOOK_FAST"] = "1"
    # The kernel imports this checkout's kprune even when it is not pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


# The default run executes this one (the library's core loop: prune, train,
# strip, export); `pytest -m full_matrix` the others, whose methods have
# their own tests (the search notebook alone took 34 s of the default run).
REDUCED = {"sparsity_vs_accuracy"}
CASES = [p if p.stem in REDUCED else pytest.param(p, marks=pytest.mark.full_matrix) for p in NOTEBOOKS]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    try:
        client.execute(env=_kernel_env())  # raises CellExecutionError on the first failing cell
    finally:
        nbformat.write(nb, tmp_path / path.name)  # for inspection; never over the committed file

    outputs = list(_outputs(nb))
    assert not [o for o in outputs if o.output_type == "error"]
    mode_lines = [o.text for o in outputs if o.output_type == "stream" and "mode:" in o.text]
    assert mode_lines and mode_lines[0].startswith("FAST mode"), mode_lines
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert figures, f"{path.name} produced no image/png output"


def test_committed_notebooks_hold_full_mode_results():
    """The committed notebooks are executed (full mode), with figures, and stay small."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        outputs = list(_outputs(nb))
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert any("image/png" in o.get("data", {}) for o in outputs), path.name
        assert any(o.output_type == "stream" and o.text.startswith("full mode") for o in outputs), path.name
        assert path.stat().st_size < 400_000, f"{path.name} is {path.stat().st_size:,} bytes"
