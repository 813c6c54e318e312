"""Benchmark: fan-out messages/s with ``hlbook serve --workers 2`` as a multiple of ``--workers 1``.

Each round runs both, one after the other, on the same feed (``hlbook
simulate`` at a high block rate, as ``server_fanout.py``) with the same client
process(es) (``server_common.py clients``: lean clients that parse frame
headers only) and the same load: every client subscribes to several
``l2Book`` views, far more than one core can send, so the per-client queues
conflate the excess and each server sends as fast as it can. Nothing is
pinned: the workers, the simulator and the clients share the machine's cores,
as they would on a node's machine.

Per server it also measures the feed alone (no client connected): the CPU
that tailing, decoding and applying blocks costs, summed over the workers.
That is the figure behind "each worker tails the files itself": what a second
tailing worker costs, against what it adds in fan-out.

The figure is the ratio of the client-side receive rates (2 workers / 1), per
round and as the median over rounds, with the absolute rates and CPU shares.

Before the rounds, in this process, on the real mainnet slice: what a worker
would save if one reader decoded the node's lines and sent each worker the
decoded events (msgpack, the cheapest msgspec encoding) instead — the
worker's decode of a node line against its decode of the reader's message,
beside the apply + views work every worker does either way.

Usage: ``python benchmarks/server_workers.py [--quick] [--rounds N] [--clients N]``
"""

import argparse
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from server_common import (
    CORES,
    CpuMeter,
    clients_argv,
    command_line,
    health,
    parse_tagged,
    raise_nofile,
    start_child,
    start_node_and_server,
    summary_header,
)
from server_fanout import subscriptions

from hlbook.node.formats import DiffLine, FillLine, StatusLine, Stream, decode_line

TARGET = 1.6


@attrs.define
class Phase:
    """One server (1 or N workers) in one round."""

    workers: int
    rate: float
    """Messages per second received by all clients together."""
    per_client: tuple[float, float]
    server_cpu: float
    """All hlbook processes together (1.0 = one core)."""
    clients_cpu: float
    node_cpu: float
    feed_cpu: float
    """The server's CPU with the feed running and no client."""
    feed_decode: float
    """Of it, decoding node lines (summed over workers, share of wall time)."""
    feed_book: float
    """Of it, the book task (summed over workers, share of wall time)."""
    split: list[int]
    """Clients on each worker (from ``/health``)."""
    closed: int
    others: float
    steal: float


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the workers of a supervisor), from ``/proc``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


async def _phase(args: argparse.Namespace, tmp: Path, workers: int) -> Phase:
    sim_args = [
        "--blocks-per-second", str(args.blocks_per_second),
        "--scale", str(args.scale),
        "--seed", "3",
        "--log-level", "warning",
    ]  # fmt: skip
    serve_args = [
        "--validate-every", "0",
        "--idle-timeout", "600",
        "--max-connections", str(args.clients + 100),
        "--workers", str(workers),
        "--history", "none",
        "--log-level", "info",
    ]  # fmt: skip
    async with AsyncExitStack() as stack:
        node, server, url = await start_node_and_server(stack, tmp, sim_args, serve_args)
        if workers > 1:
            await server.wait_for(rf"{workers}/{workers} workers ready")
        pids = {"server": server.pid}
        pids.update({f"worker{i}": pid for i, pid in enumerate(_children(server.pid))})
        http_url = url.removesuffix("/ws").replace("ws://", "http://")
        await trio.sleep(args.warmup)

        # The feed alone: every worker tails, decodes and applies every block.
        meter = CpuMeter({**pids, "node": node.pid})
        before = await _workers_health(http_url, workers)
        meter.mark()
        await trio.sleep(args.idle_seconds)
        shares = meter.shares()
        after = await _workers_health(http_url, workers)
        feed_cpu = sum(share for name, share in shares.items() if name != "node")
        span = sum(float(after[i]["uptime_s"]) - float(before[i]["uptime_s"]) for i in after)
        span /= len(after)

        def pipeline(key: str) -> float:
            used = sum(
                float(after[i]["pipeline"][key]) - float(before[i]["pipeline"][key]) for i in after
            )
            return used / max(span, 1e-9)

        feed_decode, feed_book = pipeline("decode_seconds"), pipeline("book_seconds")

        meter = CpuMeter({**pids, "node": node.pid})
        argv = clients_argv(
            url,
            args.clients,
            [subscriptions(args.subscriptions)],
            warmup=args.warmup,
            duration=args.duration,
        )
        async with start_child("clients", argv) as clients:
            meter.pids["clients"] = clients.pid
            ready = parse_tagged((await clients.wait_for(r"^READY ", limit=180)).string)
            if ready["failed"]:
                raise RuntimeError(f"{ready['failed']} clients failed: {ready['first_error']}")
            await clients.wait_for(r"^START ", limit=args.warmup + 30)
            meter.mark()
            split = await _split(http_url, workers)
            line = await clients.wait_for(r"^RESULT ", limit=args.duration + 30)
            shares = meter.shares()
        errors = server.errors()
    if errors:
        raise RuntimeError(f"server errors with --workers {workers}: {errors[:3]}")
    result = parse_tagged(line.string)
    seconds = result["seconds"]
    return Phase(
        workers=workers,
        rate=result["messages"] / seconds,
        per_client=(result["per_client_min"] / seconds, result["per_client_max"] / seconds),
        server_cpu=sum(s for name, s in shares.items() if name not in ("node", "clients")),
        clients_cpu=shares["clients"],
        node_cpu=shares["node"],
        feed_cpu=feed_cpu,
        feed_decode=feed_decode,
        feed_book=feed_book,
        split=split,
        closed=result["closed"],
        others=meter.others,
        steal=meter.steal,
    )


async def _workers_health(http_url: str, workers: int) -> dict[int, dict[str, Any]]:
    """Each worker's own health, by index (one worker: the server's)."""
    if workers == 1:
        return {0: await health(http_url.replace("http://", "ws://") + "/ws")}
    found: dict[int, dict[str, Any]] = {}
    async with httpx.AsyncClient() as client:
        with trio.fail_after(30):
            # A new connection lands on either worker: ask until each answered for itself.
            while len(found) < workers:
                response = await client.get(f"{http_url}/health", headers={"connection": "close"})
                data = response.json()
                found[data["worker"]] = data
    return found


async def _split(http_url: str, workers: int) -> list[int]:
    async with httpx.AsyncClient() as client:
        data = (await client.get(f"{http_url}/health")).json()
    if workers == 1:
        return [data["clients"]]
    return [entry.get("clients") or 0 for entry in data["workers"]["each"]]


@attrs.define
class ReaderCost:
    """Per block of the mainnet slice, microseconds (medians of several passes)."""

    node_decode: float
    """Decoding the three node lines (what each tailing worker does)."""
    reader_decode: float
    """Decoding the same events from a reader's msgpack message (what a fed worker does)."""
    reader_encode: float
    """Encoding them once in the reader."""
    whole: float
    """Decode + join + apply + views (``mainnet_slice.process``): the book task's work."""
    blocks: int


def reader_cost(passes: int = 5) -> ReaderCost:
    """What one reader feeding the workers would save each worker, on the mainnet slice."""
    import msgspec
    from mainnet_slice import books_from, load, process

    snapshot, lines = load()
    types = {Stream.STATUSES: StatusLine, Stream.DIFFS: DiffLine, Stream.FILLS: FillLine}
    decoded = {stream: [decode_line(stream, raw) for raw in lines[stream]] for stream in types}
    # msgpack where the events round-trip through it; statuses keep each order as the node's
    # raw JSON (msgspec.Raw, forwarded verbatim by l4Book), so they travel as compact JSON.
    codecs: dict[Stream, tuple[Any, Any]] = {}
    for stream, tp in types.items():
        codec: tuple[Any, Any] = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(tp))
        try:
            codec[1].decode(codec[0].encode(decoded[stream][0]))
        except msgspec.ValidationError:
            codec = (msgspec.json.Encoder(), msgspec.json.Decoder(tp))
        codecs[stream] = codec
    packed = {
        stream: [codecs[stream][0].encode(line) for line in decoded[stream]] for stream in types
    }
    blocks = len(lines[Stream.DIFFS])

    def node() -> None:
        for stream in types:
            for raw in lines[stream]:
                decode_line(stream, raw)

    def fed() -> None:
        for stream, (_, decoder) in codecs.items():
            for raw in packed[stream]:
                decoder.decode(raw)

    def encode() -> None:
        for stream, (encoder, _) in codecs.items():
            for line in decoded[stream]:
                encoder.encode(line)

    # Interleaved, pass by pass, so that all three see the same machine load.
    runs: dict[str, list[float]] = {"node": [], "fed": [], "encode": [], "whole": []}
    for _ in range(passes):
        for name, work in (("node", node), ("fed", fed), ("encode", encode)):
            started = time.perf_counter()
            work()
            runs[name].append(time.perf_counter() - started)
        books = books_from(snapshot)
        started = time.perf_counter()
        process(books, lines)
        runs["whole"].append(time.perf_counter() - started)

    def per_block(name: str) -> float:
        return float(statistics.median(runs[name])) / blocks * 1e6

    return ReaderCost(
        node_decode=per_block("node"),
        reader_decode=per_block("fed"),
        reader_encode=per_block("encode"),
        whole=per_block("whole"),
        blocks=blocks,
    )


async def run(args: argparse.Namespace) -> list[tuple[Phase, Phase]]:
    """Every round: one worker, then ``--workers`` workers."""
    rounds = []
    for _ in range(args.rounds):
        pair = []
        for workers in (1, args.workers):
            with tempfile.TemporaryDirectory(prefix="hlbook-workers-") as tmp:
                pair.append(await _phase(args, Path(tmp), workers))
        rounds.append((pair[0], pair[1]))
    return rounds


def report(args: argparse.Namespace, rounds: list[tuple[Phase, Phase]], cost: ReaderCost) -> None:
    """Each round, then the summary block."""
    for index, (one, many) in enumerate(rounds, 1):
        print(f"round {index}: ratio {many.rate / one.rate:.2f}")
        for phase in (one, many):
            print(
                f"  --workers {phase.workers}: {phase.rate:,.0f} msg/s (per client "
                f"{phase.per_client[0]:.0f}..{phase.per_client[1]:.0f}); hlbook CPU "
                f"{phase.server_cpu:.0%}, clients {phase.clients_cpu:.0%}, simulator "
                f"{phase.node_cpu:.0%}, others {phase.others:.0%}, steal {phase.steal:.0%}; "
                f"clients per worker {phase.split}; closed {phase.closed}"
            )
            print(
                f"    feed alone (no client): hlbook CPU {phase.feed_cpu:.0%} "
                f"(decoding {phase.feed_decode:.0%}, book task {phase.feed_book:.0%}, "
                f"summed over workers)"
            )
    ratios = [many.rate / one.rate for one, many in rounds]
    ratio = statistics.median(ratios)

    def median(pick: Any) -> float:
        return float(statistics.median(pick(one, many) for one, many in rounds))

    print()
    print(summary_header("server_workers"))
    print(f"command: {command_line('server_workers.py')}")
    print(
        f"setup: {args.clients} clients x {args.subscriptions} l2Book views in one other "
        f"process, loopback, {CORES} cores, nothing pinned; feed {args.blocks_per_second:g} "
        f"blocks/s at scale {args.scale:g}; {args.rounds} round(s) x {args.duration:g} s"
    )
    for label, pick in (("1 worker ", 0), (f"{args.workers} workers", 1)):
        print(
            f"{label}  {median(lambda o, m, p=pick: (o, m)[p].rate):9,.0f} msg/s  "
            f"hlbook CPU {median(lambda o, m, p=pick: (o, m)[p].server_cpu):4.0%}  "
            f"clients CPU {median(lambda o, m, p=pick: (o, m)[p].clients_cpu):4.0%}  "
            f"feed alone {median(lambda o, m, p=pick: (o, m)[p].feed_cpu):4.0%}"
        )
    one_us = median(lambda o, m: o.server_cpu / o.rate * 1e6)
    many_us = median(lambda o, m: m.server_cpu / m.rate * 1e6)
    clients_us = median(lambda o, m: (o.clients_cpu / o.rate + m.clients_cpu / m.rate) / 2 * 1e6)
    print(
        f"CPU per message received: hlbook {one_us:.1f} us with 1 worker, {many_us:.1f} us with "
        f"{args.workers} (feed included); the client process {clients_us:.1f} us; "
        f"efficiency {args.workers} workers / 1: {one_us / many_us:.2f}"
    )
    print(
        f"other processes on the machine used "
        f"{median(lambda o, m: o.others):.0%} / {median(lambda o, m: m.others):.0%} of a core "
        f"(1 / {args.workers} workers): on a busy machine N processes get N shares of the "
        f"scheduler, which inflates the ratio"
    )
    print(
        f"one reader feeding the workers, mainnet slice ({cost.blocks} blocks), per block and "
        f"worker: decoding the node's lines {cost.node_decode:.0f} us (of the book task's "
        f"{cost.whole:.0f} us) would become decoding the reader's message "
        f"{cost.reader_decode:.0f} us ({cost.reader_decode / cost.node_decode:.2f}x); the reader "
        f"adds {cost.reader_encode:.0f} us to encode"
    )
    print(
        f"ratio {args.workers} workers / 1: {ratio:.2f} (rounds: "
        f"{', '.join(f'{r:.2f}' for r in ratios)})  target >= {TARGET}: "
        f"{'met' if ratio >= TARGET else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke check")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="compared with 1")
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--subscriptions", type=int, default=16, help="l2Book views per client")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per server")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="feed-only window")
    parser.add_argument("--blocks-per-second", type=float, default=40.0)
    parser.add_argument("--scale", type=float, default=0.35)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.clients = 1, min(args.clients, 20)
        args.duration, args.warmup, args.idle_seconds = 1.0, 0.5, 0.5
    raise_nofile(args.clients + 256)
    cost = reader_cost(2 if args.quick else 9)
    rounds = trio.run(run, args)
    report(args, rounds, cost)


if __name__ == "__main__":
    main()
