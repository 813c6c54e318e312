"""The history benchmark runs end to end (``--quick``). No timing is asserted: it prints figures."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_history_benchmark_runs_quick() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "history.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, output
    assert "===== SUMMARY history =====" in result.stdout, output
    assert "x mainnet" in result.stdout, output
