"""Benchmark: latency from a block's last line written by the node to clients receiving its l2Book.

Three processes on loopback:

* the node: this script with ``--node``, which runs ``hlbook.sim``'s
  ``run_simulator`` at mainnet's rate (14 blocks/s, ``--scale 1``: ≈700
  statuses + ≈400 diffs per block) and records ``(height, time)`` right
  after ``SimHandle.wait_for_height(h)`` returns for each ``h``. The
  simulator writes a block's three lines synchronously and then wakes that
  waiter before doing anything else: wrapping its file appends showed the
  recorded time 0.16 ms (median; 0.6 ms at most) after the last line was
  written, so latencies here are that much too small, never too large.
  It then reads the block time of ``h`` back from the last line of its own
  diff file: an ``l2Book`` message carries only the block time, and this
  maps it to the height without adding anything to the server's work (an
  ``l4Book`` subscriber, whose updates carry both, would add ≈1 ms per
  block of encoding to the very path measured);
* the server: ``python -m hlbook serve --port 0``;
* the clients, in this process: 100 WebSocket connections subscribed to
  ``l2Book`` BTC, each timing every message it receives. By default they
  are lean clients (``server_common.LeanClient``) that take the time as
  soon as the socket read returns: 100 full client libraries in one Python
  process would otherwise queue behind each other, adding the client
  process's own delay (``--client trio-websocket`` measures that way too).

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for all processes).
Latency = receive time − write time of the block. Only blocks written inside
the measuring window count (the subscription snapshots are excluded).

By-block layout is the headline: a block is complete when its line is read.
The streaming layout is reported separately: a block there can only be known
complete once every stream has moved past it, i.e. when the next block's
lines arrive (≈71 ms later at 14 blocks/s), or after ``--stream-quiet-after``
(0.3 s) of silence on a stream that has nothing in the next block; its
latency is also shown from the moment the next block was written.

With ``--pin`` (default on 2+ CPUs) the server runs alone on one CPU and the
node, the clients and this script share the others, as a real node would
run on cores of its own. The report also says how much CPU other processes
and the hypervisor (steal) took during the window: this machine is shared.

The server's CPU share comes from ``/proc/<pid>/stat``; the book task's share
is ``health()["pipeline"]["book_seconds"]`` over the window's wall time (and
over the whole ``uptime_s``), read with ``{"method":"health"}``.

Usage: ``python benchmarks/server_latency.py [--quick] [--clients N] [--duration S]
[--streaming-duration S]``
"""

import argparse
import math
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import trio
from server_common import (
    CORES,
    CpuMeter,
    LeanClient,
    command_line,
    health,
    percentile,
    pin,
    split_cpus,
    start_node_and_server,
    summary_header,
)
from trio_websocket import open_websocket_url

TARGET_P99_MS = 10.0
TARGET_BOOK_SHARE = 0.15
L2_BTC = '{"method":"subscribe","subscription":{"type":"l2Book","coin":"BTC"}}'
L2_PREFIX = '{"channel":"l2Book"'


# -- the node process ---------------------------------------------------------------------------


_BLOCK_HEAD = re.compile(rb'"block_time":"([^"]+)","block_number":(\d+)')


def _last_block(path: Path) -> tuple[int, int] | None:
    """``(height, block time ms)`` of the last complete line of a node file, if readable."""
    from hlbook.node.formats import time_ms

    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        span = min(size, 1 << 18)  # a by-block diff line at scale 1 is ≈70 kB
        data = os.pread(file.fileno(), span, size - span)
    line = data.rstrip(b"\n")
    found = _BLOCK_HEAD.search(line, line.rfind(b"\n") + 1)
    if found is None:
        return None
    return int(found.group(2)), time_ms(found.group(1).decode())


async def _node(args: argparse.Namespace) -> None:
    """Run the simulator; append ``height write_time block_time_ms`` for every block written."""
    from hlbook.node.formats import Layout, Stream
    from hlbook.sim import SimConfig, run_simulator

    config = SimConfig(
        node_data=Path(args.node_data),
        seed=args.seed,
        layout=Layout(args.layout.replace("-", "_")),
        blocks_per_second=args.blocks_per_second,
        scale=args.scale,
        info_port=0,
    )
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(run_simulator, config)
        print(f"info server: {handle.info_url}", flush=True)
        with open(args.times, "w", buffering=1) as times:
            wanted = handle.height + 1
            while True:
                await handle.wait_for_height(wanted)
                now = time.monotonic()  # first thing: the lines were written just before
                last = handle.height
                diffs = handle.current_file(Stream.DIFFS)
                found = _last_block(diffs) if diffs is not None else None
                for height in range(wanted, last + 1):
                    # Only the newest block's time is at hand (catching up writes several).
                    block_time = found[1] if found is not None and found[0] == height else -1
                    times.write(f"{height} {now:.6f} {block_time}\n")
                wanted = last + 1


# -- the clients ----------------------------------------------------------------------------------


def _field(message: str, name: str) -> int:
    """An integer field near the start of a message (``"time":123``), without a full parse."""
    start = message.index(f'"{name}":', 0, 400) + len(name) + 3
    end = message.index(",", start)
    return int(message[start:end])


@attrs.define
class Received:
    """What the clients saw."""

    l2: list[tuple[int, int, float]] = attrs.field(factory=list)
    """``(client, block time ms, receive time)`` for every l2Book message."""
    ready: int = 0


async def _lean_l2_client(url: str, index: int, received: Received) -> None:
    records = received.l2
    prefix = L2_PREFIX.encode()

    def on_message(head: bytes, now: float) -> None:
        if head.startswith(prefix):
            records.append((index, _field(head.decode(errors="replace"), "time"), now))

    client = LeanClient(url, on_message=on_message)
    await client.connect([L2_BTC])
    received.ready += 1
    await client.run()


async def _l2_client(url: str, index: int, received: Received) -> None:
    async with open_websocket_url(url) as ws:
        await ws.send_message(L2_BTC)
        received.ready += 1
        records = received.l2
        while True:
            message = await ws.get_message()
            now = time.monotonic()  # before anything else this client does
            if isinstance(message, str) and message.startswith(L2_PREFIX):
                records.append((index, _field(message, "time"), now))


# -- one layout ----------------------------------------------------------------------------------


@attrs.define
class Window:
    """The raw material of one layout's figures."""

    layout: str
    clients: int
    t0: float
    t1: float
    written: dict[int, float]
    height_of: dict[int, int]
    """Block time ms → height, from the node's own lines."""
    received: Received
    cpu: dict[str, float]
    steal: float
    others: float
    server_wait: float
    health0: dict[str, Any]
    health1: dict[str, Any]
    server_errors: list[str]


async def measure(
    args: argparse.Namespace, layout: str, duration: float, server_cpus: set[int] | None
) -> Window:
    """Start node, server and clients for ``layout``; measure ``duration`` seconds."""
    with tempfile.TemporaryDirectory(prefix="hlbook-latency-") as tmp_name:
        tmp = Path(tmp_name)
        times = tmp / "written.txt"
        node_argv = [
            sys.executable, __file__, "--node",
            "--node-data", str(tmp / "data"),
            "--times", str(times),
            "--layout", layout,
            "--blocks-per-second", str(args.blocks_per_second),
            "--scale", str(args.scale),
            "--seed", str(args.seed),
        ]  # fmt: skip
        serve_args = [
            "--ingest", layout,
            "--validate-every", "0",  # a validation's snapshot load is not the steady state
            "--idle-timeout", "600",
            "--max-connections", str(args.clients + 100),
        ]  # fmt: skip
        received = Received()
        async with AsyncExitStack() as stack:
            node, server, url = await start_node_and_server(
                stack, tmp, [], serve_args, node_argv=node_argv
            )
            if server_cpus is not None:
                pin(server.pid, server_cpus)
            lean = args.client == "lean"
            async with trio.open_nursery() as clients:
                for index in range(args.clients):
                    clients.start_soon(
                        _lean_l2_client if lean else _l2_client, url, index, received
                    )
                with trio.fail_after(60):
                    while received.ready < args.clients:
                        await trio.sleep(0.05)
                await trio.sleep(args.warmup)
                meter = CpuMeter({"server": server.pid, "node": node.pid, "clients": os.getpid()})
                health0 = await health(url)
                meter.mark()
                t0 = time.monotonic()
                await trio.sleep(duration)
                t1 = time.monotonic()
                cpu = meter.shares()
                health1 = await health(url)
                await trio.sleep(0.5)  # let messages of the last blocks arrive
                clients.cancel_scope.cancel()
            errors = server.errors()
        written: dict[int, float] = {}
        height_of: dict[int, int] = {}
        for line in times.read_text().splitlines():
            height, moment, block_time = line.split()
            written[int(height)] = float(moment)
            if block_time != "-1":
                height_of[int(block_time)] = int(height)
    return Window(
        layout,
        args.clients,
        t0,
        t1,
        written,
        height_of,
        received,
        cpu,
        meter.steal,
        meter.others,
        meter.waits["server"],
        health0,
        health1,
        errors,
    )


# -- figures --------------------------------------------------------------------------------------


@attrs.define
class Figures:
    """One layout's results."""

    layout: str
    blocks: int
    blocks_with_l2: int
    all_pairs: list[float]
    first: list[float]
    last: list[float]
    after_next: list[float]
    unmapped: int
    missing: int
    cpu: dict[str, float]
    steal: float
    others: float
    server_wait: float
    book_share: float
    book_share_lifetime: float
    decode_share: float
    block_rate: float
    events_note: str
    errors: list[str]


def figures(window: Window) -> Figures:
    """Latencies (ms) and shares from a window."""
    written, received = window.written, window.received
    in_window = {h: t for h, t in written.items() if window.t0 <= t <= window.t1}
    per_block: dict[int, list[float]] = defaultdict(list)
    unmapped = 0
    for _client, block_time, moment in received.l2:
        height = window.height_of.get(block_time)
        if height is None:
            if window.t0 <= moment <= window.t1:
                unmapped += 1
            continue
        if height in in_window:
            per_block[height].append((moment - in_window[height]) * 1000)
    pairs = [latency for values in per_block.values() for latency in values]
    first = [min(values) for values in per_block.values()]
    last = [max(values) for values in per_block.values()]
    after_next = [
        (min(values) - (written[h + 1] - written[h]) * 1000)
        for h, values in per_block.items()
        if h + 1 in written
    ]
    missing = sum(window.clients - len(values) for values in per_block.values())
    h0, h1 = window.health0, window.health1
    span = h1["uptime_s"] - h0["uptime_s"]
    book = (h1["pipeline"]["book_seconds"] - h0["pipeline"]["book_seconds"]) / span
    decode = (h1["pipeline"]["decode_seconds"] - h0["pipeline"]["decode_seconds"]) / span
    blocks = h1["pipeline"]["blocks_applied"] - h0["pipeline"]["blocks_applied"]
    return Figures(
        layout=window.layout,
        blocks=len(in_window),
        blocks_with_l2=len(per_block),
        all_pairs=pairs,
        first=first,
        last=last,
        after_next=after_next,
        unmapped=unmapped,
        missing=missing,
        cpu=window.cpu,
        steal=window.steal,
        others=window.others,
        server_wait=window.server_wait,
        book_share=book,
        book_share_lifetime=h1["pipeline"]["book_seconds"] / h1["uptime_s"],
        decode_share=decode,
        block_rate=blocks / span,
        events_note=f"{h1['orders']} resting orders, {h1['coins']} coins",
        errors=window.server_errors,
    )


def _dist(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {percentile(values, 50):6.2f}  p99 {percentile(values, 99):6.2f}  "
        f"max {max(values):6.2f} ms"
    )


def report(args: argparse.Namespace, results: list[Figures]) -> None:
    """Details per layout, then the summary block."""
    for fig in results:
        print(
            f"{fig.layout}: {fig.blocks} blocks written in the window, {fig.blocks_with_l2} "
            f"changed BTC's top 20 levels (an l2Book message each); "
            f"{len(fig.all_pairs)} (block, client) samples; "
            f"{fig.missing} expected client messages missing; {fig.unmapped} unmapped; "
            f"{fig.block_rate:.1f} blocks/s applied; {fig.events_note}"
        )
        print(f"  every client   {_dist(fig.all_pairs)}")
        print(f"  first client   {_dist(fig.first)}")
        print(f"  last client    {_dist(fig.last)}")
        if fig.layout == "streaming":
            print(f"  first client, from the next block's write: {_dist(fig.after_next)}")
        for line in fig.errors[:5]:
            print(f"  server error: {line}")
    print()
    print(summary_header("server_latency"))
    print(f"command: {command_line('server_latency.py')}")
    print(
        f"setup: simulator at {args.blocks_per_second:g} blocks/s, scale {args.scale:g} "
        f"(mainnet-sized blocks), {args.clients} {args.client} clients on l2Book BTC in one "
        f"client process, loopback, {CORES} cores, "
        f"{'server pinned to its own core' if args.pin else 'no pinning'}"
    )
    for fig in results:
        p99 = percentile(fig.all_pairs, 99)
        verdict = ""
        if fig.layout == "by-block":
            verdict = f"  (target p99 < {TARGET_P99_MS:g} ms: "
            verdict += "met)" if p99 < TARGET_P99_MS else "MISSED)"
        print(
            f"{fig.layout:<9} write -> client l2Book  {_dist(fig.all_pairs)}  "
            f"[{len(fig.all_pairs)} samples, {fig.blocks_with_l2} blocks]{verdict}"
        )
        if fig.layout == "streaming":
            print(
                f"{'':9} from the next block's write  {_dist(fig.after_next)}  "
                "(a block is complete only once the next one starts)"
            )
        book_verdict = "met" if fig.book_share < TARGET_BOOK_SHARE else "MISSED"
        print(
            f"{'':9} server CPU {fig.cpu['server']:4.0%}  book task {fig.book_share:4.1%} "
            f"of wall time (lifetime {fig.book_share_lifetime:4.1%}; target < "
            f"{TARGET_BOOK_SHARE:.0%}: {book_verdict})  decoding {fig.decode_share:4.1%}  "
            f"node CPU {fig.cpu['node']:4.0%}  clients CPU {fig.cpu['clients']:4.0%}"
        )
        print(
            f"{'':9} server waited for a CPU {fig.server_wait:.1%} of the time; other processes "
            f"used {fig.others:.0%} of a core; hypervisor steal {fig.steal:.1%}"
        )


async def run(args: argparse.Namespace) -> list[Figures]:
    """Every requested layout, one after the other."""
    server_cpus = None
    if args.pin:
        # The server gets a CPU to itself; the node, the clients and this script share
        # the others (children inherit this process's CPUs).
        server_cpus, others = split_cpus()
        pin(os.getpid(), others)
    results = [figures(await measure(args, "by-block", args.duration, server_cpus))]
    if args.streaming_duration > 0:
        window = await measure(args, "streaming", args.streaming_duration, server_cpus)
        results.append(figures(window))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke check")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=40.0, help="by-block window, seconds")
    parser.add_argument(
        "--streaming-duration", type=float, default=15.0, help="streaming window; 0 skips it"
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--blocks-per-second", type=float, default=14.0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the server alone on one CPU, everything else on the others (default: on)",
    )
    parser.add_argument(
        "--client",
        choices=["lean", "trio-websocket"],
        default="lean",
        help="lean: time each frame as the socket read returns it (default); trio-websocket: "
        "time it when trio-websocket's get_message() returns (adds that library's cost, "
        "shared by all clients of this one process)",
    )
    node = parser.add_argument_group("node process (internal)")
    node.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    node.add_argument("--node-data", help=argparse.SUPPRESS)
    node.add_argument("--times", help=argparse.SUPPRESS)
    node.add_argument("--layout", default="by-block", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        from hlbook.runner import run as run_until_signal

        sys.exit(run_until_signal(lambda: _node(args)))
    args.pin = args.pin and CORES >= 2
    if args.quick:
        args.clients = min(args.clients, 10)
        args.duration, args.streaming_duration, args.warmup = 1.5, 1.0, 0.5
    results = trio.run(run, args)
    report(args, results)
    if any(math.isnan(percentile(fig.all_pairs, 50)) for fig in results):
        sys.exit("no latency samples: see the lines above")


if __name__ == "__main__":
    main()
