"""The ``hlbook`` command as a real process: flags, signals, exit status."""

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from server_support import request, subscribe
from trio_websocket import ConnectionClosed, open_websocket_url

from hlbook.cli import main

pytestmark = pytest.mark.slow

SERVE_FLAGS = [
    "--node-data",
    "--info-url",
    "--snapshot-path",
    "--snapshot-file",
    "--ingest",
    "--from-start",
    "--host",
    "--port",
    "--coins",
    "--markets",
    "--validate-every",
    "--stale-after",
    "--idle-timeout",
    "--max-connections",
    "--max-subscriptions",
    "--max-message-size",
    "--client-queue",
    "--log-level",
]


def test_serve_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in SERVE_FLAGS:
        assert flag in text, flag
    for command in ("serve", "simulate", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])


def test_bad_flags_are_refused_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--markets", "perp,options"]) == 2
    assert capsys.readouterr().err == (
        "hlbook serve: --markets: unknown market(s) options; choose from perp, spot, hip3\n"
    )
    assert main(["serve", "--validate-every", "-1"]) == 2
    assert capsys.readouterr().err == "hlbook serve: --validate-every: must be >= 0: -1.0\n"
    assert main(["serve", "--port", "99999"]) == 2
    assert capsys.readouterr().err == "hlbook serve: --port: must be <= 65535: 99999\n"
    assert main(["serve", "--port", "eighty"]) == 2
    assert capsys.readouterr().err == "hlbook serve: --port: expected an integer, got 'eighty'\n"
    assert main(["demo", "--idle-timeout", "0"]) == 2
    assert capsys.readouterr().err == "hlbook demo: --idle-timeout: must be > 0: 0.0\n"
    with pytest.raises(SystemExit) as exit_:  # what argparse checks itself
        main(["serve", "--ingest", "sideways"])
    assert exit_.value.code == 2
    assert "argument --ingest: invalid choice: 'sideways'" in capsys.readouterr().err


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args in (
            ["serve", "--port", port, "--node-data", str(tmp_path)],
            ["simulate", "--info-port", port, "--node-data", str(tmp_path), "--blocks", "1"],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "hlbook", *args],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 1, done.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
            assert "Traceback" not in done.stderr


class Process:
    """A running ``hlbook`` with its stderr collected line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = trio.Event()

    async def pump(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode() for line in complete)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, pattern: str, limit: float = 30.0, start: int = 0) -> re.Match[str]:
        """The first line from ``start`` on that matches ``pattern`` (waiting for it)."""
        regex = re.compile(pattern)
        with trio.fail_after(limit):
            seen = start
            while True:
                for line in self.lines[seen:]:
                    if found := regex.search(line):
                        return found
                seen = max(seen, len(self.lines))
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"exited {self.process.returncode}:\n" + "\n".join(self.lines)
                    )
                with trio.move_on_after(0.1):
                    await self._changed.wait()

    async def stop(self, signum: int, limit: float = 15.0) -> int:
        self.process.send_signal(signum)
        with trio.fail_after(limit):
            return await self.process.wait()


@asynccontextmanager
async def hlbook_process(*args: str, **popen: Any) -> AsyncIterator[Process]:
    """``python -m hlbook ARGS`` with its stderr collected (``popen``: more Popen options)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "hlbook", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **popen,
    )
    running = Process(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(running.pump)
        try:
            yield running
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
async def test_serve_process_serves_and_stops_cleanly_on_a_signal(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # SIGHUP (a closed terminal, an operator's reload) had killed it: status 129, no log
    # line, clients without a close frame.
    from hlbook.sim import SimConfig, run_simulator

    async with trio.open_nursery() as nursery:
        sim = await nursery.start(
            run_simulator, SimConfig(node_data=tmp_path / "data", info_port=0, scale=0.05)
        )
        async with hlbook_process(
            "serve",
            "--node-data", str(tmp_path / "data"),
            "--info-url", sim.info_url,
            "--snapshot-path", str(tmp_path / "snap.json"),
            "--port", "0",
        ) as proc:  # fmt: skip
            url = (await proc.wait_for(r"serving (ws://\S+)")).group(1)
            await proc.wait_for(r"books loaded at height")
            # Once ready, what is alive is exempt from the collector (no full-collection
            # pauses of every module and book on the blocks' path).
            frozen = await proc.wait_for(r"books ready: (\d+) objects exempted from garbage")
            assert int(frozen.group(1)) > 10_000
            async with open_websocket_url(url) as ws:
                assert (await request(ws, subscribe("BTC", "l2Book")))["channel"] == (
                    "subscriptionResponse"
                )
                closed: list[ConnectionClosed] = []

                async def read() -> None:
                    try:
                        while True:
                            await ws.get_message()
                    except ConnectionClosed as exc:
                        closed.append(exc)

                async with trio.open_nursery() as readers:
                    readers.start_soon(read)
                    await trio.sleep(0.5)
                    assert await proc.stop(signum) == 0
                assert closed[0].reason is not None
                assert closed[0].reason.code == 1001
            assert any(f"received {signum.name}, shutting down" in line for line in proc.lines)
            assert not any("Traceback" in line for line in proc.lines)
        nursery.cancel_scope.cancel()


async def test_sigint_during_bootstrap_exits_zero(tmp_path: Path) -> None:
    """The info server is unreachable: hlbook retries, says why, and still stops at once."""
    data = tmp_path / "data"
    for stream in ("order_statuses", "raw_book_diffs", "fills"):
        path = data / f"node_{stream}_by_block" / "hourly" / "20260505" / "17"
        path.parent.mkdir(parents=True)
        path.touch()
    with trio.socket.socket() as unused:
        await unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with hlbook_process(
        "serve",
        "--node-data",
        str(data),
        "--info-url",
        f"http://127.0.0.1:{port}/info",
        "--port",
        "0",
    ) as proc:
        await proc.wait_for(r"snapshot failed: cannot reach the node's info server")
        assert await proc.stop(signal.SIGINT) == 0


async def test_sigterm_while_loading_a_big_snapshot_exits_zero(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for stream in ("order_statuses", "raw_book_diffs", "fills"):
        path = data / f"node_{stream}_by_block" / "hourly" / "20260505" / "17"
        path.parent.mkdir(parents=True)
        path.touch()
    snapshot = tmp_path / "big.json"
    order = {
        "coin": "BTC", "side": "B", "limitPx": "1.0", "sz": "1.0", "oid": 0, "timestamp": 1,
        "triggerCondition": "N/A", "isTrigger": False, "triggerPx": "0.0", "children": [],
        "isPositionTpsl": False, "reduceOnly": False, "orderType": "Limit", "origSz": "1.0",
        "tif": "Alo", "cloid": None,
    }  # fmt: skip
    coins = []
    oid = 0
    for index in range(300):
        bids = []
        for level in range(1000):
            oid += 1
            bids.append(["0x" + "a" * 40, dict(order, oid=oid, limitPx=f"{10000 - level}.0")])
        coins.append([f"C{index}", [bids, []]])
    snapshot.write_bytes(msgspec.json.encode([1000, coins]))
    async with hlbook_process(
        "serve", "--node-data", str(data), "--snapshot-file", str(snapshot), "--port", "0"
    ) as proc:
        await proc.wait_for(r"snapshot: read \d+\.\d MB")
        started = trio.current_time()
        assert await proc.stop(signal.SIGTERM) == 0
        assert trio.current_time() - started < 10
        assert not any("books loaded" in line for line in proc.lines)


async def test_demo_prints_a_url_that_serves_books(tmp_path: Path) -> None:
    # Started elsewhere than the checkout: the commands it prints must still work.
    async with hlbook_process("demo", "--port", "0", "--scale", "0.05", cwd=tmp_path) as proc:
        assert proc.process.stdout is not None
        stdout = b""
        with trio.fail_after(60):
            while b"Ctrl-C stops it" not in stdout:
                stdout += await proc.process.stdout.receive_some(4096)
        url = re.search(rb"WebSocket:\s+(ws://\S+)", stdout)
        assert url is not None
        # The live page's URL comes first, and it serves the page.
        printout = stdout[stdout.index(b"\nhlbook demo: ") + 1 :]
        page = re.match(rb"hlbook demo: the live book page is at (http://\S+/)\n", printout)
        assert page is not None
        async with httpx.AsyncClient() as client:
            response = await client.get(page.group(1).decode())
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "content-security-policy" in response.headers
        assert b'id="ladder"' in response.content
        # The client commands it prints run as printed, from another directory too.
        commands = re.findall(rb"\n(?:  try:)? +(\S*python\S*) (\S+\.py) (ws://\S+) BTC", stdout)
        assert [Path(script.decode()).name for _, script, _ in commands] == [
            "l2_ladder.py", "trades_tail.py", "l4_mirror.py",
        ]  # fmt: skip
        python, script, ws_url = commands[0]
        ladder = await trio.lowlevel.open_process(
            [python.decode(), script.decode(), ws_url.decode(), "BTC"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        assert ladder.stdout is not None
        printed = b""
        try:
            with trio.fail_after(30):
                while printed.count(b"spread") < 2:
                    chunk = await ladder.stdout.receive_some(4096)
                    assert chunk, printed.decode(errors="replace")
                    printed += chunk
        finally:
            ladder.kill()
            await ladder.wait()
        async with open_websocket_url(url.group(1).decode()) as ws:
            await ws.send_message(
                '{"method":"subscribe","subscription":{"type":"trades","coin":"ETH"}}'
            )
            import json

            with trio.fail_after(20):
                while True:
                    message = json.loads(await ws.get_message())
                    if message["channel"] == "trades":
                        break
        assert await proc.stop(signal.SIGINT) == 0
        demo_dir = re.search(rb"files\s+to (\S+)/data", stdout)
        assert demo_dir is not None
        assert not Path(demo_dir.group(1).decode()).exists()  # the temporary directory is gone


async def test_the_library_raises_startup_error_for_a_taken_port(tmp_path: Path) -> None:
    import hlbook

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = hlbook.Config(node_data=tmp_path, port=taken.getsockname()[1])
        async with trio.open_nursery() as nursery:
            with pytest.raises(hlbook.StartupError, match=r"cannot listen on 127\.0\.0\.1"):
                await nursery.start(hlbook.serve, config)
