"""Benchmark: hlbook's memory with 1000 WebSocket clients, and whether it stays flat.

``hlbook simulate`` feeds ``hlbook serve --port 0`` (default 14 blocks/s at
scale 0.2, the demo's load). The server's resident set size
(``/proc/<pid>/statm``) is sampled

1. with the feed running and no client (``before``; its drift too),
2. once 1000 clients in another process (``server_common.py clients``) have
   connected and each subscribed to ``l2Book`` + ``bbo`` + ``trades`` of one
   coin (coins spread evenly), and a few seconds of messages have flowed
   (``after``): ``(after - before) / 1000`` is the cost of a client,
3. every second while they stay connected and keep reading (``--hold``
   seconds): first, last, min, max and the least-squares slope,
4. a few seconds after they all disconnected.

With ``--metrics``, the hold is followed (clients still connected) by
``--metrics-windows`` windows of ``--metrics-window`` seconds, alternately
without and with a ``GET /metrics`` scrape every second from this process:
each scrape's time (request to last byte) and size, and the server's CPU
share in the windows without and with scraping (medians over the windows).

Usage: ``python benchmarks/server_memory.py [--quick] [--clients N] [--hold S] [--metrics]``
"""

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from server_common import (
    CORES,
    CpuMeter,
    LeanHttp,
    clients_argv,
    command_line,
    health,
    http_base,
    parse_tagged,
    percentile,
    raise_nofile,
    rss_bytes,
    slope_per_minute,
    start_child,
    start_node_and_server,
    summary_header,
)

SIM_COINS = ("BTC", "ETH", "SOL", "PURR/USDC", "@1", "@107", "xyz:XYZ100")
MB = 1024 * 1024


def requests() -> list[list[str]]:
    """Per coin: l2Book + bbo + trades (client ``i`` takes coin ``i % 7``)."""
    return [
        [
            orjson.dumps(
                {"method": "subscribe", "subscription": {"type": kind, "coin": coin}}
            ).decode()
            for kind in ("l2Book", "bbo", "trades")
        ]
        for coin in SIM_COINS
    ]


@attrs.define
class Samples:
    """RSS samples ``(seconds since the phase began, bytes)``."""

    points: list[tuple[float, int]] = attrs.field(factory=list)

    async def record(self, pid: int, seconds: float, every: float) -> None:
        """Sample ``pid``'s RSS every ``every`` seconds for ``seconds``."""
        start = time.monotonic()
        while True:
            now = time.monotonic() - start
            self.points.append((now, rss_bytes(pid)))
            if now >= seconds:
                return
            await trio.sleep(min(every, seconds - now))

    @property
    def values(self) -> list[int]:
        """The RSS values only."""
        return [value for _, value in self.points]

    def slope(self) -> float:
        """Bytes per minute."""
        return slope_per_minute([(t, float(v)) for t, v in self.points])


@attrs.define
class Result:
    """Everything the report needs."""

    before: Samples
    held: Samples
    gap: float
    """Seconds between the last feed-only sample and ``after_connect``."""
    after_connect: int
    after_disconnect: int
    ready: dict[str, Any]
    health0: dict[str, Any]
    health1: dict[str, Any]
    cpu: dict[str, float]
    others: float
    errors: list[str]
    scrapes: "Scrapes | None" = None


@attrs.define
class Scrapes:
    """``--metrics``: scrape times and sizes, server CPU per window without/with scraping."""

    times: list[float] = attrs.field(factory=list)
    """Milliseconds from sending the request to the last byte of the answer."""
    sizes: list[int] = attrs.field(factory=list)
    without: list[float] = attrs.field(factory=list)
    with_: list[float] = attrs.field(factory=list)
    others: list[float] = attrs.field(factory=list)
    statuses: set[int] = attrs.field(factory=set)


async def measure_scrapes(args: argparse.Namespace, url: str, pid: int) -> Scrapes:
    """Alternate windows without and with a ``/metrics`` scrape every second."""
    result = Scrapes()
    client = LeanHttp(http_base(url))
    try:
        for window in range(args.metrics_windows):
            scraping = window % 2 == 1
            meter = CpuMeter({"server": pid})
            meter.mark()
            end = time.monotonic() + args.metrics_window
            while (now := time.monotonic()) < end:
                if scraping:
                    started = time.perf_counter()
                    status, body = await client.request("GET", "/metrics")
                    result.times.append((time.perf_counter() - started) * 1000)
                    result.sizes.append(len(body))
                    result.statuses.add(status)
                await trio.sleep(max(0.0, min(1.0, end - now) - (time.monotonic() - now)))
            (result.with_ if scraping else result.without).append(meter.shares()["server"])
            result.others.append(meter.others)
    finally:
        await client.aclose()
    return result


async def run(args: argparse.Namespace) -> Result:
    """Start node and server, measure, connect the clients, hold, disconnect."""
    with tempfile.TemporaryDirectory(prefix="hlbook-memory-") as tmp_name:
        tmp = Path(tmp_name)
        async with AsyncExitStack() as stack:
            sim_args = [
                "--blocks-per-second", str(args.blocks_per_second),
                "--scale", str(args.scale),
                "--seed", "11",
                "--log-level", "warning",
            ]  # fmt: skip
            serve_args = [
                "--validate-every", "0",
                "--idle-timeout", "600",
                "--max-connections", str(args.clients + 100),
            ]  # fmt: skip
            _node, server, url = await start_node_and_server(stack, tmp, sim_args, serve_args)
            await trio.sleep(args.settle)
            before = Samples()
            await before.record(server.pid, args.baseline_seconds, 0.5)
            before_end = time.monotonic()
            argv = clients_argv(
                url,
                args.clients,
                requests(),
                warmup=args.warmup,
                duration=args.hold + 600,  # stopped by SIGINT once the samples are taken
                read_pause=0.1,  # cheap clients: ~10 reads/s each is plenty here
            )
            held = Samples()
            async with start_child("clients", argv) as clients:
                ready = parse_tagged((await clients.wait_for(r"^READY ", limit=120)).string)
                await clients.wait_for(r"^START ", limit=args.warmup + 30)
                after_connect = rss_bytes(server.pid)
                gap = time.monotonic() - before_end
                meter = CpuMeter({"server": server.pid, "clients": clients.pid})
                meter.mark()
                health0 = await health(url)
                await held.record(server.pid, args.hold, 1.0)
                health1 = await health(url)
                cpu = meter.shares()
                scrapes = await measure_scrapes(args, url, server.pid) if args.metrics else None
            await trio.sleep(min(args.settle, 2.0))  # the server notices the disconnects
            after_disconnect = rss_bytes(server.pid)
            errors = server.errors()
    return Result(
        before=before,
        held=held,
        gap=gap,
        after_connect=after_connect,
        after_disconnect=after_disconnect,
        ready=ready,
        health0=health0,
        health1=health1,
        cpu=cpu,
        others=meter.others,
        errors=errors,
        scrapes=scrapes,
    )


def report(args: argparse.Namespace, result: Result) -> None:
    """Details, then the summary block."""
    before = result.before.values[-1]
    drift = result.before.slope()  # bytes per minute with the feed alone
    held = result.held.values
    connected = max(result.ready["connected"], 1)
    per_client = (result.after_connect - before) / connected
    # The feed alone grows the heap for a while (hlbook's bounded number caches fill up):
    # take that growth out, extrapolated linearly over the connect time.
    net = (result.after_connect - before - drift * result.gap / 60) / connected
    h0, h1 = result.health0, result.health1
    span = h1["uptime_s"] - h0["uptime_s"]
    offered = (h1["fanout"]["messages_queued"] - h0["fanout"]["messages_queued"]) / span
    sent = (h1["connections"]["messages_sent"] - h0["connections"]["messages_sent"]) / span
    sent_bytes = (h1["connections"]["bytes_sent"] - h0["connections"]["bytes_sent"]) / span
    failed = result.ready["failed"]
    why = f" ({result.ready['first_error']})" if failed else ""
    print(
        f"feed only: RSS {before / MB:.1f} MB at the end of {len(result.before.points)} samples, "
        f"drift {drift / MB:+.2f} MB/min"
    )
    print(
        f"clients: {result.ready['connected']} connected and subscribed in "
        f"{result.ready['seconds']:.1f} s, {failed} failed{why}; server health while held: "
        f"{h1['clients']} clients, {h1['subscriptions']} distinct subscriptions, "
        f"{h1['queued_messages']} messages queued, "
        f"{len(h1['connections']['recent_lag_disconnects'])} lag disconnects"
    )
    print(
        f"while held: {offered:,.0f} msg/s offered to client queues, {sent:,.0f}/s sent "
        f"({max(0.0, 1 - sent / max(offered, 1)):.0%} conflated away), "
        f"{sent_bytes / 1e6:.1f} MB/s; server CPU {result.cpu['server']:.0%}, client process "
        f"{result.cpu['clients']:.0%}, other processes {result.others:.0%} of a core"
    )
    step = max(1, len(held) // 12)
    print("RSS while held (MB): " + " ".join(f"{value / MB:.1f}" for value in held[::step]))
    for line in result.errors[:5]:
        print(f"server error: {line}")
    print()
    print(summary_header("server_memory"))
    print(f"command: {command_line('server_memory.py')}")
    print(
        f"setup: feed {args.blocks_per_second:g} blocks/s at scale {args.scale:g}; "
        f"{args.clients} clients in another process, each on l2Book + bbo + trades of one of "
        f"{len(SIM_COINS)} coins, reading continuously; loopback, {CORES} cores"
    )
    print(
        f"server RSS {before / MB:.1f} MB before clients -> {result.after_connect / MB:.1f} MB "
        f"with {result.ready['connected']}: {per_client / 1024:.1f} KB per client "
        f"({net / 1024:.1f} KB net of the feed's own drift of {drift / MB:+.1f} MB/min)"
    )
    print(
        f"held {args.hold:g} s: first {held[0] / MB:.1f}  last {held[-1] / MB:.1f}  "
        f"min {min(held) / MB:.1f}  max {max(held) / MB:.1f} MB  "
        f"(slope {result.held.slope() / MB:+.2f} MB/min; feed alone before: {drift / MB:+.2f})"
    )
    print(
        f"after all disconnected: {result.after_disconnect / MB:.1f} MB; while held the server "
        f"sent {sent:,.0f} of {offered:,.0f} offered msg/s at {result.cpu['server']:.0%} CPU"
    )
    scrapes = result.scrapes
    if scrapes is not None and scrapes.times:
        off, on = statistics.median(scrapes.without), statistics.median(scrapes.with_)
        windows = ", ".join(
            f"{'with' if i % 2 else 'without'} {share:.0%}"
            for i, share in enumerate(
                value
                for pair in zip(scrapes.without, scrapes.with_, strict=False)
                for value in pair
            )
        )
        print(
            f"/metrics at {result.ready['connected']} clients: {len(scrapes.times)} scrapes, "
            f"p50 {percentile(scrapes.times, 50):.1f} ms  p99 {percentile(scrapes.times, 99):.1f} "
            f"ms  max {max(scrapes.times):.1f} ms; {percentile(scrapes.sizes, 50) / 1024:.1f} KB "
            f"(statuses {sorted(scrapes.statuses)})"
        )
        print(
            f"server CPU without scraping {off:.1%}, with a scrape every second {on:.1%} "
            f"({on / off:.2f}x; medians of {len(scrapes.without)}/{len(scrapes.with_)} windows of "
            f"{args.metrics_window:g} s: {windows}; others "
            f"{statistics.median(scrapes.others):.0%} of a core)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke check")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=40.0, help="seconds the clients stay")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds of feed before measuring anything"
    )
    parser.add_argument("--baseline-seconds", type=float, default=8.0)
    parser.add_argument("--blocks-per-second", type=float, default=14.0)
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="after the hold: /metrics scrape time and size, server CPU without/with scraping",
    )
    parser.add_argument("--metrics-window", type=float, default=10.0, help="seconds per window")
    parser.add_argument(
        "--metrics-windows", type=int, default=6, help="windows, alternately without and with"
    )
    args = parser.parse_args()
    if args.quick:
        args.clients = min(args.clients, 100)
        args.hold, args.warmup, args.settle, args.baseline_seconds = 1.5, 0.5, 0.5, 1.0
        args.metrics_window, args.metrics_windows = 1.5, 2
    limit = raise_nofile(args.clients + 256)
    if limit < args.clients + 64:
        sys.exit(f"open-file limit {limit} is too low for {args.clients} clients")
    result = trio.run(run, args)
    report(args, result)


if __name__ == "__main__":
    main()
