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

The floor, measured in the same run on the same blocks:

* a *baseline server* (this script with ``--baseline``): it follows the same
  diff file (``os.read`` woken by inotify, like hlbook), ``orjson.loads``
  each diff line and writes one prebuilt ``l2Book``-sized message (the
  block's time in it, 20 levels a side) to the same 100 lean clients, one
  non-blocking write each — the least a server that reads the node's files
  must do. In the streaming layout it sends block ``H`` when the first diff
  line of a later block arrives (the same completeness rule). hlbook's
  write -> ``l2Book`` p50 and p99 are reported as ratios to the baseline's;
* the *in-process cost* of each written block in hlbook, with no I/O at all:
  the lines the node wrote in that run are decoded, joined, applied and
  published (to a fan-out hub with the same 100 ``l2Book`` BTC subscribers'
  queues) in this process, starting from the snapshot the server loaded.

``--rounds`` repeats hlbook and the baseline alternately; the summary shows
each round's ratios and their median.

``--with post`` and ``--with ops`` add, to every round, a run of hlbook with a
load beside the clients, from a load process of its own
(``server_common.py load``): ``POST /info`` ``l2Book`` at ``--post-rate``
requests/s (their p50/p99 are reported), or a ``/metrics`` scrape every
second with a stand-in for the open live page (see :data:`LOADS`). Its write
-> ``l2Book`` p50 and p99 are reported as ratios to hlbook's without the load
in the same round (target: within 10%).

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
[--streaming-duration S] [--rounds N] [--with post] [--with ops] [--post-rate R]``
"""

import argparse
import contextlib
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
import server_common
import trio
from server_common import (
    CORES,
    CpuMeter,
    LeanClient,
    command_line,
    health,
    http_base,
    load_argv,
    parse_tagged,
    percentile,
    pin,
    split_cpus,
    start_child,
    start_node_and_server,
    summary_header,
)
from trio_websocket import open_websocket_url

TARGET_P50_RATIO = 1.3
TARGET_P99_RATIO = 2.0
TARGET_STREAMING_RATIO = 1.5
TARGET_BOOK_SHARE = 0.15
TARGET_LOADED_RATIO = 1.1
"""``--with`` loads: hlbook's write -> l2Book p50 and p99 with the load, over without."""
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


# -- the baseline server -------------------------------------------------------------------------

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_LEVELS = [[{"px": f"{81300 - i}.0", "sz": "0.61488", "n": 3} for i in range(20)]] * 2


async def _baseline(args: argparse.Namespace) -> None:
    """Follow the diff file; ``orjson.loads`` each line; one prebuilt message to every client."""
    import base64
    import hashlib

    import orjson

    from hlbook.node.files import newest_file
    from hlbook.node.formats import time_ms
    from hlbook.node.watch import ChangeWatcher
    from hlbook.server.frames import frames

    def _frame(text: str) -> bytes:
        return frames(text.encode())[0]

    layout = args.layout.replace("-", "_")
    by_block = layout == "by_block"
    directory = Path(args.node_data) / f"node_raw_book_diffs_{layout}"
    levels = orjson.dumps(_LEVELS).decode()
    template = '{"channel":"l2Book","data":{"coin":"BTC","time":%d,"levels":' + levels + "}}"
    clients: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        found = re.search(rb"Sec-WebSocket-Key: *(\S+)", request, re.IGNORECASE)
        if found is None:
            return
        accept = base64.b64encode(hashlib.sha1(found.group(1) + _GUID).digest())
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        fd = stream.socket.fileno()
        clients.append(fd)
        try:
            while await stream.receive_some(65536):
                pass  # the subscription request: nothing to do with it
        finally:
            clients.remove(fd)

    def broadcast(block_ms: int) -> None:
        frame = _frame(template % block_ms)
        for fd in clients:
            # The socket is non-blocking: one write, as hlbook's flusher does; a client whose
            # buffer is full misses the message (it never happens at this rate).
            with contextlib.suppress(BlockingIOError):
                os.write(fd, frame)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        port = listeners[0].socket.getsockname()[1]
        print(f"serving ws://127.0.0.1:{port}/ws", flush=True)
        with ChangeWatcher() as watcher:
            path = newest_file(directory)
            while path is None:
                watcher.watch(directory / "hourly")
                await watcher.wait(0.1)
                path = newest_file(directory)
            fd = os.open(path, os.O_RDONLY)
            os.lseek(fd, 0, os.SEEK_END)
            watcher.watch(path)
            print(f"books loaded at height 0 (following {path})", flush=True)
            buffer = b""
            current: tuple[int, int] | None = None
            while True:
                data = os.read(fd, 1 << 20)
                if not data:
                    await watcher.wait()
                    continue
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        head = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue  # the line the node was writing when we began
                    height, block_ms = head["block_number"], time_ms(head["block_time"])
                    if by_block:
                        broadcast(block_ms)
                    elif current is None or height > current[0]:
                        if current is not None:
                            broadcast(current[1])  # a later block began: this one is complete
                        current = (height, block_ms)


# -- the in-process floor -------------------------------------------------------------------------


def in_process_floor(tmp: Path, layout: str, clients: int) -> list[float]:
    """Milliseconds of hlbook's own work per written block, no I/O (see the docstring)."""
    from hlbook.book.books import Books
    from hlbook.node.files import hourly_files
    from hlbook.node.formats import Layout, Stream, decode_line, line_height
    from hlbook.node.join import BlockJoiner
    from hlbook.server.fanout import ClientQueue, Hub
    from hlbook.supervisor import Settings, Supervisor, WantSnapshot

    snapshot = tmp / "snapshot.json"
    if not snapshot.exists():
        return []
    books = Books.load(snapshot.read_bytes())
    kind = Layout(layout.replace("-", "_"))
    order = (Stream.DIFFS, Stream.STATUSES, Stream.FILLS)
    by_height: dict[int, list[tuple[Stream, bytes]]] = defaultdict(list)
    for stream in order:
        for path in hourly_files(tmp / "data" / stream.dirname(kind)):
            for raw in path.read_bytes().split(b"\n"):
                height = line_height(raw) if raw else None
                if height is not None and height > books.height:
                    by_height[height].append((stream, raw))
    hub = Hub()
    sup = Supervisor(hub, Settings(validate_every=0, stale_after=math.inf, layout_auto=False))
    joiner = BlockJoiner(kind, parts=True)
    for stream in order:
        joiner.start_after(stream, books.height)
    (want,) = sup.attach(joiner, 0.0, contiguous=kind is Layout.BY_BLOCK, layout=kind)
    assert isinstance(want, WantSnapshot)
    sup.snapshot_loaded(books, "floor", want.generation, 0.0)
    queues = [ClientQueue(max_messages=1 << 30, max_bytes=1 << 40) for _ in range(clients)]
    channel, key, echo = hub.registry.parse({"type": "l2Book", "coin": "BTC"})
    for queue in queues:
        hub.subscribe(queue, channel, key, books, echo)
        queue.pop_batch(1 << 30)
    samples: list[float] = []
    for height in sorted(by_height):
        started = time.perf_counter()
        for stream, raw in by_height[height]:
            sup.receive(joiner.feed(stream, decode_line(stream, raw), 0.0), 0.0)
        samples.append((time.perf_counter() - started) * 1000)
        for queue in queues:
            queue.pop_batch(1 << 30)  # what the flusher does, outside the measurement
    return samples


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

    kind: str
    """``hlbook`` or ``baseline``."""
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
    health0: dict[str, Any] | None
    health1: dict[str, Any] | None
    server_errors: list[str]
    floor: list[float]
    """hlbook only: in-process milliseconds per written block (see the docstring)."""
    load: dict[str, Any] | None = None
    """``hlbook+LOAD`` only: the load process's result (see :data:`LOADS`)."""


LOADS = ("post", "ops")
"""``--with`` loads, each run as an extra hlbook phase in every round:

* ``post``: ``POST /info`` ``l2Book`` BTC at ``--post-rate`` requests/s over 4
  keep-alive connections;
* ``ops``: ``GET /metrics`` once a second and a stand-in for the live page
  (a WebSocket client that negotiates permessage-deflate as browsers do,
  subscribes to what ``hlbook/web/app.js`` does for BTC — ``l2Book``, ``bbo``,
  ``trades`` — and asks for ``health`` every second; no browser runs).
"""


def _load_argv(args: argparse.Namespace, load: str, url: str, duration: float) -> list[str]:
    base = http_base(url)
    if load == "post":
        body = '{"type":"l2Book","coin":"BTC"}'
        return load_argv(
            base, warmup=0.5, duration=duration, post=body, rate=args.post_rate, connections=4
        )
    return load_argv(base, warmup=0.5, duration=duration, scrape_every=1.0, page=True)


async def measure(
    args: argparse.Namespace,
    layout: str,
    duration: float,
    server_cpus: set[int] | None,
    kind: str = "hlbook",
) -> Window:
    """Start node, server (hlbook or the baseline) and clients for ``layout``; measure
    ``duration`` seconds."""
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
            hlbook, _, load = kind.partition("+")
            if hlbook == "hlbook":
                node, server, url = await start_node_and_server(
                    stack, tmp, [], serve_args, node_argv=node_argv
                )
            else:
                node = await stack.enter_async_context(start_child("node", node_argv))
                await node.wait_for(r"info server: (\S+)")
                baseline_argv = [
                    sys.executable, __file__, "--baseline",
                    "--node-data", str(tmp / "data"), "--layout", layout,
                ]  # fmt: skip
                server = await stack.enter_async_context(start_child("baseline", baseline_argv))
                url = (await server.wait_for(r"serving (ws://\S+)")).group(1)
                await server.wait_for(r"books loaded at height")
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
                load_result = None
                async with AsyncExitStack() as loading:
                    if load:
                        loader = await loading.enter_async_context(
                            start_child("load", _load_argv(args, load, url, duration))
                        )
                        meter.pids["load"] = loader.pid
                        await loader.wait_for(r"^START ", limit=30)
                    health0 = await health(url) if hlbook == "hlbook" else None
                    meter.mark()
                    t0 = time.monotonic()
                    await trio.sleep(duration)
                    t1 = time.monotonic()
                    cpu = meter.shares()
                    health1 = await health(url) if hlbook == "hlbook" else None
                    if load:
                        found = await loader.wait_for(r"^RESULT ", limit=30)
                        load_result = parse_tagged(found.string)
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
        floor = in_process_floor(tmp, layout, args.clients) if kind == "hlbook" else []
    return Window(
        kind,
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
        floor,
        load_result,
    )


# -- figures --------------------------------------------------------------------------------------


@attrs.define
class Figures:
    """One layout's results, for one server."""

    kind: str
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
    floor: list[float]
    load: dict[str, Any] | None


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
        (latency - (written[h + 1] - written[h]) * 1000)
        for h, values in per_block.items()
        if h + 1 in written
        for latency in values
    ]
    missing = sum(window.clients - len(values) for values in per_block.values())
    h0, h1 = window.health0, window.health1
    book = decode = rate = lifetime = math.nan
    note = ""
    if h0 is not None and h1 is not None:
        span = h1["uptime_s"] - h0["uptime_s"]
        book = (h1["pipeline"]["book_seconds"] - h0["pipeline"]["book_seconds"]) / span
        decode = (h1["pipeline"]["decode_seconds"] - h0["pipeline"]["decode_seconds"]) / span
        rate = (h1["pipeline"]["blocks_applied"] - h0["pipeline"]["blocks_applied"]) / span
        lifetime = h1["pipeline"]["book_seconds"] / h1["uptime_s"]
        note = f"{h1['orders']} resting orders, {h1['coins']} coins"
        if "diffs_first" in h1["pipeline"]:
            early = h1["pipeline"]["diffs_first"] - h0["pipeline"]["diffs_first"]
            applied = h1["pipeline"]["blocks_applied"] - h0["pipeline"]["blocks_applied"]
            note += f"; diffs applied before the block's statuses: {early}/{applied}"
    return Figures(
        kind=window.kind,
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
        book_share_lifetime=lifetime,
        decode_share=decode,
        block_rate=rate,
        events_note=note,
        errors=window.server_errors,
        floor=window.floor,
        load=window.load,
    )


def _dist(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {percentile(values, 50):6.2f}  p99 {percentile(values, 99):6.2f}  "
        f"max {max(values):6.2f} ms"
    )


def _ratio(mine: list[float], base: list[float], p: float) -> float:
    return percentile(mine, p) / percentile(base, p)


@attrs.define
class Round:
    """hlbook and the baseline on one layout, one after the other."""

    layout: str
    hlbook: Figures
    baseline: Figures
    loaded: dict[str, Figures] = attrs.Factory(dict)
    """``--with`` loads: hlbook with each load running, in the same round."""

    def ratios(self) -> tuple[float, float, float]:
        """hlbook / baseline: p50 and p99 from the write; p50 from the next block's write."""
        h, b = self.hlbook, self.baseline
        return (
            _ratio(h.all_pairs, b.all_pairs, 50),
            _ratio(h.all_pairs, b.all_pairs, 99),
            _ratio(h.after_next, b.after_next, 50),
        )


def _median(values: list[float]) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def report(args: argparse.Namespace, rounds: list[Round]) -> None:
    """Details per round and layout, then the summary block."""
    layouts = list(dict.fromkeys(r.layout for r in rounds))
    for position, item in enumerate(rounds):
        index = position // len(layouts) + 1
        for fig in (item.hlbook, item.baseline, *item.loaded.values()):
            print(
                f"round {index} {fig.layout} {fig.kind}: {fig.blocks} blocks written in the "
                f"window, {fig.blocks_with_l2} with an l2Book message; "
                f"{len(fig.all_pairs)} (block, client) samples; "
                f"{fig.missing} expected client messages missing; {fig.unmapped} unmapped"
                + (
                    f"; {fig.block_rate:.1f} blocks/s applied; {fig.events_note}"
                    if fig.kind.startswith("hlbook")
                    else ""
                )
            )
            print(f"  every client   {_dist(fig.all_pairs)}")
            print(f"  first client   {_dist(fig.first)}")
            print(f"  last client    {_dist(fig.last)}")
            if fig.layout == "streaming":
                print(f"  from the next block's write: {_dist(fig.after_next)}")
            if fig.floor:
                print(f"  in-process, per written block (no I/O): {_dist(fig.floor)}")
            if fig.load is not None:
                print(f"  load: {_load_text(fig.load)}; server CPU {fig.cpu['server']:.0%}")
            for line in fig.errors[:5]:
                print(f"  server error: {line}")
    print()
    print(summary_header("server_latency"))
    print(f"command: {command_line('server_latency.py')}")
    print(
        f"setup: simulator at {args.blocks_per_second:g} blocks/s, scale {args.scale:g} "
        f"(mainnet-sized blocks), {args.clients} {args.client} clients on l2Book BTC in one "
        f"client process, loopback, {CORES} cores, "
        f"{'server pinned to its own core' if args.pin else 'no pinning'}, "
        f"{len(rounds) // max(1, len(layouts))} round(s); the baseline "
        "follows the same diff file, orjson.loads each line and writes one prebuilt message"
    )
    for layout in layouts:
        mine = [r for r in rounds if r.layout == layout]
        ratios = [r.ratios() for r in mine]
        p50, p99, nxt = (_median([x[i] for x in ratios]) for i in range(3))
        hl = [v for r in mine for v in r.hlbook.all_pairs]
        base = [v for r in mine for v in r.baseline.all_pairs]
        floor = [v for r in mine for v in r.hlbook.floor]
        print(f"{layout:<9} hlbook   write -> client l2Book  {_dist(hl)}  [{len(hl)} samples]")
        print(f"{'':9} baseline write -> client l2Book  {_dist(base)}  [{len(base)} samples]")
        if layout == "by-block":
            verdict = (
                f"(targets p50 <= {TARGET_P50_RATIO:g}x: "
                f"{'met' if p50 <= TARGET_P50_RATIO else 'MISSED'}, p99 <= "
                f"{TARGET_P99_RATIO:g}x: {'met' if p99 <= TARGET_P99_RATIO else 'MISSED'})"
            )
        else:
            verdict = (
                f"(target from the next block's write p50 <= {TARGET_STREAMING_RATIO:g}x: "
                f"{'met' if nxt <= TARGET_STREAMING_RATIO else 'MISSED'})"
            )
        rounds_text = ", ".join(f"{a:.2f}/{b:.2f}/{c:.2f}" for a, b, c in ratios)
        print(
            f"{'':9} hlbook / baseline, median of rounds: p50 {p50:.2f}x  p99 {p99:.2f}x  "
            f"p50 from the next block's write {nxt:.2f}x  {verdict}  "
            f"[per round p50/p99/next: {rounds_text}]"
        )
        if layout == "streaming":
            hl_next = [v for r in mine for v in r.hlbook.after_next]
            base_next = [v for r in mine for v in r.baseline.after_next]
            print(f"{'':9} hlbook   from the next block's write  {_dist(hl_next)}")
            print(f"{'':9} baseline from the next block's write  {_dist(base_next)}")
        print(
            f"{'':9} in-process floor per written block (decode+join+apply+publish, no I/O): "
            f"{_dist(floor)}"
        )
        for load in args.loads:
            loaded = [r.loaded[load] for r in mine]
            pairs = [
                (
                    _ratio(f.all_pairs, r.hlbook.all_pairs, 50),
                    _ratio(f.all_pairs, r.hlbook.all_pairs, 99),
                )
                for f, r in zip(loaded, mine, strict=True)
            ]
            lp50, lp99 = _median([a for a, _ in pairs]), _median([b for _, b in pairs])
            values = [v for f in loaded for v in f.all_pairs]
            ok = max(lp50, lp99) <= TARGET_LOADED_RATIO
            cpu_on = _median([f.cpu["server"] for f in loaded])
            cpu_off = _median([r.hlbook.cpu["server"] for r in mine])
            print(
                f"{'':9} with {load:<5}  write -> client l2Book  {_dist(values)}  "
                f"[{len(values)} samples]"
            )
            print(
                f"{'':9} with {load} / without, median of rounds: p50 {lp50:.2f}x  p99 "
                f"{lp99:.2f}x  (target <= {TARGET_LOADED_RATIO:g}x: {'met' if ok else 'MISSED'})  "
                f"[per round p50/p99: {', '.join(f'{a:.2f}/{b:.2f}' for a, b in pairs)}]; "
                f"server CPU {cpu_on:.0%} with, {cpu_off:.0%} without"
            )
            for f in loaded:
                assert f.load is not None
                print(f"{'':9}   {load}: {_load_text(f.load)}")
        for fig in (r.hlbook for r in mine):
            book_verdict = "met" if fig.book_share < TARGET_BOOK_SHARE else "MISSED"
            print(
                f"{'':9} server CPU {fig.cpu['server']:4.0%}  book task {fig.book_share:4.1%} "
                f"of wall time (lifetime {fig.book_share_lifetime:4.1%}; target < "
                f"{TARGET_BOOK_SHARE:.0%}: {book_verdict})  decoding {fig.decode_share:4.1%}  "
                f"node CPU {fig.cpu['node']:4.0%}  clients CPU {fig.cpu['clients']:4.0%}; "
                f"waited for a CPU {fig.server_wait:.1%}; others {fig.others:.0%} of a core; "
                f"steal {fig.steal:.1%}"
            )


def _load_text(result: dict[str, Any]) -> str:
    """One line of a load process's result."""
    parts = []
    for name in ("post", "scrape"):
        timing = result[name]
        if timing["count"]:
            parts.append(
                f"{name} {timing['rate']:.1f}/s p50 {timing['p50_ms']:.2f} ms p99 "
                f"{timing['p99_ms']:.2f} ms max {timing['max_ms']:.1f} ms "
                f"({timing['median_bytes']:,.0f} B, statuses {timing['statuses']}, "
                f"{timing['errors']} errors)"
            )
    if result["page_messages"]:
        parts.append(f"page stand-in {result['page_messages'] / result['seconds']:.0f} msg/s")
    return "; ".join(parts) or "nothing measured"


async def run(args: argparse.Namespace) -> list[Round]:
    """Every requested layout, hlbook and the baseline alternately, ``--rounds`` times."""
    server_cpus = None
    if args.pin:
        # The server gets a CPU to itself; the node, the clients and this script share
        # the others (children inherit this process's CPUs).
        server_cpus, others = split_cpus()
        pin(os.getpid(), others)
    layouts = [("by-block", args.duration)]
    if args.streaming_duration > 0:
        layouts.append(("streaming", args.streaming_duration))
    rounds: list[Round] = []
    for index in range(args.rounds):
        for layout, duration in layouts:
            # Alternate which goes first: a machine that gets busier or quieter over the
            # run should not favour one of them.
            kinds = ["hlbook", "baseline", *(f"hlbook+{load}" for load in args.loads)]
            if index % 2:
                kinds.reverse()
            done = {
                k: figures(await measure(args, layout, duration, server_cpus, k)) for k in kinds
            }
            loaded = {load: done[f"hlbook+{load}"] for load in args.loads}
            rounds.append(Round(layout, done["hlbook"], done["baseline"], loaded))
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke check")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=20.0, help="by-block window, seconds")
    parser.add_argument(
        "--streaming-duration", type=float, default=10.0, help="streaming window; 0 skips it"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="hlbook and baseline runs per layout (median)"
    )
    parser.add_argument(
        "--server-root",
        help="run the hlbook server (and the node) from this checkout instead (e.g. an older "
        "revision, for a before/after comparison in one session); the floor is this one's",
    )
    parser.add_argument(
        "--with",
        dest="loads",
        action="append",
        choices=LOADS,
        default=[],
        help="also run hlbook with this load in every round and compare its latency with "
        "hlbook's without (post: POST /info l2Book at --post-rate; ops: a /metrics scrape "
        "every second and a stand-in for the live page); repeatable",
    )
    parser.add_argument(
        "--post-rate", type=float, default=100.0, help="POST /info requests/s for --with post"
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
    node = parser.add_argument_group("node and baseline processes (internal)")
    node.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    node.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    node.add_argument("--node-data", help=argparse.SUPPRESS)
    node.add_argument("--times", help=argparse.SUPPRESS)
    node.add_argument("--layout", default="by-block", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node or args.baseline:
        from hlbook.runner import run as run_until_signal

        sys.exit(run_until_signal(lambda: (_node if args.node else _baseline)(args)))
    args.pin = args.pin and CORES >= 2
    if args.server_root:
        # Children import hlbook from there (start_child copies this environment).
        os.environ["PYTHONPATH"] = str(Path(args.server_root).resolve())
        # ... and `python -m hlbook` would import this checkout's from its working directory.
        server_common.child_root = Path(args.server_root).resolve()
    if args.quick:
        args.clients = min(args.clients, 10)
        args.duration, args.streaming_duration, args.warmup = 1.5, 1.0, 0.5
        args.rounds = 1
    results = trio.run(run, args)
    report(args, results)
    figs = [fig for item in results for fig in (item.hlbook, item.baseline)]
    if any(math.isnan(percentile(fig.all_pairs, 50)) for fig in figs):
        sys.exit("no latency samples: see the lines above")


if __name__ == "__main__":
    main()
