"""Faults: the node goes quiet, loses a block, writes garbage or disagrees; clients misbehave.

hlbook must say what happened, repair itself, keep serving, and leak nothing.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from fixtures import MainnetSlice
from recorded_node import RecordedNode
from server_support import (
    receive_until,
    same_books,
    send,
    server_config,
    settle,
    sim_and_server,
    subscribe,
    task_count,
)
from trio_websocket import ConnectionClosed, open_websocket_url, wrap_client_stream

import hlbook
from hlbook.node.formats import Layout, Stream

pytestmark = pytest.mark.slow


async def test_node_quiet_then_resuming(tmp_path: Path) -> None:
    async with (
        sim_and_server(tmp_path, stale_after=0.5) as (handle, node),
        open_websocket_url(handle.url) as ws,
    ):
        await send(ws, subscribe("BTC", "l2Book"))
        node.pause()
        *_, message = await receive_until(ws, lambda m: m["channel"] == "error")
        assert message["data"].startswith("feed stale: no block from the node for 0.5 s")
        assert handle.health()["status"] == "stale"
        assert not handle.health()["live"]
        node.resume()
        with trio.fail_after(10):
            while handle.health()["status"] != "live":
                await trio.sleep(0.02)
        await settle(handle, node)
        assert same_books(handle, node) == []
        assert handle.health()["pipeline"]["stale_periods"] == 1


@pytest.mark.parametrize(
    "stream", [None, Stream.DIFFS, Stream.STATUSES], ids=["all", "diffs", "statuses"]
)
async def test_a_skipped_block_is_a_gap_and_hlbook_resyncs(
    tmp_path: Path, stream: Stream | None
) -> None:
    async with (
        sim_and_server(tmp_path) as (handle, node),
        open_websocket_url(handle.url, max_message_size=1 << 26) as ws,
    ):
        await send(ws, subscribe("BTC", "l4Book"))
        first = json.loads(await ws.get_message())
        assert first["channel"] == "subscriptionResponse"
        snapshot = json.loads(await ws.get_message())
        assert "Snapshot" in snapshot["data"]
        await node.wait_for_height(node.height + 3)
        node.skip_block(stream)
        await node.wait_for_height(node.height + 10)
        await settle(handle, node)
        assert same_books(handle, node) == []
        health = handle.health()
        assert health["pipeline"]["gaps"] >= 1
        assert health["pipeline"]["bootstraps"] >= 2
        assert health["status"] == "live"
        # The l4Book subscriber was sent a fresh snapshot after the resync.
        with trio.fail_after(5):
            while True:
                message = json.loads(await ws.get_message())
                if message["channel"] == "l4Book" and "Snapshot" in message["data"]:
                    break
        assert message["data"]["Snapshot"]["height"] > snapshot["data"]["Snapshot"]["height"]


async def test_a_malformed_line_is_reported_and_healed(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, node):
        await node.wait_for_height(node.height + 2)
        node.corrupt_next_line(Stream.STATUSES)
        await node.wait_for_height(node.height + 10)
        await settle(handle, node)
        assert same_books(handle, node) == []
        health = handle.health()
        assert health["pipeline"]["bad_lines"] == 1
        assert "malformed order_statuses line" in (health["pipeline"]["last_error"] or "")
        assert health["pipeline"]["bootstraps"] >= 2


async def test_a_line_garbled_in_place_is_never_half_applied(tmp_path: Path) -> None:
    """Streaming: the garbled diff line's events are lost; its block must come from a
    snapshot (one at or past it), never be applied without them."""
    async with sim_and_server(
        tmp_path, sim={"layout": Layout.STREAMING, "scale": 0.2, "diff_ahead": 3}
    ) as (
        handle,
        node,
    ):
        await node.wait_for_height(node.height + 2)
        node.corrupt_next_line(Stream.DIFFS, replace=True)
        await node.wait_for_height(node.height + 10)
        await settle(handle, node)
        assert same_books(handle, node) == []
        health = handle.health()
        assert health["pipeline"]["bad_lines"] == 1
        # Healed by the snapshot alone: no incomplete block was applied and then diverged.
        assert health["pipeline"]["divergences"] == 0
        assert health["status"] == "live"


async def test_validation_checks_a_live_feed(tmp_path: Path) -> None:
    """Snapshots are older than the books by the time they are read: they are moved forward."""
    async with sim_and_server(tmp_path, sim={"scale": 0.2}, validate_every=0.2) as (handle, node):
        with trio.fail_after(20):
            while handle.health()["pipeline"]["validations"] < 3:
                await trio.sleep(0.05)
        pipeline = handle.health()["pipeline"]
        assert pipeline["validation_mismatches"] == 0
        assert pipeline["bootstraps"] == 1
        assert node.height > node.start_height + 10  # the node kept writing all along


async def test_a_disagreeing_snapshot_is_found_and_repaired(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path, validate_every=0.3) as (handle, node):
        with trio.fail_after(10):
            while handle.health()["pipeline"]["validations"] < 1:
                await trio.sleep(0.05)
        assert handle.health()["pipeline"]["validation_mismatches"] == 0
        bootstraps = handle.health()["pipeline"]["bootstraps"]
        node.disagree_next_snapshot()
        with trio.fail_after(10):
            while handle.health()["pipeline"]["validation_mismatches"] < 1:
                await trio.sleep(0.05)

        # Which heal applies depends on where the altered order's coin is by the time the
        # snapshot is compared (a loaded machine moves it more): untouched since the
        # snapshot -> that coin is repaired in place; touched since -> re-bootstrap; the
        # altered order touched by a later diff -> the snapshot itself does not fit the
        # node's own blocks and hlbook's books are kept. Each is the right answer.
        def healed() -> list[str]:
            pipeline = handle.health()["pipeline"]
            return [
                name
                for name, done in (
                    ("repaired", pipeline["coins_repaired"] >= 1),
                    ("re-bootstrapped", pipeline["bootstraps"] > bootstraps),
                    ("snapshot judged unfit", pipeline["snapshots_unfit"] >= 1),
                )
                if done
            ]

        with trio.fail_after(10):
            while not healed():
                await trio.sleep(0.05)
        # The node is the truth: later checks (or a divergence) bring hlbook back to it.
        with trio.fail_after(20):
            while True:
                await settle(handle, node)
                if not same_books(handle, node):
                    break
                node.resume()
                await trio.sleep(0.5)
        assert handle.health()["status"] == "live"


async def test_a_client_that_never_reads_does_not_hurt_others(tmp_path: Path) -> None:
    async with sim_and_server(
        # 128: small enough that the slow client overflows in seconds, large enough that
        # the good one (read by this test, on a loaded machine) never does.
        tmp_path,
        sim={"scale": 0.3},
        client_queue_messages=128,
        client_queue_bytes=1 << 22,
    ) as (handle, node):
        coins = node.coins()
        # The slow client: a tiny receive buffer and nobody reading it.
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", handle.port))
        stream = trio.SocketStream(sock)
        async with trio.open_nursery() as nursery:
            slow = await wrap_client_stream(
                nursery, stream, "127.0.0.1", "/ws", message_queue_size=1
            )
            for coin in coins:
                await send(slow, subscribe(coin, "trades"))
            for coin in coins[:3]:
                await send(slow, subscribe(coin, "l4Book"))
            # A well-behaved client alongside it.
            async with open_websocket_url(handle.url, max_message_size=1 << 26) as good:
                await send(good, subscribe("BTC", "trades"))
                await send(good, subscribe("BTC", "l4Book"))
                received = 0
                with trio.fail_after(60):
                    while handle.hub.stats.disconnected_for_lag < 1:
                        message = json.loads(await good.get_message())
                        received += message["channel"] in ("trades", "l4Book")
                        for client in handle.client_stats():
                            # Memory stays bounded whatever the slow client does.
                            assert client["queued_bytes"] <= 1 << 22
                # The good client is still served, with no gap in its l4Book updates.
                heights: list[int] = []
                with trio.fail_after(10):
                    while len(heights) < 10:
                        message = json.loads(await good.get_message())
                        if message["channel"] == "l4Book" and "Updates" in message["data"]:
                            heights.append(message["data"]["Updates"]["height"])
                assert heights == sorted(heights)
                still = [c for c in handle.client_stats() if c["subscriptions"]]
                assert len(still) == 1  # the good client
                assert not still[0]["disconnected_for_lag"]
            assert received > 0
            reasons = handle.health()["connections"]["recent_lag_disconnects"]
            assert reasons
            assert reasons[0].startswith("client too slow: ")
            nursery.cancel_scope.cancel()


async def test_a_thousand_subscriptions(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path, max_subscriptions=400) as (handle, node):
        coins = node.coins()
        wanted: list[dict[str, Any]] = []
        for coin in coins:
            for levels in range(1, 101):
                wanted.append(subscribe(coin, "l2Book", nLevels=levels))
            for sig in (2, 3, 4, 5):
                wanted.append(subscribe(coin, "l2Book", nSigFigs=sig))
            wanted.append(subscribe(coin, "bbo"))
            wanted.append(subscribe(coin, "trades"))
        assert len(wanted) > 700
        async with trio.open_nursery() as nursery:
            sockets = []
            for start in range(0, len(wanted), 300):
                ws = await nursery.start(_client, handle.url)
                sockets.append(ws)
                for request in wanted[start : start + 300]:
                    await send(ws, request)
            with trio.fail_after(20):
                while handle.hub.subscription_count < len(wanted):
                    await trio.sleep(0.05)
            # Every connection keeps getting data.
            for ws in sockets:
                with trio.fail_after(10):
                    seen = 0
                    while seen < 5:
                        message = json.loads(await ws.get_message())
                        seen += message["channel"] in ("l2Book", "bbo", "trades")
            assert handle.health()["subscriptions"] == len(wanted)
            nursery.cancel_scope.cancel()


async def _client(
    url: str, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_websocket_url(url) as ws:
        task_status.started(ws)
        await trio.sleep_forever()


async def test_many_connects_and_disconnects_leak_nothing(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, _node):
        baseline_tasks = task_count()
        baseline_fds = len(os.listdir("/proc/self/fd"))
        for round_ in range(150):
            if round_ % 3 == 0:
                # Abrupt: drop the TCP connection without a close handshake.
                sock = trio.socket.socket()
                await sock.connect(("127.0.0.1", handle.port))
                stream = trio.SocketStream(sock)
                async with trio.open_nursery() as nursery:
                    ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/ws")
                    await send(ws, subscribe("BTC", "l2Book"))
                    await stream.aclose()
                    nursery.cancel_scope.cancel()
            else:
                async with open_websocket_url(handle.url) as ws:
                    await send(ws, subscribe("ETH", "trades"))
                    await send(ws, {"method": "ping"})
                    await ws.get_message()
        with trio.fail_after(10):
            while handle.health()["clients"] or handle.hub.subscription_count:
                await trio.sleep(0.05)
        await trio.sleep(0.2)
        assert task_count() <= baseline_tasks
        assert len(os.listdir("/proc/self/fd")) <= baseline_fds + 2
        assert handle.health()["connections"]["accepted"] >= 150
        with pytest.raises(ConnectionClosed):
            raise ConnectionClosed(None)  # keep the import honest for type checkers


async def test_a_snapshot_with_a_duplicate_order_is_retried_never_fatal(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    height, coins = orjson.loads(mainnet.snapshot)
    bids = coins[0][1][0]
    bids.append(bids[0])  # the same oid twice
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_bytes(orjson.dumps([height, coins]))
    node = RecordedNode(tmp_path / "data", mainnet, Layout.BY_BLOCK)
    config = server_config(
        tmp_path,
        "http://127.0.0.1:9/info",  # nothing there: the file is the only source
        snapshot_file=snapshot,
        from_start=True,
        retry_max=0.2,
    )
    async with trio.open_nursery() as nursery:
        await node.replay(interval=0, blocks=5)
        handle = await nursery.start(hlbook.serve, config)
        with trio.fail_after(10):
            while "rests twice" not in (handle.health()["pipeline"]["last_error"] or ""):
                await trio.sleep(0.05)
        assert handle.health()["status"] == "bootstrapping"
        snapshot.write_bytes(mainnet.snapshot)  # the operator fixes the file
        with trio.fail_after(10):
            await handle.wait_for_height(mainnet.height + 5)
        assert handle.health()["status"] == "live"
        node.close()
        nursery.cancel_scope.cancel()


async def test_subscribers_hear_when_a_resync_cannot_finish(tmp_path: Path) -> None:
    async with (
        sim_and_server(tmp_path, stale_after=0.5, retry_max=0.2) as (handle, node),
        open_websocket_url(handle.url) as ws,
    ):
        await send(ws, subscribe("BTC", "l2Book"))
        # The node can no longer write snapshots where hlbook asks for them...
        snapshot = tmp_path / "snapshot.json"
        snapshot.unlink()
        snapshot.mkdir()
        node.skip_block()  # ...and a lost block needs one.
        *_, message = await receive_until(ws, lambda m: m["channel"] == "error")
        assert message["data"].startswith("feed stale: no block applied for 0.5 s while resyncing")
        assert handle.health()["status"] == "resyncing"
        snapshot.rmdir()
        with trio.fail_after(10):
            while handle.health()["status"] != "live":
                await trio.sleep(0.02)
        await settle(handle, node)
        assert same_books(handle, node) == []


async def test_a_fills_directory_that_appears_late_is_followed(tmp_path: Path) -> None:
    from hlbook.sim import SimConfig, run_simulator

    sim = SimConfig(node_data=tmp_path / "data", info_port=0, scale=0.2, seed=3)
    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_simulator, sim)
        with trio.fail_after(10):
            while node.current_file(Stream.FILLS) is None:  # its file is open
                await trio.sleep(0.01)
        fills = node.stream_dir(Stream.FILLS)
        hidden = fills.with_name("hidden")
        fills.rename(hidden)  # the simulator keeps writing through its open file
        config = server_config(tmp_path, node.info_url)
        handle = await nursery.start(hlbook.serve, config)
        with trio.fail_after(30):
            await handle.wait_ready()
        assert "fills" not in handle.health()["streams"]
        async with open_websocket_url(handle.url) as ws:
            for coin in node.coins():
                await send(ws, subscribe(coin, "trades"))
            hidden.rename(fills)
            with trio.fail_after(30):
                while True:
                    message = json.loads(await ws.get_message())
                    if message["channel"] == "trades":
                        break
        assert "fills" in handle.health()["streams"]
        assert handle.health()["pipeline"]["bootstraps"] == 2
        nursery.cancel_scope.cancel()


async def test_a_status_file_that_vanishes_makes_the_feed_stale_until_it_returns(
    tmp_path: Path,
) -> None:
    from hlbook.sim import SimConfig, run_simulator

    sim = SimConfig(node_data=tmp_path / "data", info_port=0, scale=0.2, seed=5)
    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_simulator, sim)
        handle = await nursery.start(
            hlbook.serve, server_config(tmp_path, node.info_url, stale_after=1.0)
        )
        with trio.fail_after(30):
            await handle.wait_for_height(sim.start_height + 3)
        current = node.current_file(Stream.STATUSES)
        assert current is not None
        # The node keeps writing through its open file; hlbook finds a directory there.
        moved = current.with_name(current.name + ".moved")
        current.rename(moved)
        current.mkdir()
        with trio.fail_after(30):
            while "no statuses" not in (handle.health().get("detail") or ""):
                await trio.sleep(0.1)
        health = handle.health()
        assert health["status"] == "stale"
        assert health["details_height"] < health["height"]  # l2Book went on meanwhile
        current.rmdir()
        moved.rename(current)
        with trio.fail_after(30):
            while handle.health()["status"] != "live":
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()


async def test_ingest_auto_follows_the_node_to_a_new_layout(tmp_path: Path) -> None:
    from hlbook.sim import SimConfig, run_simulator

    data = tmp_path / "data"
    with socket.socket() as probe:  # one info port for both runs of the node
        probe.bind(("127.0.0.1", 0))
        info_port = probe.getsockname()[1]
    by_block = SimConfig(node_data=data, info_port=info_port, scale=0.1, seed=3)
    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_simulator, by_block)
        config = server_config(tmp_path, node.info_url, stale_after=0.5)
        handle = await nursery.start(hlbook.serve, config)
        with trio.fail_after(30):
            await handle.wait_for_height(by_block.start_height + 5)
        assert handle.health()["pipeline"]["bootstraps"] == 1
        node.stop()
        await trio.sleep(0.2)
        # The node restarts writing the streaming layout (and other books).
        streaming = SimConfig(
            node_data=data,
            info_port=info_port,
            scale=0.1,
            seed=4,
            layout=Layout.STREAMING,
            start_height=node.height + 1000,
        )
        node = await nursery.start(run_simulator, streaming)
        with trio.fail_after(30):
            await handle.wait_for_height(streaming.start_height + 5)
        await settle(handle, node)
        assert same_books(handle, node) == []
        assert handle.health()["status"] == "live"
        assert handle.health()["pipeline"]["bootstraps"] == 2
        nursery.cancel_scope.cancel()


async def test_a_node_that_answers_without_writing_is_named_not_an_old_file_read(
    tmp_path: Path, mainnet: MainnetSlice
) -> None:
    from hlbook.sim.info_server import serve_info

    async def write_nothing(_out: Path, _with_height: bool) -> int:
        return mainnet.height

    node = RecordedNode(tmp_path / "data", mainnet, Layout.BY_BLOCK)
    stale = tmp_path / "snapshot.json"
    stale.write_bytes(mainnet.snapshot)  # left over from an earlier run
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_info, write_nothing, "127.0.0.1", 0)
        info_url = f"http://127.0.0.1:{port}/info"
        config = server_config(tmp_path, info_url, snapshot_path=stale, retry_max=0.2)
        handle = await nursery.start(hlbook.serve, config)
        with trio.fail_after(10):
            while "wrote no snapshot" not in (handle.health()["pipeline"]["last_error"] or ""):
                await trio.sleep(0.05)
        assert handle.books is None  # the leftover file was not taken for an answer
        assert not stale.exists()
        node.close()
        nursery.cancel_scope.cancel()


# -- the node rewriting its files (real files, the process stays up) ----------------------


async def test_a_current_file_truncated_and_rewritten_is_noticed_and_healed(
    tmp_path: Path,
) -> None:
    async with sim_and_server(tmp_path) as (handle, node):
        await node.wait_for_height(node.height + 3)
        # The node restarts within the hour: it truncates its files and writes them anew.
        for stream in Stream:
            current = node.current_file(stream)
            assert current is not None
            os.truncate(current, 0)
        with trio.fail_after(10):
            while sum(s["truncations"] for s in handle.health()["streams"].values()) < 3:
                await trio.sleep(0.02)
        await node.wait_for_height(node.height + 5)
        await settle(handle, node)
        assert same_books(handle, node) == []
        health = handle.health()
        assert health["status"] == "live"
        assert health["pipeline"]["bootstraps"] >= 2  # what was written before it: lost
        assert health["pipeline"]["bad_lines"] >= 1


async def test_a_current_file_deleted_and_created_again_is_followed(tmp_path: Path) -> None:
    async with sim_and_server(tmp_path) as (handle, node):
        await node.wait_for_height(node.height + 3)
        for stream in Stream:
            current = node.current_file(stream)
            assert current is not None
            current.unlink()
        # The node opens its files again: new files (other inodes) at the same paths.
        node._node.files.close()
        await node.wait_for_height(node.height + 5)
        await settle(handle, node)
        assert same_books(handle, node) == []
        health = handle.health()
        assert [s["replacements"] for s in health["streams"].values()] == [1, 1, 1]
        assert health["pipeline"]["bootstraps"] == 1  # nothing was lost: no resync
        assert health["status"] == "live"


async def test_a_node_directory_unreadable_for_a_while_does_not_stop_the_server(
    tmp_path: Path,
) -> None:
    """--ingest auto, the feed stale, and the node's directory unreadable (permissions):
    the layout checks fail for a while; the server logs it, stays up and resumes."""
    import tempfile

    from hlbook.sim import SimConfig, run_simulator

    base = Path(tempfile.mkdtemp(prefix="hlbook-perm-"))
    data = base / "data"
    sim = SimConfig(node_data=data, info_port=0, scale=0.05, blocks_per_second=20.0, seed=9)
    # Root reads through any permission bits: run the server without that capability.
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be taken away")
    drop = (
        [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]
        if os.geteuid() == 0 and setpriv is not None
        else []
    )
    argv = [
        *drop, sys.executable, "-m", "hlbook", "serve",
        "--node-data", str(data),
        "--snapshot-path", str(base / "snapshot.json"),
        "--port", "0", "--stale-after", "0.5", "--validate-every", "0",
        "--log-level", "info",
    ]  # fmt: skip
    try:
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run_simulator, sim)
            process = await trio.lowlevel.open_process(
                [*argv, "--info-url", node.info_url],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=Path(__file__).resolve().parent.parent,
            )
            log_lines: list[str] = []
            nursery.start_soon(_collect_lines, process, log_lines)
            url = await _wait_for_line(log_lines, r"serving (ws://\S+)", process)
            await _wait_for_line(log_lines, r"books loaded at height", process)
            async with open_websocket_url(url) as ws:
                node.pause()
                with trio.fail_after(10):
                    while (await _health(ws))["status"] != "stale":
                        await trio.sleep(0.05)
                data.chmod(0)  # unreadable: the server checks the layout every second
                await trio.sleep(3.0)
                assert process.returncode is None, "\n".join(log_lines[-20:])
                during = await _health(ws)
                data.chmod(0o755)
                # The files being read stayed open: nothing was lost, nothing to resync.
                assert during["status"] == "stale"
                assert during["pipeline"]["bootstraps"] == 1
                node.resume()
                with trio.fail_after(15):
                    while (await _health(ws))["status"] != "live":
                        await trio.sleep(0.05)
                node.pause()
                height = await node.wait_idle()
                with trio.fail_after(10):
                    while (await _health(ws))["height"] < height:
                        await trio.sleep(0.05)
                # Its books are the node's: the best levels of every coin agree.
                for coin in node.coins():
                    await send(ws, subscribe(coin, "bbo"))
                    (*_, reply) = await receive_until(ws, lambda m: m["channel"] == "bbo")
                    bids, asks = node.coin_orders(coin)
                    want = [_level(bids, "B"), _level(asks, "A")]
                    assert reply["data"]["bbo"] == want, coin
            assert process.returncode is None
            text = "\n".join(log_lines)
            assert "cannot read" in text or "cannot list" in text
            assert "Traceback" not in text
            process.terminate()
            await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        data.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def _level(orders: list[Any], side: str) -> dict[str, Any] | None:
    from server_support import expected_l2

    levels = expected_l2(orders, side, 1)
    if not levels:
        return None
    px, sz, n = levels[0]
    return {"px": px, "sz": sz, "n": n}


async def _collect_lines(process: trio.Process, into: list[str]) -> None:
    assert process.stderr is not None
    buffer = b""
    async for chunk in process.stderr:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        into.extend(line.decode(errors="replace") for line in complete)


async def _wait_for_line(lines: list[str], pattern: str, process: trio.Process) -> str:
    regex = re.compile(pattern)
    with trio.fail_after(30):
        while True:
            for line in lines:
                if found := regex.search(line):
                    return found.group(found.lastindex or 0)
            assert process.returncode is None, "\n".join(lines[-20:])
            await trio.sleep(0.05)


async def _health(ws: Any) -> dict[str, Any]:
    await send(ws, {"method": "health"})
    (*_, reply) = await receive_until(ws, lambda m: m["channel"] == "health")
    data: dict[str, Any] = reply["data"]
    return data
