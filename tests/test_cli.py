import subprocess
import sys

import pytest

from kprune import cli


def test_demo_prunes_to_target(capsys):
    assert cli.main(["demo", "--epochs", "1", "--prune-epochs", "2", "--sparsity", "0.5"]) == 0
    out = capsys.readouterr()
    rows = [line.split() for line in out.out.splitlines() if "kernel" in line]
    assert len(rows) == 4
    for row in rows:
        assert float(row[-1].rstrip("%")) == pytest.approx(50.0, abs=0.5)
    assert "pruned accuracy" in out.out
    assert "[kprune] training the dense CNN" in out.err  # progress goes to stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--sparsity", "1.5"], "must be in [0, 1), got 1.5"),
        (["demo", "--epochs", "0"], "must be >= 1, got 0"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message):
    result = subprocess.run(
        [sys.executable, "-m", "kprune", *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
