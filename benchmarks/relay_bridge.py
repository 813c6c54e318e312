"""Benchmark: what running nats-py from Trio through the asyncio thread costs per block.

One real nats-server (JetStream, memory storage so the disk does not add noise),
and in the same run, alternating, several rounds, medians:

* **native** — nats-py in plain asyncio (``asyncio.run`` in a thread of its own,
  the Trio side idle meanwhile), no bridge;
* **bridged** — the same nats-py calls made from Trio through
  :class:`hlbook.relay.client.NatsConnection` (one bridge round trip per call),
  as the publisher and consumer make them;
* **trio-asyncio** — the alternative we did not pick: the same calls from Trio
  through ``trio_asyncio.aio_as_trio`` (asyncio loop on top of Trio's, same
  thread). Measured only when ``trio-asyncio`` is installed (it is not an
  hlbook dependency: ``pip install trio-asyncio`` to compare), and after all
  other rounds, because importing it patches asyncio for the whole process.

Operations, each per message with a mainnet-sized block frame as payload:

* ``publish+ack`` — ``js.publish`` with ``Nats-Msg-Id``, waiting for the ack;
* ``consume batch`` — a pull consumer draining the stream with ``fetch(256)``;
* ``live round trip`` — publish one message, then ``fetch(1)`` it (a caught-up
  relay: one block at a time);

and for absolute figures the whole relay path: ``Publisher.offer`` of mainnet
blocks (encoding included) until acknowledged, and ``Consumer`` iteration
(decoding included).

Run: ``python benchmarks/relay_bridge.py [--messages N] [--rounds N] [--quick]``
"""

import argparse
import asyncio
import importlib
import importlib.util
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import trio
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from server_common import command_line, summary_header

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import contextlib

from nats_support import mainnet_blocks

from hlbook.relay import (
    BlockMessage,
    Consumer,
    NatsConnection,
    NatsOptions,
    NatsServerConfig,
    Publisher,
    StreamSettings,
    encode_block,
    open_nats,
    open_nats_server,
)

STREAM, SUBJECT = "BENCH", "bench.blocks"
Op = Callable[[Client, JetStreamContext], Awaitable[Any]]


async def _reset(js: JetStreamContext) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(STREAM)
    await js.add_stream(
        name=STREAM,
        subjects=[SUBJECT],
        storage=api.StorageType.MEMORY,
        duplicate_window=120.0,
    )


async def _pull(js: JetStreamContext) -> JetStreamContext.PullSubscription:
    config = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, mem_storage=True)
    return await js.pull_subscribe(SUBJECT, stream=STREAM, config=config)


def _headers(i: int) -> dict[str, str]:
    return {"Nats-Msg-Id": str(i)}


# -- native asyncio ---------------------------------------------------------------------


async def _native(url: str, payload: bytes, n: int, live: int) -> dict[str, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    out: dict[str, float] = {}
    try:
        await _reset(js)
        start = time.perf_counter()
        for i in range(n):
            await js.publish(SUBJECT, payload, headers=_headers(i))
        out["publish+ack"] = (time.perf_counter() - start) / n
        sub = await _pull(js)
        got = 0
        start = time.perf_counter()
        while got < n:
            got += len(await sub.fetch(min(256, n - got), timeout=5))
        out["consume batch"] = (time.perf_counter() - start) / n
        start = time.perf_counter()
        for i in range(n, n + live):
            await js.publish(SUBJECT, payload, headers=_headers(i))
            await sub.fetch(1, timeout=5)
        out["live round trip"] = (time.perf_counter() - start) / live
    finally:
        await nc.close()
    return out


# -- bridged from Trio ------------------------------------------------------------------


async def _bridged(
    connection: NatsConnection, payload: bytes, n: int, live: int
) -> dict[str, float]:
    call = connection.call
    out: dict[str, float] = {}

    async def reset(_nc: Client, js: JetStreamContext) -> None:
        await _reset(js)

    await call(reset)
    start = time.perf_counter()
    for i in range(n):

        async def publish(_nc: Client, js: JetStreamContext, i: int = i) -> None:
            await js.publish(SUBJECT, payload, headers=_headers(i))

        await call(publish)
    out["publish+ack"] = (time.perf_counter() - start) / n

    async def pull(_nc: Client, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        return await _pull(js)

    sub = await call(pull)
    got = 0
    start = time.perf_counter()
    while got < n:
        want = min(256, n - got)

        async def fetch(_nc: Client, _js: JetStreamContext, want: int = want) -> int:
            return len(await sub.fetch(want, timeout=5))

        got += await call(fetch)
    out["consume batch"] = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for i in range(n, n + live):

        async def round_trip(_nc: Client, js: JetStreamContext, i: int = i) -> None:
            await js.publish(SUBJECT, payload, headers=_headers(i))

        async def fetch_one(_nc: Client, _js: JetStreamContext) -> None:
            await sub.fetch(1, timeout=5)

        await call(round_trip)
        await call(fetch_one)
    out["live round trip"] = (time.perf_counter() - start) / live
    return out


async def _trio_asyncio(url: str, payload: bytes, n: int, live: int) -> dict[str, float]:
    trio_asyncio = importlib.import_module("trio_asyncio")  # optional, untyped

    out: dict[str, float] = {}
    async with trio_asyncio.open_loop():

        async def run(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
            return await trio_asyncio.aio_as_trio(fn)(*args, **kwargs)

        nc = await run(nats.connect, url)
        js = nc.jetstream()
        try:
            await run(_reset, js)
            start = time.perf_counter()
            for i in range(n):
                await run(js.publish, SUBJECT, payload, headers=_headers(i))
            out["publish+ack"] = (time.perf_counter() - start) / n
            sub = await run(_pull, js)
            got = 0
            start = time.perf_counter()
            while got < n:
                got += len(await run(sub.fetch, min(256, n - got), timeout=5))
            out["consume batch"] = (time.perf_counter() - start) / n
            start = time.perf_counter()
            for i in range(n, n + live):
                await run(js.publish, SUBJECT, payload, headers=_headers(i))
                await run(sub.fetch, 1, timeout=5)
            out["live round trip"] = (time.perf_counter() - start) / live
        finally:
            await run(nc.close)
    return out


async def _relay_path(
    url: str, n: int, options: NatsOptions, prefix: str
) -> tuple[float, float, float]:
    """Publisher.offer → acked, then Consumer iteration: seconds per block, and bytes/block."""
    from hlbook.relay import RelayNames

    blocks = list(mainnet_blocks())
    blocks = [blocks[i % len(blocks)] for i in range(n)]
    names = RelayNames(prefix)
    async with open_nats(options) as connection, trio.open_nursery() as nursery:
        await connection.wait_connected()
        publisher = Publisher(
            connection,
            names,
            # A memory stream reserves its max_bytes: keep it small, rounds add up.
            settings=StreamSettings(memory=True, max_bytes=256 * 1024 * 1024),
            start_height=0,
        )
        await nursery.start(publisher.run)
        base = 10**9 * (1 + len(prefix))
        import attrs

        renumbered = [attrs.evolve(b, height=base + i) for i, b in enumerate(blocks)]
        publisher.put_snapshot(base - 1, b"[%d,[]]" % (base - 1))
        publisher.reset_chain(base - 1)
        await publisher.flush_snapshots()
        start = time.perf_counter()
        for block in renumbered:
            publisher.offer(block)
            await trio.sleep(0)
        await publisher.flush()
        publish = (time.perf_counter() - start) / n
        size = publisher.stats.published_bytes / n
        consumer = Consumer(connection, names, fetch_wait=1.0)
        seen = 0
        start = 0.0
        async for event in consumer:
            if not start:
                start = time.perf_counter()  # after the bootstrap
                continue
            if isinstance(event, BlockMessage):
                seen += 1
                if seen == n:
                    break
        consume = (time.perf_counter() - start) / n
        nursery.cancel_scope.cancel()
    return publish, consume, size


async def main_async(args: argparse.Namespace) -> list[str]:
    payload = encode_block(mainnet_blocks()[0])
    print(
        f"payload: a mainnet block frame of {len(payload)} bytes; {args.messages} messages, "
        f"{args.live} live round trips, {args.rounds} rounds"
    )
    native: dict[str, list[float]] = {}
    bridged: dict[str, list[float]] = {}
    other: dict[str, list[float]] = {}
    with_trio_asyncio = importlib.util.find_spec("trio_asyncio") is not None
    async with open_nats_server(NatsServerConfig()) as server:
        options = NatsOptions(servers=(server.url,))
        async with open_nats(options) as connection:
            await connection.wait_connected()
            for round_ in range(args.rounds):
                got = await trio.to_thread.run_sync(
                    asyncio.run, _native(server.url, payload, args.messages, args.live)
                )
                for key, value in got.items():
                    native.setdefault(key, []).append(value)
                got = await _bridged(connection, payload, args.messages, args.live)
                for key, value in got.items():
                    bridged.setdefault(key, []).append(value)
                print(f"  round {round_ + 1} done")
        # trio-asyncio patches asyncio process-wide once imported (we measured native asyncio
        # slowing down in the rounds after it): its rounds come last, after everything else.
        paths = [
            await _relay_path(server.url, args.relay_blocks, options, f"bench{r}")
            for r in range(args.rounds)
        ]
        for _ in range(args.rounds if with_trio_asyncio else 0):
            got = await _trio_asyncio(server.url, payload, args.messages, args.live)
            for key, value in got.items():
                other.setdefault(key, []).append(value)
    head = (
        f"\n  {'operation':<16} {'native µs':>10} {'bridged µs':>11} {'ratio':>7} {'bridge µs':>10}"
    )
    if other:
        head += f" {'trio-asyncio µs':>16} {'ratio':>7}"
    print(head)
    lines = []
    for key in native:
        a = statistics.median(native[key]) * 1e6
        b = statistics.median(bridged[key]) * 1e6
        line = f"  {key:<16} {a:10.1f} {b:11.1f} {b / a:6.2f}x {b - a:10.1f}"
        if other:
            c = statistics.median(other[key]) * 1e6
            line += f" {c:16.1f} {c / a:6.2f}x"
        print(line)
        lines.append(line.strip())
    publish = statistics.median(p[0] for p in paths) * 1e6
    consume = statistics.median(p[1] for p in paths) * 1e6
    size = statistics.median(p[2] for p in paths)
    line = (
        f"relay path, mainnet blocks ({size / 1e3:.1f} KB frames): Publisher.offer→ack "
        f"{publish:.0f} µs/block, Consumer (fetch+decode) {consume:.0f} µs/block"
    )
    print("\n  " + line)
    lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--live", type=int, default=300)
    parser.add_argument("--relay-blocks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--verbose", action="store_true", help="log hlbook.relay at INFO")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.live, args.relay_blocks, args.rounds = 100, 20, 30, 1
    logging.basicConfig(level=logging.ERROR if not args.verbose else logging.INFO)
    lines = trio.run(main_async, args)
    print()
    print(summary_header("relay_bridge"))
    print(command_line("relay_bridge.py"))
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
