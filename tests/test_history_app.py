"""The history store inside the running server: a restart with the same ``--history``
answers what was recorded before; a history file hlbook cannot use stops startup with the
reason; a disk that refuses writes degrades the history (logged, counted) while the live
feed goes on."""

import resource
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from fixtures import MainnetSlice
from server_support import receive_until, replay_server, send, subscribe
from test_cli import hlbook_process
from trio_websocket import open_websocket_url

from hlbook.node.formats import Stream

pytestmark = pytest.mark.slow


def _serve(tmp_path: Path, info_url: str, history: Path) -> tuple[str, ...]:
    """``hlbook serve`` of the simulator under ``tmp_path`` with ``--history history``."""
    return (
        "serve",
        "--node-data", str(tmp_path / "data"),
        "--info-url", info_url,
        "--snapshot-path", str(tmp_path / "snap.json"),
        "--port", "0",
        "--history", str(history),
        "--validate-every", "0",
    )  # fmt: skip


async def info(url: str, body: dict[str, Any]) -> Any:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/info", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_restart_with_the_same_history_answers_what_was_recorded(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    history = tmp_path / "history.sqlite"
    fills = [
        (user, fill)
        for raw in mainnet.lines[Stream.FILLS]
        for user, fill in orjson.loads(raw)["events"]
    ]
    trader = max({u for u, _ in fills}, key=lambda u: sum(1 for v, _ in fills if v == u))
    finished = next(
        (e["user"], e["order"]["oid"])
        for raw in mainnet.lines[Stream.STATUSES]
        for e in orjson.loads(raw)["events"]
        if e["status"] == "filled"
    )
    window = {"coin": "BTC", "startTime": 0, "endTime": 2**62}
    requests = [
        {"type": "userFills", "user": trader},
        {"type": "userFillsByTime", "user": trader, "startTime": 0},
        {"type": "candleSnapshot", "req": {**window, "interval": "1m"}},
        {"type": "candleSnapshot", "req": {**window, "interval": "1h"}},
        {"type": "orderStatus", "user": finished[0], "oid": finished[1]},
        # "No end" sentinels and far-future times, as clients send them (they overflowed).
        {"type": "userFillsByTime", "user": trader, "startTime": 0, "endTime": 9999999999999},
        {"type": "userFillsByTime", "user": trader, "startTime": 0, "endTime": 2**53 - 1},
        {"type": "candleSnapshot", "req": {"coin": "BTC", "interval": "1M", "startTime": 2**53}},
    ]
    answers: list[list[Any]] = []
    for run in ("first", "second"):
        async with replay_server(tmp_path / run, mainnet, history=str(history)) as (handle, node):
            if run == "first":
                await node.replay()
                await handle.wait_for_height(mainnet.heights[-1])
                assert await trio.to_thread.run_sync(handle.history.flush, 10)
            else:  # a new node directory, nothing replayed: all from the file
                async with open_websocket_url(handle.url) as ws:
                    fills_of_trader = {"type": "userFills", "user": trader}
                    await send(ws, {"method": "subscribe", "subscription": fills_of_trader})
                    await send(ws, subscribe("BTC", "candle", interval="1m"))
                    firsts = await receive_until(
                        ws, lambda m: m["channel"] == "userFills"
                    )  # the candle's first message comes at once, before it
            answers.append([await info(handle.http_url, body) for body in requests])
    first, second = answers
    assert second == first
    user_fills, by_time, candles, hours, status, no_end, safe_end, far_months = first
    assert no_end == safe_end == by_time
    assert far_months == []
    assert user_fills == [fill for user, fill in fills if user == trader][::-1] != []
    assert by_time == user_fills[::-1]
    assert candles
    assert hours
    assert sum(c["n"] for c in candles) == sum(c["n"] for c in hours)
    assert status["status"] == "order"
    assert status["order"]["status"] == "filled"
    [snapshot] = [m["data"] for m in firsts if m["channel"] == "userFills"]
    assert snapshot["isSnapshot"] is True
    assert snapshot["fills"] == user_fills
    [candle] = [m["data"] for m in firsts if m["channel"] == "candle"]
    assert candle == candles[-1]


@pytest.mark.parametrize("kind", ["garbage", "foreign", "under-a-file"])
async def test_a_history_file_hlbook_cannot_use_stops_startup_with_the_reason(
    tmp_path: Path, kind: str
) -> None:
    import sqlite3

    path = tmp_path / "history.sqlite"
    if kind == "garbage":
        path.write_bytes(b"not a database at all\n" * 100)
    elif kind == "foreign":
        with sqlite3.connect(path) as other:
            other.execute("create table accounts (id integer primary key, name text)")
    else:
        (tmp_path / "a-file").write_text("x")
        path = tmp_path / "a-file" / "history.sqlite"
    before = path.read_bytes() if path.exists() else None
    async with hlbook_process(
        "serve", "--node-data", str(tmp_path), "--port", "0", "--history", str(path)
    ) as proc:
        with trio.fail_after(30):
            status = await proc.process.wait()
        await trio.sleep(0.1)  # the last stderr lines
    assert status == 1, proc.lines
    errors = [line for line in proc.lines if line.strip()]
    assert len(errors) == 1, errors
    assert str(path) in errors[0]
    assert "Traceback" not in errors[0]
    assert (path.read_bytes() if path.exists() else None) == before  # untouched


async def test_a_disk_refusing_writes_degrades_the_history_and_the_feed_goes_on(
    tmp_path: Path,
) -> None:
    from hlbook.sim import SimConfig, run_simulator

    history = tmp_path / "history.sqlite"

    def small_files() -> None:  # in the child: the kernel refuses to grow files past 256 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))

    async with trio.open_nursery() as nursery:
        sim = await nursery.start(
            run_simulator,
            SimConfig(
                node_data=tmp_path / "data", info_port=0, scale=0.2, seed=3, blocks_per_second=40.0
            ),
        )
        async with hlbook_process(
            *_serve(tmp_path, sim.info_url, history), preexec_fn=small_files
        ) as proc:
            url = (await proc.wait_for(r"serving (ws://\S+)")).group(1)
            http = url.replace("ws://", "http://").removesuffix("/ws")
            await proc.wait_for(r"history write failed", limit=60)
            # After the failure: blocks keep coming, to subscribers and to health.
            async with open_websocket_url(url) as ws:
                await send(ws, subscribe("BTC", "l2Book"))
                heights = []
                for _ in range(3):
                    heights.append((await info(http, {"type": "l2Book", "coin": "BTC"}))["time"])
                    await receive_until(ws, lambda m: m["channel"] == "l2Book")
                    await trio.sleep(0.3)
            async with httpx.AsyncClient() as client:
                health = (await client.get(f"{http}/health")).json()
            assert heights == sorted(heights)
            assert heights[0] < heights[-1]
            assert health["status"] == "live"
            assert health["history"]["write_failures"] >= 1
            assert sim.height > 0
            assert not any("Traceback" in line for line in proc.lines)
        nursery.cancel_scope.cancel()


async def test_a_history_file_deleted_while_serving_is_made_again_and_a_restart_resumes_it(
    tmp_path: Path,
) -> None:
    # An operator walkthrough: `rm history.sqlite*` under a running hlbook. It had gone on
    # writing into the deleted file, and the next start found nothing of it.
    import signal

    from hlbook.sim import SimConfig, run_simulator

    history = tmp_path / "history.sqlite"

    async def health(http: str) -> Any:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{http}/health")).json()["history"]

    async def until_written(http: str, above: int) -> int:
        with trio.fail_after(60):
            while (written := (await health(http))["rows_written"]) <= above:
                await trio.sleep(0.1)
        return int(written)

    async with trio.open_nursery() as nursery:
        sim = await nursery.start(
            run_simulator,
            SimConfig(node_data=tmp_path / "data", info_port=0, scale=0.2, seed=5),
        )
        args = _serve(tmp_path, sim.info_url, history)
        async with hlbook_process(*args) as proc:
            await proc.wait_for(rf"history: created new history store {history} \(retention 7d\)")
            url = (await proc.wait_for(r"serving (ws://\S+)")).group(1)
            http = url.replace("ws://", "http://").removesuffix("/ws")
            before = await until_written(http, 0)
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(f"{history}{suffix}").unlink(missing_ok=True)
            found = await proc.wait_for(r"history store .* was deleted or moved away.*", limit=30)
            assert f"created new history store {history}, recording from block" in found.group(0)
            assert history.is_file()
            assert Path(f"{history}.lock").is_file()
            await until_written(http, before)
            state = await health(http)
            assert state["files_lost"] == 1
            assert state["gaps"] >= 2  # the lost range, per stream
            assert await proc.stop(signal.SIGINT) == 0
        async with hlbook_process(*args) as proc:
            await proc.wait_for(rf"history: resuming history store {history} at block \d+ \(")
            assert await proc.stop(signal.SIGINT) == 0
            assert not any("Traceback" in line for line in proc.lines)
        nursery.cancel_scope.cancel()
