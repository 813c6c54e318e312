"""The relay benchmarks run end to end (``--quick``). No timing is asserted: they print figures."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("name", ["relay_codec", "relay_bridge", "relay_feed"])
def test_relay_benchmark_runs_quick(name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, f"{name}:\n{output}"
    assert f"===== SUMMARY {name} =====" in result.stdout, f"{name}:\n{output}"
