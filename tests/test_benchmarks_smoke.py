"""The benchmarks run end to end (``--quick``). No timing is asserted: they print figures."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS: tuple[tuple[str, ...], ...] = (
    ("server_latency", "--with", "post", "--with", "ops"),
    ("server_fanout", "--tls"),
    ("server_memory", "--metrics"),
    ("server_info",),
    ("user_channels",),
    ("open_orders",),
    ("compression",),
    ("server_workers",),
    ("worker_stall",),
)
"""Each script with the flags of its optional modes (so that none of them can rot)."""


@pytest.mark.slow
@pytest.mark.parametrize("argv", SCRIPTS, ids=lambda argv: argv[0])
def test_benchmark_runs_quick(argv: tuple[str, ...]) -> None:
    name, *flags = argv
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, f"{name}:\n{output}"
    assert f"===== SUMMARY {name} =====" in result.stdout, f"{name}:\n{output}"
