"""``hlbook serve --workers 2`` as real processes: the port shared, every block to every
client, the set's health and metrics, a killed worker restarted, a clean stop."""

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from server_support import order_tuples, subscribe
from test_cli import Process
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

pytestmark = pytest.mark.slow

COIN = "BTC"


class Supervisor(Process):
    """A running ``hlbook serve --workers N`` with its stderr collected line by line."""

    def pids(self) -> dict[int, int]:
        """The newest pid of each worker, from the supervisor's log."""
        found: dict[int, int] = {}
        for line in self.lines:
            if match := re.search(
                r"hlbook: worker (\d+) (?:started|restarted) \(pid (\d+)\)", line
            ):
                found[int(match.group(1))] = int(match.group(2))
        return found


@asynccontextmanager
async def workers_process(*args: str) -> AsyncIterator[Supervisor]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "hlbook", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    running = Supervisor(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(running.pump)
        try:
            yield running
        finally:
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(20):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            for pid in running.pids().values():  # never leave a worker behind
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            nursery.cancel_scope.cancel()


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@asynccontextmanager
async def sim_and_workers(
    tmp_path: Path, *extra: str
) -> AsyncIterator[tuple[Supervisor, Any, str, str]]:
    """The simulator in this process and ``hlbook serve --workers 2`` serving it, both
    workers' books loaded: (supervisor, simulator, ws URL, http URL)."""
    from hlbook.sim import SimConfig, run_simulator

    async with trio.open_nursery() as nursery:
        sim = await nursery.start(
            run_simulator,
            SimConfig(node_data=tmp_path / "data", info_port=0, scale=0.05, seed=11),
        )
        async with workers_process(
            "--node-data", str(tmp_path / "data"),
            "--info-url", sim.info_url,
            "--snapshot-path", str(tmp_path / "snap.json"),
            "--validate-every", "0",
            "--port", "0",
            "--workers", "2",
            *extra,
        ) as supervisor:  # fmt: skip
            url = (await supervisor.wait_for(r"serving (ws://\S+) with 2 workers")).group(1)
            await supervisor.wait_for(r"2/2 workers ready")
            http_url = url.removesuffix("/ws").replace("ws://", "http://")
            yield supervisor, sim, url, http_url
        nursery.cancel_scope.cancel()


async def _worker_of(ws: WebSocketConnection) -> int:
    """Which worker serves this connection (its health says)."""
    await ws.send_message('{"method":"health"}')
    with trio.fail_after(10):
        while True:
            message = json.loads(await ws.get_message())
            if message.get("channel") == "health":
                worker: int = message["data"]["worker"]
                return worker


class L4Client:
    """One connection's ``l4Book`` messages: the mirror they build and their heights."""

    def __init__(self, worker: int) -> None:
        from l4_mirror import L4Mirror

        self.worker = worker
        self.mirror = L4Mirror()
        self.snapshot_height: int | None = None
        self.heights: list[int] = []

    async def run(self, ws: WebSocketConnection) -> None:
        await ws.send_message(json.dumps(subscribe(COIN, "l4Book")))
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed:
                return
            message = json.loads(raw)
            if message.get("channel") != "l4Book":
                continue
            data = message["data"]
            if "Snapshot" in data:
                assert self.snapshot_height is None, "a second snapshot: this client lagged"
                self.snapshot_height = data["Snapshot"]["height"]
                self.mirror.load(data["Snapshot"])
            else:
                updates = data["Updates"]
                assert self.snapshot_height is not None
                self.heights.append(updates["height"])
                self.mirror.apply(updates)

    def orders(self) -> tuple[list[tuple[int, str, str]], list[tuple[int, str, str]]]:
        from l4_mirror import canonical

        sides = []
        for side in ("B", "A"):
            levels = self.mirror.levels[side]
            sides.append(
                [
                    (oid, canonical(px), canonical(self.mirror.orders[oid][2]))
                    for px in sorted(levels, reverse=side == "B")
                    for oid in levels[px]
                ]
            )
        return sides[0], sides[1]


async def _connect_to_both(
    url: str, stack: Any, per_worker: int
) -> list[tuple[WebSocketConnection, int]]:
    """Connections until each worker has ``per_worker`` (the kernel picks the worker)."""
    kept: list[tuple[WebSocketConnection, int]] = []
    for _ in range(200):
        ws = await stack.enter_async_context(open_websocket_url(url, max_message_size=1 << 26))
        worker = await _worker_of(ws)
        if sum(1 for _, w in kept if w == worker) < per_worker:
            kept.append((ws, worker))
        else:
            await ws.aclose()
        if len(kept) == 2 * per_worker:
            return kept
    raise AssertionError(f"200 connections did not reach both workers: {kept}")


async def _serves_on(url: str, worker: int) -> None:
    """A connection that lands on ``worker`` gets the book and blocks (the kernel picks
    the worker: connect until one does)."""
    with trio.fail_after(30):
        while True:
            async with open_websocket_url(url, max_message_size=1 << 26) as ws:
                if await _worker_of(ws) != worker:
                    continue
                client = L4Client(worker)
                with trio.move_on_after(10):
                    await client.run(ws)
                assert client.snapshot_height is not None
                assert client.heights
                return


async def test_two_workers_share_the_port_and_every_client_gets_every_block(
    tmp_path: Path,
) -> None:
    from contextlib import AsyncExitStack

    async with sim_and_workers(tmp_path) as (supervisor, sim, url, http_url):
        clients: list[L4Client] = []
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            for ws, worker in await _connect_to_both(url, stack, per_worker=3):
                client = L4Client(worker)
                clients.append(client)
                nursery.start_soon(client.run, ws)
            assert {client.worker for client in clients} == {0, 1}

            async with httpx.AsyncClient() as http:
                # /health on any worker describes both: the connections are on both.
                with trio.fail_after(10):
                    while True:
                        health = (await http.get(f"{http_url}/health")).json()
                        each = health["workers"]["each"]
                        subscribed = all(c.snapshot_height is not None for c in clients)
                        if subscribed and all(entry.get("subscriptions") for entry in each):
                            break
                        await trio.sleep(0.1)
                assert health["worker"] in (0, 1)
                assert health["workers"]["count"] == 2
                assert health["workers"]["live"] == 2
                assert [entry["clients"] for entry in each] == [3, 3]
                assert health["workers"]["clients"] == 6
                # Each worker, once its books were ready, exempted them from the collector.
                for worker in (0, 1):
                    frozen = await supervisor.wait_for(
                        rf"hlbook\S*\[w{worker}\].*books ready: (\d+) objects exempted"
                    )
                    assert int(frozen.group(1)) > 10_000

                await trio.sleep(2.0)  # blocks flow to every client
                sim.pause()
                final = await sim.wait_idle()
                want = tuple(order_tuples(side) for side in sim.coin_orders(COIN))
                # Each client's book, rebuilt from its snapshot and updates, ends as the
                # node's: no block missing, none applied twice.
                with trio.fail_after(20):
                    while not all(client.orders() == want for client in clients):
                        await trio.sleep(0.05)

                metrics = (await http.get(f"{http_url}/metrics")).text
            nursery.cancel_scope.cancel()

        for client in clients:
            assert client.snapshot_height is not None
            assert client.heights, "no update at all"
            # In order, no duplicates, all after the snapshot.
            assert client.heights == sorted(set(client.heights))
            assert client.heights[0] > client.snapshot_height
            assert client.heights[-1] <= final
        # Every client saw the same blocks from the highest snapshot on, whichever worker.
        start = max(client.snapshot_height or 0 for client in clients)
        sequences = {tuple(h for h in client.heights if h > start) for client in clients}
        assert len(sequences) == 1
        assert len(sequences.pop()) > 5

        assert 'hlbook_worker_up{worker="0"} 1.0' in metrics
        assert 'hlbook_worker_up{worker="1"} 1.0' in metrics
        assert "hlbook_workers 2.0" in metrics
        for label in ("0", "1"):
            sent = re.search(
                rf'^hlbook_messages_sent_total{{worker="{label}"}} (\S+)$', metrics, re.M
            )
            assert sent is not None
            assert float(sent.group(1)) > 0
        assert not any("Traceback" in line for line in supervisor.lines)


async def test_a_killed_worker_comes_back_and_sigterm_stops_every_process(
    tmp_path: Path,
) -> None:
    async with sim_and_workers(tmp_path) as (supervisor, _sim, url, http_url):
        before = supervisor.pids()
        assert set(before) == {0, 1}
        mark = len(supervisor.lines)
        os.kill(before[1], signal.SIGKILL)
        await supervisor.wait_for(
            rf"worker 1 \(pid {before[1]}\) was killed by SIGKILL .*restarting it", start=mark
        )
        await supervisor.wait_for(r"worker 1 restarted \(pid \d+\)", start=mark)
        await supervisor.wait_for(r"worker 1 ready \(2/2 workers ready\)", start=mark)
        after = supervisor.pids()
        assert after[0] == before[0]
        assert after[1] != before[1]
        assert not _alive(before[1])

        # The new worker 1 serves: a connection that lands on it gets the book and blocks.
        await _serves_on(url, 1)
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{http_url}/health")).json()
        assert health["workers"]["restarts"] == 1
        assert [entry["restarts"] for entry in health["workers"]["each"]] == [0, 1]

        # SIGTERM: every worker stops, then the supervisor, with status 0.
        supervisor.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await supervisor.process.wait() == 0
        for pid in after.values():
            assert not _alive(pid)
        assert any("hlbook[w0]: received SIGTERM" in line for line in supervisor.lines)
        assert not any("Traceback" in line for line in supervisor.lines)


@attrs.frozen
class Attempt:
    """One ``GET /health`` on a new connection, by the clients of the restart test."""

    started: float
    status: int | None = None
    """``None``: no answer (the connection failed)."""
    worker: int | None = None
    generation: int | None = None
    """The answering worker's restarts."""
    health: str | None = None
    """Its ``status`` (``live``, ``bootstrapping``...)."""
    error: str | None = None


async def _health_attempts(http_url: str, attempts: list[Attempt], stop: trio.Event) -> None:
    """``GET /health`` on a new connection each time until ``stop``, recording each."""
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection every request
    async with httpx.AsyncClient(limits=limits, timeout=10) as http:
        while not stop.is_set():
            started = trio.current_time()
            try:
                response = await http.get(f"{http_url}/health")
            except httpx.TransportError as exc:
                attempts.append(Attempt(started, error=repr(exc)))
            else:
                health = response.json()
                worker = health.get("worker")
                each = {entry["worker"]: entry for entry in health["workers"]["each"]}
                generation = each.get(worker, {}).get("restarts")
                attempts.append(
                    Attempt(started, response.status_code, worker, generation, health["status"])
                )
            await trio.sleep(0.01)


async def test_a_restarted_worker_takes_no_connection_before_its_books_are_ready(
    tmp_path: Path,
) -> None:
    # SO_REUSEPORT gives every listening socket a share of new connections: a restarted
    # worker that listened at once answered its share "503 bootstrapping" while worker 0
    # could serve them (about 1 in 78 connections in an operator's run).
    async with sim_and_workers(tmp_path) as (supervisor, _sim, _url, http_url):
        before = supervisor.pids()
        attempts: list[Attempt] = []
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(_health_attempts, http_url, attempts, stop)
            with trio.fail_after(30):
                while {a.worker for a in attempts} != {0, 1}:
                    await trio.sleep(0.05)
            mark = len(supervisor.lines)
            killed = trio.current_time()
            os.kill(before[1], signal.SIGKILL)
            await supervisor.wait_for(
                rf"worker 1 \(pid {before[1]}\) was killed by SIGKILL", start=mark
            )
            seen = trio.current_time()  # its sockets closed before it could be reaped
            await supervisor.wait_for(
                r"worker 1 restarted \(pid \d+\); it takes connections once its books are"
                r" ready \(1 other worker serving meanwhile\)",
                start=mark,
            )
            await supervisor.wait_for(r"worker 1 ready \(2/2 workers ready\)", start=mark)
            # Until the new worker 1 has answered a few: it joined once ready.
            with trio.fail_after(30):
                while sum(1 for a in attempts if (a.worker, a.generation) == (1, 1)) < 5:
                    await trio.sleep(0.05)
            stop.set()

        after_kill = [a for a in attempts if a.started >= killed]
        loading = [a for a in after_kill if a.generation != 1]
        assert len(loading) > 20, "too few connections while worker 1 loaded to tell"
        # Not one client got a 503 (or anything but 200) since the set was first ready.
        assert [a for a in attempts if a.status not in (None, 200)] == []
        # No connection failed, except those on the killed worker when it died (in
        # flight, or queued on its sockets: the kernel resets them), all started before
        # its death was logged: the unavoidable window of a SIGKILL.
        assert [a for a in attempts if a.error is not None and a.started >= seen] == []
        # Between the kill and the new worker's readiness, worker 0 answered everything.
        assert {a.worker for a in loading if a.status == 200} == {0}
        log = "\n".join(supervisor.lines[mark:])
        assert re.search(r"hlbook\[w1\]: accepting connections \(books ready\)", log)
        assert "before the books are ready" not in log
        assert "Traceback" not in "\n".join(supervisor.lines)


async def test_a_frozen_worker_is_killed_and_restarted(tmp_path: Path) -> None:
    # SIGSTOP: the process lives, its sockets stay in the port's group, and the kernel
    # kept handing it new connections that hung. The supervisor's pings go unanswered.
    async with sim_and_workers(tmp_path, "--worker-heartbeat-timeout", "3") as (
        supervisor,
        _sim,
        url,
        http_url,
    ):
        before = supervisor.pids()
        mark = len(supervisor.lines)
        os.kill(before[1], signal.SIGSTOP)
        await supervisor.wait_for(
            rf"worker 1 \(pid {before[1]}\) has not answered for [\d.]+ s \(process state:"
            r" T stopped\): killing it with SIGKILL",
            start=mark,
        )
        await supervisor.wait_for(
            rf"worker 1 \(pid {before[1]}\) was killed by SIGKILL .*restarting it", start=mark
        )
        await supervisor.wait_for(r"worker 1 ready \(2/2 workers ready\)", start=mark)
        assert not _alive(before[1])
        after = supervisor.pids()
        assert after[0] == before[0]  # worker 0, busy but answering, was left alone
        assert after[1] != before[1]
        await _serves_on(url, 1)
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{http_url}/health")).json()
        assert health["workers"]["live"] == 2
        assert [entry["accepting"] for entry in health["workers"]["each"]] == [True, True]
        killings = [line for line in supervisor.lines if "has not answered" in line]
        assert len(killings) == 1, killings
        assert not any("Traceback" in line for line in supervisor.lines)


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    async with sim_and_workers(tmp_path) as (supervisor, _sim, _url, _http_url):
        pids = supervisor.pids()
        control = Path((await supervisor.wait_for(r"control directory (\S+)")).group(1))
        assert sorted(path.name for path in control.iterdir()) == ["worker-0.sock", "worker-1.sock"]
        supervisor.process.kill()
        await supervisor.process.wait()
        # Their stdin (a pipe from the supervisor) ends: each stops on its own, and the
        # last one out removes the control directory.
        with trio.fail_after(20):
            while any(_alive(pid) for pid in pids.values()):
                await trio.sleep(0.05)
        assert not control.exists()


async def test_a_worker_that_cannot_start_stops_the_set_with_exit_1(tmp_path: Path) -> None:
    async with workers_process(
        "--node-data", str(tmp_path),
        "--port", "0",
        "--workers", "2",
        "--tls-cert", str(tmp_path / "missing.pem"),
        "--tls-key", str(tmp_path / "missing.key"),
    ) as supervisor:  # fmt: skip
        with trio.fail_after(30):
            assert await supervisor.process.wait() == 1
        text = "\n".join(supervisor.lines)
        assert "TLS: cannot read" in text
        assert "could not start (exited with status 1; see above): stopping" in text
        assert "Traceback" not in text
        for pid in supervisor.pids().values():
            assert not _alive(pid)


def test_a_taken_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "hlbook", "serve", "--workers", "2", "--port", port,
             "--node-data", str(tmp_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
