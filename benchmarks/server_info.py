"""Benchmark: ``POST /info`` requests/s on one core, as a multiple of a minimal HTTP server.

The books are the real mainnet ones: a stand-in node (this script with
``--node``, ``tests/recorded_node.py``) answers hlbook's ``fileSnapshot`` with
the recorded BTC snapshot (51k resting orders) and then writes the slice's 51
blocks; ``hlbook serve`` follows them and is then quiet, so what is measured
is the cost of answering, not of the feed (``server_latency.py --with post``
measures requests while the feed runs at mainnet rate).

Request kinds (``--kinds``):

* ``l2Book``: ``{"type":"l2Book","coin":"BTC"}`` on the real book;
* ``openOrders``: ``{"type":"openOrders","user":U}`` for the user with the
  most resting orders near 1,000 in the real snapshot (1,048 of them;
  the answer is ≈200 KB).

For each kind, each round has two phases with the same load process
(``server_common.py load``: ``--connections`` keep-alive connections sending
back to back, a lean HTTP client that reads the length and skips the body):

1. **hlbook**, pinned alone on one CPU;
2. **baseline**: a minimal Trio HTTP server (this script with ``--baseline``)
   on the same CPU that answers every request with hlbook's own answer,
   prebuilt: the floor of a Python server doing HTTP/1.1 keep-alive.

The figure is hlbook's requests/s (and its ratio to the baseline), with the
round trip p50/p99 and both servers' CPU beside. Medians over ``--rounds``.
The load process runs on the other CPU(s): when its CPU share nears 100%
the baseline's rate is the client's, and the ratio is an upper bound.

Usage: ``python benchmarks/server_info.py [--quick] [--rounds N] [--duration S]
[--connections N] [--kinds l2Book,openOrders]``
"""

import argparse
import os
import statistics
import sys
import tempfile
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from server_common import (
    CORES,
    CpuMeter,
    LeanHttp,
    command_line,
    http_base,
    load_argv,
    parse_tagged,
    pin,
    split_cpus,
    start_child,
    start_node,
    start_server,
    summary_header,
)

ROOT = Path(__file__).resolve().parent.parent
OPEN_ORDERS_USER = "0xf0480a7892bc260658e82359f3c9374bc0a75444"
"""1,048 resting BTC orders in the recorded snapshot (the most of any user under 1,100)."""
BODIES = {
    "l2Book": {"type": "l2Book", "coin": "BTC"},
    "openOrders": {"type": "openOrders", "user": OPEN_ORDERS_USER},
}


# -- the stand-in node and the baseline server ---------------------------------------------------


async def _node(args: argparse.Namespace) -> None:
    """Serve the recorded snapshot; once it was fetched, write the slice's blocks."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures import load_mainnet
    from recorded_node import RecordedNode

    from hlbook.node.formats import Layout

    node = RecordedNode(Path(args.node_data), load_mainnet(), Layout.BY_BLOCK)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(node.serve_info)
        print(f"info server: http://127.0.0.1:{port}/info", flush=True)
        while node.snapshots_served == 0:
            await trio.sleep(0.05)
        await trio.sleep(1.0)  # the server starts following the files
        await node.replay(interval=0.07, split=False)
        print(f"replayed to height {node.height}", flush=True)
        await trio.sleep_forever()


async def _baseline(body_file: str) -> None:
    """Answer every HTTP request with the body in ``body_file``; print the URL."""
    body = Path(body_file).read_bytes()
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % len(body)
    ) + body

    async def handle(stream: trio.SocketStream) -> None:
        # A load process stopped mid-request breaks its connections: that ends only them.
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await answer_all(stream)

    async def answer_all(stream: trio.SocketStream) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
            request, buffer = buffer[:length], buffer[length:]
            orjson.loads(request)  # the least an info server does with a request
            await stream.send_all(answer)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(f"serving ws://127.0.0.1:{port}/ws", flush=True)
    await trio.serve_listeners(handle, listeners)


# -- phases ---------------------------------------------------------------------------------------


@attrs.define
class Phase:
    """What the load process measured against one server, and the CPU it cost."""

    rate: float
    p50: float
    p99: float
    size: float
    statuses: dict[str, int]
    errors: int
    server_cpu: float
    load_cpu: float
    others: float


async def _load(url: str, body: str, server_pid: int, args: argparse.Namespace) -> Phase:
    argv = load_argv(
        url,
        warmup=args.warmup,
        duration=args.duration,
        post=body,
        connections=args.connections,
    )
    async with start_child("load", argv) as load:
        meter = CpuMeter({"server": server_pid, "load": load.pid})
        await load.wait_for(r"^START ", limit=args.warmup + 30)
        meter.mark()
        line = await load.wait_for(r"^RESULT ", limit=args.duration + 30)
        cpu = meter.shares()
    result = parse_tagged(line.string)["post"]
    if not result["count"]:
        raise RuntimeError(f"no answer from {url} in {args.duration:g} s: {result}")
    return Phase(
        rate=result["rate"],
        p50=result["p50_ms"],
        p99=result["p99_ms"],
        size=result["median_bytes"],
        statuses=result["statuses"],
        errors=result["errors"],
        server_cpu=cpu["server"],
        load_cpu=cpu["load"],
        others=meter.others,
    )


Round = dict[str, tuple[Phase, Phase]]
"""Per kind: (hlbook, baseline)."""


async def run(args: argparse.Namespace) -> tuple[list[Round], dict[str, Any]]:
    """Start the stand-in node and hlbook; per round and kind, hlbook then the baseline."""
    cpus = None
    if args.pin:
        cpus = split_cpus()
        pin(os.getpid(), cpus[1])
    rounds: list[Round] = []
    notes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hlbook-info-") as tmp_name:
        tmp = Path(tmp_name)
        async with AsyncExitStack() as stack:
            node_argv = [sys.executable, __file__, "--node", "--node-data", str(tmp / "data")]
            node = await start_node(stack, tmp, [], node_argv)
            server, ws_url = await start_server(
                stack, tmp, node.info_url, ["--validate-every", "0", "--idle-timeout", "600"]
            )
            if cpus is not None:
                pin(server.pid, cpus[0])
            notes["height"] = (await node.wait_for(r"replayed to height (\d+)", 60)).group(1)
            await trio.sleep(1.0)  # the last blocks applied
            base = http_base(ws_url)
            client = LeanHttp(base)
            baselines = {}
            for kind in args.kinds:
                status, answer = await client.request("POST", "/info", orjson.dumps(BODIES[kind]))
                if status != 200:
                    raise RuntimeError(f"{kind}: {status} {answer[:200]!r}")
                notes[kind] = (len(answer), orjson.loads(answer))
                (tmp / f"{kind}.json").write_bytes(answer)
                baseline = await stack.enter_async_context(
                    start_child(
                        f"baseline-{kind}",
                        [sys.executable, __file__, "--baseline", str(tmp / f"{kind}.json")],
                    )
                )
                if cpus is not None:
                    pin(baseline.pid, cpus[0])
                url = (await baseline.wait_for(r"serving (ws://\S+)")).group(1)
                baselines[kind] = (baseline, http_base(url))
            await client.aclose()
            for _ in range(args.rounds):
                done: Round = {}
                for kind in args.kinds:
                    body = orjson.dumps(BODIES[kind]).decode()
                    mine = await _load(base, body, server.pid, args)
                    baseline, url = baselines[kind]
                    floor = await _load(url, body, baseline.pid, args)
                    done[kind] = (mine, floor)
                rounds.append(done)
            notes["errors"] = server.errors()
    return rounds, notes


def report(args: argparse.Namespace, rounds: list[Round], notes: dict[str, Any]) -> None:
    """Each round, then the summary block."""
    for index, done in enumerate(rounds, 1):
        for kind, (mine, base) in done.items():
            print(
                f"round {index} {kind}: hlbook {mine.rate:,.0f} req/s (p50 {mine.p50:.2f} ms, "
                f"p99 {mine.p99:.2f} ms, server CPU {mine.server_cpu:.0%}, load process "
                f"{mine.load_cpu:.0%}, statuses {mine.statuses}, errors {mine.errors}); "
                f"baseline {base.rate:,.0f} req/s (p50 {base.p50:.2f} ms, server CPU "
                f"{base.server_cpu:.0%}, load {base.load_cpu:.0%}); others "
                f"{mine.others:.0%}/{base.others:.0%} of a core"
            )
    for line in notes.get("errors", [])[:5]:
        print(f"server error: {line}")
    print()
    print(summary_header("server_info"))
    print(f"command: {command_line('server_info.py')}")
    pinned = ", each server pinned to its own core" if args.pin else ""
    print(
        f"setup: the real mainnet BTC book (recorded snapshot + 51 blocks, height "
        f"{notes['height']}), feed quiet; {args.connections} keep-alive connections back to "
        f"back from a load process; loopback, {CORES} cores{pinned}; {args.rounds} round(s) x "
        f"{args.duration:g} s per server; the baseline answers hlbook's bytes, prebuilt"
    )
    for kind in args.kinds:
        size, answer = notes[kind]
        what = (
            f"{len(answer)} orders"
            if kind == "openOrders"
            else f"{sum(map(len, answer['levels']))} levels"
        )
        mine_all = [done[kind][0] for done in rounds]
        base_all = [done[kind][1] for done in rounds]
        ratios = [m.rate / b.rate for m, b in zip(mine_all, base_all, strict=True)]
        med = statistics.median
        print(
            f"{kind:<10} ({size:,} B answer, {what}): hlbook {med(m.rate for m in mine_all):,.0f} "
            f"req/s at {med(m.server_cpu for m in mine_all):.0%} CPU (p50 "
            f"{med(m.p50 for m in mine_all):.2f} ms, p99 {med(m.p99 for m in mine_all):.2f} ms; "
            f"{1e6 * med(m.server_cpu / m.rate for m in mine_all):.0f} us CPU per request); "
            f"baseline {med(b.rate for b in base_all):,.0f} req/s at "
            f"{med(b.server_cpu for b in base_all):.0%} CPU (load process "
            f"{med(b.load_cpu for b in base_all):.0%}); ratio {med(ratios):.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a smoke check")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--kinds", default="l2Book,openOrders", help="comma-separated")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run each server alone on one CPU (default: on)",
    )
    internal = parser.add_argument_group("internal")
    internal.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    internal.add_argument("--node-data", help=argparse.SUPPRESS)
    internal.add_argument("--baseline", metavar="BODY_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node or args.baseline:
        from hlbook.runner import run as run_until_signal

        sys.exit(run_until_signal(lambda: _node(args) if args.node else _baseline(args.baseline)))
    args.kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = set(args.kinds) - set(BODIES)
    if unknown:
        sys.exit(f"unknown kinds: {sorted(unknown)}; known: {sorted(BODIES)}")
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.3
    args.pin = args.pin and CORES >= 2
    rounds, notes = trio.run(run, args)
    report(args, rounds, notes)


if __name__ == "__main__":
    main()
