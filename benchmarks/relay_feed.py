"""Benchmark: a relay over NATS JetStream against the primary it follows, in one run.

Three measures, each against a baseline taken in the same run:

* **latency** — block written by the node → ``l2Book`` BTC received, at clients
  of the primary (``hlbook serve --publish``) and of a relay (``hlbook relay
  --source``) fed by it through a real ``nats-server``. Processes: the node
  (``server_latency.py --node``: the simulator at mainnet's rate, recording
  each block's write time), the primary, the nats-server, the relay, and
  ``--clients`` lean WebSocket clients per server in this process (time taken
  as the socket read returns, ``time.monotonic()``, one clock for all). For
  each block both servers delivered, "relay adds" is the relay's median
  receive time minus the primary's; the summary gives its p50/p99 and the
  ratio of the relay's write → l2Book p50 to the primary's. Target: the relay
  adds ≤ 2 ms at p50. Beside it: CPU per block of the primary, the relay and
  nats-server, and (sampled from ``/health`` every 0.5 s) the most blocks in
  the primary's publish buffer and the most heights the relay was behind the
  primary's complete blocks;
* **bytes per block** — in that run, the primary's published bytes per block
  (``/health`` ``publish``: ``published_bytes`` and ``diffs_bytes`` over
  ``published``: the compressed frames on the stream, each block's early
  diffs included) against the node's files for the same blocks (all three
  streams' bytes / blocks written). ``benchmarks/relay_codec.py`` has the
  per-codec table on the mainnet slice;
* **bootstrap** — books from a ``--snapshot-orders`` synthetic snapshot
  (``benchmarks/synthdata.py``): a relay's bootstrap (list the object store,
  download the snapshot object from a real nats-server, decompress, load)
  against a primary's load of the same snapshot from a file (read, load).

``--rounds`` repeats each measure; the summary shows every round and the median.
Run: ``python benchmarks/relay_feed.py [--rounds N] [--duration S] [--clients N]
[--snapshot-orders N] [--no-early-diffs]`` (``--quick`` for a smoke run;
``--no-early-diffs``: the primary sends whole blocks only, as before early diffs).
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import synthdata
import trio
from server_common import (
    LeanClient,
    command_line,
    cpu_seconds,
    hlbook_argv,
    percentile,
    start_child,
    summary_header,
)

from hlbook.relay import (
    Bootstrap,
    Consumer,
    NatsOptions,
    NatsServerConfig,
    open_nats,
    open_nats_server,
    open_publisher,
)
from hlbook.shell.publish import capture_books, encode_captured
from hlbook.shell.snapshots import load_in_thread

HERE = Path(__file__).resolve().parent
_TIME = re.compile(rb'"time":(\d+)')


@attrs.define
class Latency:
    """One round of the latency measure."""

    primary_p50: float
    primary_p99: float
    relay_p50: float
    relay_p99: float
    added_p50: float
    added_p99: float
    blocks: int
    frame_bytes: float
    """Stream bytes per block: the block frame and its early diffs."""
    early_bytes: float
    """Of which the early diffs (a copy of the block's diffs, sent ahead of it)."""
    node_bytes: float
    primary_cpu_ms: float
    """CPU per block written during the window (ms), each process."""
    relay_cpu_ms: float
    nats_cpu_ms: float
    relay_book_ms: float
    """The relay's book task per block applied (decode, apply, publish)."""
    primary_book_ms: float
    statuses_behind_max: int
    """Most heights the primary's statuses were behind its diffs (``height`` minus
    ``details_height``): it publishes a block once all of it is applied."""
    buffered_max: int
    """Most blocks waiting in the primary's publish buffer (sampled every 0.5 s)."""
    relay_behind_max: int
    """Most heights the relay's books were behind the primary's complete blocks (its
    ``details_height``; sampled every 0.5 s)."""


def _written(path: Path) -> dict[int, float]:
    """Block time (ms) → write time, from the node's record (``server_latency.py --node``)."""
    out: dict[int, float] = {}
    for line in path.read_text().splitlines():
        _height, written, block_time = line.split()
        if int(block_time) >= 0:
            out[int(block_time)] = float(written)
    return out


def _node_bytes(data: Path) -> int:
    return sum(
        f.stat().st_size for f in data.rglob("*") if f.is_file() and "snapshot" not in f.name
    )


async def _health(http_url: str) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{http_url}/health")
        result: dict[str, Any] = response.json()
        return result


async def latency_round(args: argparse.Namespace) -> Latency:
    with tempfile.TemporaryDirectory(prefix="hlbook-relay-bench-") as tmp_name:
        tmp = Path(tmp_name)
        times = tmp / "written.txt"
        node_argv = [
            sys.executable, str(HERE / "server_latency.py"), "--node",
            "--node-data", str(tmp / "data"), "--times", str(times),
            "--layout", "by-block",
            "--blocks-per-second", str(args.blocks_per_second),
            "--scale", str(args.scale), "--seed", "1",
        ]  # fmt: skip
        received: dict[str, dict[int, list[float]]] = {"primary": {}, "relay": {}}
        async with AsyncExitStack() as stack:
            nats = await stack.enter_async_context(
                open_nats_server(NatsServerConfig(store_dir=tmp / "nats"))
            )
            node = await stack.enter_async_context(start_child("node", node_argv))
            info_url = (await node.wait_for(r"info server: (\S+)")).group(1)
            common = ["--port", "0", "--idle-timeout", "600"]
            primary_argv = hlbook_argv(
                "serve", "--node-data", str(tmp / "data"), "--info-url", info_url,
                "--snapshot-path", str(tmp / "snapshot.json"), "--ingest", "by-block",
                "--publish", nats.url, "--validate-every", "0", *common,
                *(["--no-publish-early-diffs"] if args.no_early_diffs else []),
            )  # fmt: skip
            primary = await stack.enter_async_context(start_child("primary", primary_argv))
            primary_url = (await primary.wait_for(r"serving (ws://\S+)")).group(1)
            await primary.wait_for(r"books loaded at height")
            relay_argv = hlbook_argv("relay", "--source", nats.url, "--history", "none", *common)
            relay = await stack.enter_async_context(start_child("relay", relay_argv))
            relay_url = (await relay.wait_for(r"relaying (ws://\S+)")).group(1)
            await relay.wait_for(r"books loaded at height", limit=120)
            primary_http = primary_url.replace("ws://", "http://").removesuffix("/ws")
            relay_http = relay_url.replace("ws://", "http://").removesuffix("/ws")
            # Measure the steady state: the relay caught up after its bootstrap (with what
            # the primary published: the blocks whose statuses it has applied too).
            with trio.fail_after(120):
                while True:
                    ahead = (await _health(primary_http))["details_height"]
                    if (await _health(relay_http))["height"] >= ahead - 2:  # ~100 ms
                        break
                    await trio.sleep(0.2)
            measuring = False

            def recorder(name: str, index: int) -> Any:
                def on_message(head: bytes, now: float) -> None:
                    found = _TIME.search(head)
                    if measuring and found and b'"l2Book"' in head:
                        received[name].setdefault(int(found.group(1)), []).append(now)

                return on_message

            subscribe = '{"method":"subscribe","subscription":{"type":"l2Book","coin":"BTC"}}'
            async with trio.open_nursery() as nursery:
                for name, url in (("primary", primary_url), ("relay", relay_url)):
                    for index in range(args.clients):
                        client = LeanClient(url, on_message=recorder(name, index))
                        await client.connect([subscribe])
                        nursery.start_soon(client.run)
                await trio.sleep(1.0)
                pids = {"primary": primary.pid, "relay": relay.pid, "nats": nats.pid or 0}
                cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                books_before = [(await _health(h))["pipeline"] for h in (primary_http, relay_http)]
                measuring = True
                buffered_max = behind_max = statuses_max = 0
                until = trio.current_time() + args.duration
                while trio.current_time() < until:
                    ahead = await _health(primary_http)
                    behind = await _health(relay_http)
                    buffered_max = max(buffered_max, ahead["publish"]["buffered"])
                    statuses_max = max(statuses_max, ahead["height"] - ahead["details_height"])
                    behind_max = max(behind_max, ahead["details_height"] - behind["height"])
                    await trio.sleep(0.5)
                measuring = False
                cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
                books_after = [(await _health(h))["pipeline"] for h in (primary_http, relay_http)]
                nursery.cancel_scope.cancel()
            book_ms = [
                (after["book_seconds"] - before["book_seconds"])
                * 1000
                / max(after["blocks_applied"] - before["blocks_applied"], 1)
                for before, after in zip(books_before, books_after, strict=True)
            ]
            window_blocks = args.duration * args.blocks_per_second
            published = (await _health(primary_http))["publish"]
            written = _written(times)
            node_bytes = _node_bytes(tmp / "data") / max(len(written), 1)

    def latencies(name: str) -> tuple[list[float], dict[int, float]]:
        flat: list[float] = []
        per_block: dict[int, float] = {}
        for block_time, stamps in received[name].items():
            at = written.get(block_time)
            if at is None:
                continue
            flat.extend((t - at) * 1000 for t in stamps)
            per_block[block_time] = statistics.median(stamps)
        return flat, per_block

    primary_flat, primary_blocks = latencies("primary")
    relay_flat, relay_blocks = latencies("relay")
    both = primary_blocks.keys() & relay_blocks.keys()
    added = [(relay_blocks[b] - primary_blocks[b]) * 1000 for b in both]

    return Latency(
        primary_p50=percentile(primary_flat, 50),
        primary_p99=percentile(primary_flat, 99),
        relay_p50=percentile(relay_flat, 50),
        relay_p99=percentile(relay_flat, 99),
        added_p50=percentile(added, 50),
        added_p99=percentile(added, 99),
        blocks=len(both),
        frame_bytes=(published["published_bytes"] + published["diffs_bytes"])
        / max(published["published"], 1),
        early_bytes=published["diffs_bytes"] / max(published["published"], 1),
        node_bytes=node_bytes,
        primary_cpu_ms=cpu["primary"] * 1000 / window_blocks,
        relay_cpu_ms=cpu["relay"] * 1000 / window_blocks,
        nats_cpu_ms=cpu["nats"] * 1000 / window_blocks,
        primary_book_ms=book_ms[0],
        relay_book_ms=book_ms[1],
        statuses_behind_max=statuses_max,
        buffered_max=buffered_max,
        relay_behind_max=behind_max,
    )


@attrs.define
class BootstrapRound:
    file_seconds: float
    relay_seconds: float
    download_seconds: float
    capture_seconds: float
    """The primary's book-task share of taking a snapshot (:func:`capture_books`)."""
    encode_seconds: float
    """The rest, in a worker thread (:func:`encode_captured`)."""


async def bootstrap_rounds(args: argparse.Namespace) -> tuple[list[BootstrapRound], int]:
    from hlbook.config import Config
    from hlbook.node.snapshot import read_snapshot

    world = synthdata.make_world(400)
    data = synthdata.snapshot(world, args.snapshot_orders)
    height = int(data[1 : data.index(b",")])
    config = Config()
    out = []
    with tempfile.TemporaryDirectory(prefix="hlbook-relay-boot-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "snapshot.json"
        path.write_bytes(data)
        async with open_nats_server(NatsServerConfig(store_dir=tmp / "nats")) as nats:
            options = NatsOptions(servers=(nats.url,))
            async with open_publisher(options, start_height=height) as publisher:
                publisher.put_snapshot(height, data)
                with trio.fail_after(300):
                    await publisher.flush_snapshots()
            for _ in range(args.rounds):
                started = time.perf_counter()
                raw = await trio.to_thread.run_sync(read_snapshot, path)
                books = await load_in_thread(raw, config)
                file_seconds = time.perf_counter() - started
                assert len(books) == args.snapshot_orders
                started = time.perf_counter()
                captured = capture_books(books)
                capture_seconds = time.perf_counter() - started
                encoded = encode_captured(books.height, captured)
                encode_seconds = time.perf_counter() - started - capture_seconds
                assert len(encoded) > len(data) // 2
                del books, raw, captured, encoded
                async with open_nats(options) as connection:
                    await connection.wait_connected()
                    started = time.perf_counter()
                    consumer = Consumer(connection, snapshot_poll=0.05)
                    event = await consumer.__anext__()
                    assert isinstance(event, Bootstrap)
                    downloaded = time.perf_counter() - started
                    books = await load_in_thread(event.snapshot, config)
                    relay_seconds = time.perf_counter() - started
                assert len(books) == args.snapshot_orders
                del books, event
                out.append(
                    BootstrapRound(
                        file_seconds, relay_seconds, downloaded, capture_seconds, encode_seconds
                    )
                )
    return out, len(data)


def _median(values: list[float]) -> float:
    return statistics.median(values)


async def main_async(args: argparse.Namespace) -> None:
    latency = []
    for index in range(args.rounds):
        result = await latency_round(args)
        print(f"latency round {index + 1}: {result}", flush=True)
        latency.append(result)
    boots, snapshot_size = await bootstrap_rounds(args)
    for index, boot in enumerate(boots):
        print(f"bootstrap round {index + 1}: {boot}", flush=True)

    lines = [summary_header("relay_feed"), f"command: {command_line('relay_feed.py')}"]
    lines.append(
        f"machine: {os.cpu_count()} cores, shared; {args.clients} lean clients per server, "
        f"{args.duration:g} s per round, {args.blocks_per_second:g} blocks/s at scale "
        f"{args.scale:g}; {args.rounds} rounds (median); early diffs "
        f"{'off' if args.no_early_diffs else 'on'}"
    )
    lines.append("latency, block written -> l2Book BTC received (ms):")
    for i, r in enumerate(latency, 1):
        lines.append(
            f"  round {i}: primary p50 {r.primary_p50:.2f} p99 {r.primary_p99:.2f} | relay p50 "
            f"{r.relay_p50:.2f} p99 {r.relay_p99:.2f} | relay adds p50 {r.added_p50:.2f} p99 "
            f"{r.added_p99:.2f} ({r.blocks} blocks) | relay/primary p50 "
            f"{r.relay_p50 / r.primary_p50:.2f}x | the primary's statuses behind its diffs by "
            f"up to {r.statuses_behind_max} heights, most blocks in its publish buffer "
            f"{r.buffered_max}, "
            f"relay behind by at most {r.relay_behind_max} heights"
        )
    med = {f: _median([getattr(r, f) for r in latency]) for f in attrs.fields_dict(Latency)}
    lines.append(
        f"  median: primary p50 {med['primary_p50']:.2f} ms, relay p50 {med['relay_p50']:.2f} ms,"
        f" relay adds p50 {med['added_p50']:.2f} ms (p99 {med['added_p99']:.2f}); relay/primary"
        f" p50 {_median([r.relay_p50 / r.primary_p50 for r in latency]):.2f}x"
        f" (target: adds <= 2 ms at p50)"
    )
    lines.append(
        f"CPU per block: primary {med['primary_cpu_ms']:.2f} ms (book task "
        f"{med['primary_book_ms']:.2f}), relay {med['relay_cpu_ms']:.2f} ms (book task "
        f"{med['relay_book_ms']:.2f}), nats-server {med['nats_cpu_ms']:.2f} ms"
    )
    lines.append(
        f"bytes per block on the stream: {med['frame_bytes']:.0f} B (the block frame and "
        f"{med['early_bytes']:.0f} B of early diffs) vs node files "
        f"{med['node_bytes']:.0f} B: {med['node_bytes'] / med['frame_bytes']:.1f}x smaller"
    )
    lines.append(
        f"bootstrap from a {args.snapshot_orders}-order snapshot ({snapshot_size / 1e6:.0f} MB):"
    )
    for i, b in enumerate(boots, 1):
        lines.append(
            f"  round {i}: file {b.file_seconds:.2f} s | NATS object {b.relay_seconds:.2f} s "
            f"(download+decompress {b.download_seconds:.2f} s) | "
            f"{b.relay_seconds / b.file_seconds:.2f}x"
        )
    lines.append(
        f"  the primary's snapshot of those books: captured in the book task in "
        f"{_median([b.capture_seconds for b in boots]) * 1000:.0f} ms, encoded in a thread in "
        f"{_median([b.encode_seconds for b in boots]):.2f} s (median)"
    )
    file_s = _median([b.file_seconds for b in boots])
    relay_s = _median([b.relay_seconds for b in boots])
    lines.append(
        f"  median: file {file_s:.2f} s, NATS object {relay_s:.2f} s: "
        f"{_median([b.relay_seconds / b.file_seconds for b in boots]):.2f}x"
    )
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--blocks-per-second", type=float, default=14.0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--snapshot-orders", type=int, default=440_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument(
        "--no-early-diffs",
        action="store_true",
        help="the primary sends whole blocks only (relays wait for each block's statuses)",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.clients = 1, 3.0, 2
        args.scale, args.snapshot_orders = 0.1, 5000
    trio.run(main_async, args)


if __name__ == "__main__":
    main()
