"""Benchmark: fan-out messages/s hlbook delivers, as a multiple of a plain trio-websocket server.

Each round has two phases with the same client process (``server_common.py
clients``: N lean clients that parse frame headers only and read in batches,
so the client side is not the bottleneck) and the same N:

1. **hlbook**, twice — with plain clients, then with clients that negotiate
   permessage-deflate (compressed once per message for all of them):
   ``hlbook simulate`` writes blocks at a high rate (default
   40 blocks/s at scale 0.35: mainnet's event rate in smaller, more frequent
   blocks) into ``hlbook serve``; every client subscribes to 21
   ``l2Book`` views, which change on most blocks. Far more messages are
   offered than one core can send: the per-client queues conflate the
   excess (the design) and the server sends as fast as it can. Before the
   clients connect, the server's CPU share with the feed running and no
   client is measured: that is what ingesting and applying blocks costs.
2. **baseline**: a minimal trio-websocket server (this script with
   ``--baseline``) sends a real ``l2Book`` message captured from phase 1 to
   every client, in a loop, as fast as it can.

The ratio of the client-side receive rates is the figure, per round and as
the median over rounds: a virtual machine's speed can drift by ±15% over
minutes, so several short hlbook/baseline pairs give a steadier ratio than
one long pair. With ``--pin`` (default on 2+ CPUs) each server runs alone on
one CPU and everything else (simulator, clients, this script) on the
others, so both servers get exactly one core and the phases do not depend
on how the kernel spreads four processes over two cores.

With ``--tls``, each round also runs hlbook with a certificate (made on the
fly with ``trustme``) and the same plain clients over ``wss://``: its rate
as a multiple of hlbook's plain ``ws://`` rate in the same round.

Usage: ``python benchmarks/server_fanout.py [--quick] [--rounds N] [--clients N] [--duration S]
[--tls]``
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from server_common import (
    CORES,
    CpuMeter,
    clients_argv,
    command_line,
    health,
    parse_tagged,
    pin,
    raise_nofile,
    split_cpus,
    start_child,
    start_node,
    start_server,
    summary_header,
    tls_files,
)
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

TARGET = 1.5
SIM_COINS = ("BTC", "ETH", "SOL", "PURR/USDC", "@1", "@107", "xyz:XYZ100")


def subscriptions(per_client: int) -> list[str]:
    """``per_client`` distinct l2Book requests: every coin, then coarser views of each."""
    views: list[dict[str, Any]] = [{"type": "l2Book", "coin": coin} for coin in SIM_COINS]
    for figures in (5, 4):
        views += [{"type": "l2Book", "coin": coin, "nSigFigs": figures} for coin in SIM_COINS]
    if per_client > len(views):
        raise SystemExit(f"at most {len(views)} subscriptions per client")
    return [
        orjson.dumps({"method": "subscribe", "subscription": view}).decode()
        for view in views[:per_client]
    ]


# -- the baseline server ---------------------------------------------------------------------


async def _baseline(payload_file: str) -> None:
    """Send the payload to every client as fast as possible; print the URL on stderr."""
    payload = Path(payload_file).read_text()

    async def drain(ws: WebSocketConnection) -> None:
        # A reader per client, as hlbook has: trio-websocket needs one to keep going.
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, ws)
            try:
                while True:
                    await ws.send_message(payload)
            except ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(f"serving ws://127.0.0.1:{server.port}/ws", file=sys.stderr, flush=True)


# -- one phase ----------------------------------------------------------------------------------


@attrs.define
class Phase:
    """What the clients received from one server in one window, and what it cost."""

    messages: int
    compressed: int
    """Of them, how many arrived compressed (permessage-deflate)."""
    bytes: int
    seconds: float
    per_client: tuple[float, float]
    closed: int
    cpu: dict[str, float]
    waits: dict[str, float]
    others: float
    """CPU used by processes outside this benchmark (1.0 = a core)."""
    steal: float
    """Share of all CPU time the hypervisor took."""

    @property
    def rate(self) -> float:
        """Messages per second received by all clients together."""
        return self.messages / self.seconds

    @property
    def size(self) -> float:
        """Average message payload in bytes."""
        return self.bytes / max(self.messages, 1)


@attrs.define
class HlbookExtra:
    """hlbook's own view of the same window, from health, and the no-client baseline."""

    idle_cpu: float
    """Server CPU share with the feed running and no client (ingest + book)."""
    idle_book: float
    idle_decode: float
    blocks_per_second: float
    offered: float
    """Messages per second offered to client queues (before conflation)."""
    sent: float
    book: float
    decode: float
    lag_disconnects: int
    errors: list[str]
    stop_seconds: float | None
    killed: bool


async def _capture_l2(url: str) -> str:
    """One real l2Book BTC message from hlbook (the baseline sends it)."""
    async with open_websocket_url(url) as ws:
        await ws.send_message(subscriptions(1)[0])
        with trio.fail_after(10):
            while True:
                message = await ws.get_message()
                assert isinstance(message, str)
                if message.startswith('{"channel":"l2Book"'):
                    return message


async def _count(
    url: str,
    args: argparse.Namespace,
    meter: CpuMeter,
    *,
    deflate: bool = False,
    ca_file: Path | None = None,
) -> Phase:
    """Run the client process against ``url`` and measure one window (``deflate``: the
    clients offer permessage-deflate; ``ca_file``: for a ``wss://`` URL)."""
    argv = clients_argv(
        url,
        args.clients,
        [subscriptions(args.subscriptions)],
        warmup=args.warmup,
        duration=args.duration,
        deflate=deflate,
        ca_file=ca_file,
    )
    async with start_child("clients", argv) as clients:
        meter.pids["clients"] = clients.pid
        ready = parse_tagged((await clients.wait_for(r"^READY ")).string)
        if ready["failed"]:
            raise RuntimeError(f"{ready['failed']} clients failed: {ready['first_error']}")
        await clients.wait_for(r"^START ", limit=args.warmup + 30)
        meter.mark()
        line = await clients.wait_for(r"^RESULT ", limit=args.duration + 30)
        cpu = meter.shares()
    result = parse_tagged(line.string)
    seconds = result["seconds"]
    return Phase(
        messages=result["messages"],
        compressed=result["compressed"],
        bytes=result["bytes"],
        seconds=seconds,
        per_client=(result["per_client_min"] / seconds, result["per_client_max"] / seconds),
        closed=result["closed"],
        cpu=cpu,
        waits=meter.waits,
        others=meter.others,
        steal=meter.steal,
    )


async def hlbook_phase(
    args: argparse.Namespace, tmp: Path, cpus: tuple[set[int], set[int]] | None
) -> tuple[Phase, Phase, HlbookExtra, str, Phase | None]:
    """hlbook fed by the simulator: a window with plain clients, then one with clients that
    negotiate permessage-deflate; hlbook's figures (plain window) and an l2Book message;
    with ``--tls``, then a window with the same plain clients over ``wss://`` (a second
    server with a certificate, on the same node, after the first one stopped)."""
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
    ]  # fmt: skip
    async with AsyncExitStack() as outer:
        node = await start_node(outer, tmp, sim_args)
        stack = await outer.enter_async_context(AsyncExitStack())
        server, url = await start_server(stack, tmp, node.info_url, serve_args)
        if cpus is not None:
            pin(server.pid, cpus[0])
        payload = await _capture_l2(url)
        # The cost of the feed alone: ingest + book with no client to send to.
        await trio.sleep(args.warmup)
        meter = CpuMeter({"server": server.pid, "node": node.pid})
        idle_before = await health(url)
        meter.mark()
        await trio.sleep(args.idle_seconds)
        idle_cpu = meter.shares()["server"]
        idle_after = await health(url)
        meter = CpuMeter({"server": server.pid, "node": node.pid})
        before = await health(url)
        phase = await _count(url, args, meter)
        after = await health(url)
        meter = CpuMeter({"server": server.pid, "node": node.pid})
        deflated = await _count(url, args, meter, deflate=True)
        errors = server.errors()
        await stack.aclose()
        tls = None
        if args.tls:
            cert, key, ca = tls_files(tmp)
            tls_args = [*serve_args, "--tls-cert", str(cert), "--tls-key", str(key)]
            tls_server, tls_url = await start_server(outer, tmp, node.info_url, tls_args, "tls")
            if cpus is not None:
                pin(tls_server.pid, cpus[0])
            await trio.sleep(args.warmup)
            meter = CpuMeter({"server": tls_server.pid, "node": node.pid})
            tls = await _count(tls_url, args, meter, ca_file=ca)
            errors += tls_server.errors()
    idle_span = float(idle_after["uptime_s"] - idle_before["uptime_s"])
    span = float(after["uptime_s"] - before["uptime_s"])

    def rate(a: Any, b: Any, *path: str) -> float:
        for key in path:
            a, b = a[key], b[key]
        return (float(b) - float(a)) / span

    extra = HlbookExtra(
        idle_cpu=idle_cpu,
        idle_book=(idle_after["pipeline"]["book_seconds"] - idle_before["pipeline"]["book_seconds"])
        / idle_span,
        idle_decode=(
            idle_after["pipeline"]["decode_seconds"] - idle_before["pipeline"]["decode_seconds"]
        )
        / idle_span,
        blocks_per_second=rate(before, after, "pipeline", "blocks_applied"),
        offered=rate(before, after, "fanout", "messages_queued"),
        sent=rate(before, after, "connections", "messages_sent"),
        book=rate(before, after, "pipeline", "book_seconds"),
        decode=rate(before, after, "pipeline", "decode_seconds"),
        lag_disconnects=len(after["connections"]["recent_lag_disconnects"]),
        errors=errors,
        stop_seconds=server.stop_seconds,
        killed=server.killed,
    )
    return phase, deflated, extra, payload, tls


async def baseline_phase(
    args: argparse.Namespace, payload_file: Path, cpus: tuple[set[int], set[int]] | None
) -> Phase:
    """The plain trio-websocket server sending ``payload_file`` as fast as it can."""
    async with start_child(
        "baseline", [sys.executable, __file__, "--baseline", str(payload_file)]
    ) as baseline:
        if cpus is not None:
            pin(baseline.pid, cpus[0])
        url = (await baseline.wait_for(r"serving (ws://\S+)")).group(1)
        return await _count(url, args, CpuMeter({"server": baseline.pid}))


Round = tuple[Phase, Phase, HlbookExtra, Phase, Phase | None]
"""hlbook plain, hlbook compressed, hlbook's figures, the baseline, hlbook over TLS."""


async def run(args: argparse.Namespace) -> list[Round]:
    """Every round: hlbook (plain, then compressed clients), then the baseline."""
    cpus: tuple[set[int], set[int]] | None = None
    if args.pin:
        cpus = split_cpus()
        pin(os.getpid(), cpus[1])  # this script and every child; each server then moves
    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="hlbook-fanout-") as tmp_name:
            tmp = Path(tmp_name)
            phase, deflated, extra, payload, tls = await hlbook_phase(args, tmp, cpus)
            (tmp / "payload.json").write_text(payload)
            base = await baseline_phase(args, tmp / "payload.json", cpus)
        rounds.append((phase, deflated, extra, base, tls))
    return rounds


# -- the report -------------------------------------------------------------------------------


def report(args: argparse.Namespace, rounds: list[Round]) -> None:
    """Print each round, then the summary block."""
    for index, (hl, dz, extra, base, tls) in enumerate(rounds, 1):
        print(
            f"round {index}: hlbook {hl.rate:,.0f} msg/s (server CPU {hl.cpu['server']:.0%}, "
            f"waited for a CPU {hl.waits['server']:.0%}), compressed {dz.rate:,.0f} msg/s "
            f"(server CPU {dz.cpu['server']:.0%}, {dz.compressed / max(dz.messages, 1):.0%} "
            f"of messages compressed), baseline {base.rate:,.0f} msg/s "
            f"(server CPU {base.cpu['server']:.0%}, waited {base.waits['server']:.0%}), "
            f"ratios {hl.rate / base.rate:.2f} / {dz.rate / base.rate:.2f}"
        )
        print(
            f"  hlbook feed: {extra.blocks_per_second:.1f} blocks/s applied; with no client the "
            f"server used {extra.idle_cpu:.0%} CPU (book task {extra.idle_book:.0%}, decoding "
            f"{extra.idle_decode:.0%} of wall time)"
        )
        conflated = max(0.0, 1 - extra.sent / max(extra.offered, 1))
        print(
            f"  under load: {extra.offered:,.0f} msg/s offered to client queues, "
            f"{extra.sent:,.0f}/s sent ({conflated:.0%} conflated "
            f"away), book task {extra.book:.0%}, decoding {extra.decode:.0%}; per client "
            f"{hl.per_client[0]:.0f}..{hl.per_client[1]:.0f} msg/s; closed {hl.closed}, "
            f"lag disconnects {extra.lag_disconnects}"
        )
        print(
            f"  baseline: per client {base.per_client[0]:.0f}..{base.per_client[1]:.0f} msg/s; "
            f"closed {base.closed}; client CPU {base.cpu['clients']:.0%} "
            f"(hlbook phase {hl.cpu['clients']:.0%}, simulator {hl.cpu['node']:.0%})"
        )
        stop = "killed" if extra.killed else f"{extra.stop_seconds or 0:.1f} s"
        print(
            f"  hlbook server exit after SIGINT: {stop}; other processes on the machine used "
            f"{hl.others:.0%} / {base.others:.0%} of a core during the two phases, hypervisor "
            f"steal {hl.steal:.0%} / {base.steal:.0%}"
        )
        if tls is not None:
            print(
                f"  over wss://: {tls.rate:,.0f} msg/s (server CPU {tls.cpu['server']:.0%}, "
                f"waited {tls.waits['server']:.0%}; client CPU {tls.cpu['clients']:.0%}; "
                f"closed {tls.closed}); {tls.rate / hl.rate:.2f}x plain ws://"
            )
        for line in extra.errors[:5]:
            print(f"  hlbook server error: {line}")
    hl_rates = [hl.rate for hl, *_ in rounds]
    dz_rates = [dz.rate for _, dz, *_ in rounds]
    base_rates = [base.rate for _, _, _, base, _ in rounds]
    ratios = [h / b for h, b in zip(hl_rates, base_rates, strict=True)]
    dz_ratios = [d / b for d, b in zip(dz_rates, base_rates, strict=True)]
    ratio, dz_ratio = statistics.median(ratios), statistics.median(dz_ratios)
    hl_cpu = statistics.median(hl.cpu["server"] for hl, *_ in rounds)
    dz_cpu = statistics.median(dz.cpu["server"] for _, dz, *_ in rounds)
    base_cpu = statistics.median(base.cpu["server"] for _, _, _, base, _ in rounds)
    idle = statistics.median(extra.idle_cpu for _, _, extra, *_ in rounds)
    hl_rate, base_rate = statistics.median(hl_rates), statistics.median(base_rates)
    dz_rate = statistics.median(dz_rates)
    hl_size = statistics.median(hl.size for hl, *_ in rounds)
    dz_size = statistics.median(dz.size for _, dz, *_ in rounds)
    base_size = statistics.median(base.size for _, _, _, base, _ in rounds)
    # Server CPU per message beyond what the feed costs with no client at all.
    fan_us = (hl_cpu - idle) / hl_rate * 1e6 if hl_rate else math.nan
    dz_us = (dz_cpu - idle) / dz_rate * 1e6 if dz_rate else math.nan
    base_us = base_cpu / base_rate * 1e6 if base_rate else math.nan
    verdict = "met" if min(ratio, dz_ratio) >= TARGET else "MISSED"
    first = rounds[0][2]
    print()
    print(summary_header("server_fanout"))
    print(f"command: {command_line('server_fanout.py')}")
    pinned = ", each server pinned to its own core" if args.pin else ""
    print(
        f"setup: {args.clients} clients x {args.subscriptions} l2Book views, clients in another "
        f"process, loopback, {CORES} cores{pinned}; "
        f"feed {first.blocks_per_second:.0f} blocks/s at scale {args.scale:g}; "
        f"{args.rounds} round(s) x {args.duration:g} s per server"
    )
    print(
        f"hlbook   {hl_rate:9,.0f} msg/s  {hl_rate * hl_size / 1e6:5.1f} MB/s  avg {hl_size:5.0f} B"
        f"  server CPU {hl_cpu:4.0%} (feed alone {idle:.0%})"
    )
    print(
        f"compressed {dz_rate:7,.0f} msg/s  {dz_rate * dz_size / 1e6:5.1f} MB/s  "
        f"avg {dz_size:5.0f} B  server CPU {dz_cpu:4.0%}  (permessage-deflate, once per message)"
    )
    print(
        f"baseline {base_rate:9,.0f} msg/s  {base_rate * base_size / 1e6:5.1f} MB/s  "
        f"avg {base_size:5.0f} B  server CPU {base_cpu:4.0%}"
    )
    print(
        f"server CPU per message sent: hlbook {fan_us:.1f} us (compressed {dz_us:.1f} us) "
        f"beyond the feed's cost, baseline {base_us:.1f} us"
    )
    print(
        f"ratio hlbook/baseline: {ratio:.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"compressed/baseline: {dz_ratio:.2f} (rounds: {', '.join(f'{r:.2f}' for r in dz_ratios)})"
        f"  target >= {TARGET}: {verdict}"
    )
    tls_pairs = [(tls, hl) for hl, _, _, _, tls in rounds if tls is not None]
    if tls_pairs:
        tls_ratios = [tls.rate / hl.rate for tls, hl in tls_pairs]
        tls_rate = statistics.median(tls.rate for tls, _ in tls_pairs)
        tls_cpu = statistics.median(tls.cpu["server"] for tls, _ in tls_pairs)
        print(
            f"tls      {tls_rate:9,.0f} msg/s  server CPU {tls_cpu:4.0%}  (wss://, plain clients, "
            f"TLS 1.3 over loopback); tls/plain hlbook: {statistics.median(tls_ratios):.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in tls_ratios)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke check")
    parser.add_argument(
        "--rounds", type=int, default=4, help="hlbook/baseline pairs; short and many beat long"
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument(
        "--subscriptions",
        type=int,
        default=21,
        help="l2Book views per client (21, the most: with 8, hlbook sent every message offered "
        "at 40%% of a core, and the ratio measured the offered load instead of hlbook)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per server")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="feed-only window")
    parser.add_argument("--blocks-per-second", type=float, default=40.0)
    parser.add_argument("--scale", type=float, default=0.35)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run each server alone on one CPU (default: on)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="also measure hlbook over wss:// (a trustme certificate) in every round",
    )
    parser.add_argument("--baseline", metavar="PAYLOAD_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        from hlbook.runner import run as run_until_signal

        sys.exit(run_until_signal(lambda: _baseline(args.baseline)))
    if args.quick:
        args.rounds, args.clients = 1, min(args.clients, 20)
        args.duration, args.warmup, args.idle_seconds = 1.0, 0.5, 0.5
    args.pin = args.pin and CORES >= 2
    raise_nofile(args.clients + 256)
    rounds = trio.run(run, args)
    report(args, rounds)


if __name__ == "__main__":
    main()
