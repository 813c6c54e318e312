"""The server benchmarks run end to end (``--quick``). No timing is asserted: they print figures."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("server_latency", "server_fanout", "server_memory", "server_workers")


@pytest.mark.slow
def test_server_benchmarks_run_quick() -> None:
    for name in SCRIPTS:
        result = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = result.stdout[-4000:] + result.stderr[-4000:]
        assert result.returncode == 0, f"{name}:\n{output}"
        assert f"===== SUMMARY {name} =====" in result.stdout, f"{name}:\n{output}"
