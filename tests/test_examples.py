"""The example scripts, run as real processes against a running server."""

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from server_support import sim_and_server

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def run_until(done: Callable[[str], bool], *args: str, limit: float = 30.0) -> str:
    """Run an example until its output satisfies ``done``, stop it with SIGINT, return it."""
    process = await trio.lowlevel.open_process(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        cwd=EXAMPLES,
    )
    assert process.stdout is not None
    output = bytearray()
    with trio.move_on_after(limit):
        async for chunk in process.stdout:
            output += chunk
            if done(output.decode(errors="replace")):
                break
    process.send_signal(2)  # SIGINT (Ctrl-C): the scripts stop quietly, with status 0
    with trio.fail_after(10):
        async for chunk in process.stdout:
            output += chunk
        await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
    return text


async def test_client_examples_against_a_server(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, _node):
        ladder = await run_until(
            lambda out: out.count("spread") >= 2, "l2_ladder.py", handle.url, "BTC", "--levels", "5"
        )
        assert "BTC  time" in ladder
        assert "spread" in ladder
        trades = await run_until(lambda out: "tid" in out, "trades_tail.py", handle.url, "ETH")
        assert " ETH " in trades
        assert "tid" in trades
        mirror = await run_until(
            lambda out: re.search(r"([6-9]|\d\d+) l2Book checks", out) is not None,
            "l4_mirror.py",
            handle.url,
            "BTC",
        )
        last = [line for line in mirror.splitlines() if "l2Book checks" in line][-1]
        checks = int(last.split(" l2Book checks")[0].rsplit(" ", 1)[1])
        assert checks > 5
        assert last.endswith(" 0 mismatches")
        assert "MISMATCH" not in mirror
        assert "Traceback" not in ladder + trades + mirror


async def test_embedding_example_runs_its_own_node() -> None:
    output = await run_until(
        lambda out: out.count("\nheight ") >= 4, "embed.py", "--coin", "ETH", limit=60
    )
    assert "hlbook is serving ws://127.0.0.1:" in output
    lines = [line for line in output.splitlines() if line.startswith("height ")]
    assert len(lines) > 3
    assert " ETH bid " in lines[-1]
    assert "Traceback" not in output
