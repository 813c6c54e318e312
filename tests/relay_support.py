"""Helpers for the relay end-to-end tests: a simulated node, primaries, a nats-server, relays.

Everything is real: the simulator writes node files in real time, primaries
(``hlbook.serve`` with ``publish``) publish to a real ``nats-server`` and
relays (``hlbook.serve`` with ``source``) serve from it, each on its own
loopback port.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio
from server_support import server_config

import hlbook
from hlbook.node.formats import encode

if TYPE_CHECKING:
    from hlbook.relay import NatsServer
    from hlbook.sim import SimHandle


def sim_settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "node_data": tmp_path / "data",
        "info_port": 0,
        "scale": 0.05,
        "blocks_per_second": 20.0,
        "seed": 7,
    }
    settings.update(overrides)
    return settings


@asynccontextmanager
async def simulator(tmp_path: Path, **overrides: Any) -> AsyncIterator["SimHandle"]:
    from hlbook.sim import SimConfig, run_simulator

    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_simulator, SimConfig(**sim_settings(tmp_path, **overrides)))
        yield node
        nursery.cancel_scope.cancel()


@attrs.define
class Running:
    """A server started in its own cancel scope, so a test can stop ("kill") it alone."""

    handle: hlbook.ServerHandle
    scope: trio.CancelScope

    def stop(self) -> None:
        self.scope.cancel()


async def start_server(
    nursery: trio.Nursery, config: hlbook.Config, *, ready: bool = True
) -> Running:
    """Start ``hlbook.serve`` in a cancel scope of its own inside ``nursery``."""

    async def run(*, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                handle = await inner.start(hlbook.serve, config)
                task_status.started(Running(handle, scope))

    running: Running = await nursery.start(run)
    if ready:
        with trio.fail_after(30):
            await running.handle.wait_ready()
    return running


def primary_config(
    tmp_path: Path, node: "SimHandle", nats: "NatsServer", name: str = "primary", **overrides: Any
) -> hlbook.Config:
    settings: dict[str, Any] = {
        "publish": (nats.url,),
        "publish_snapshot_every": 60.0,
        "snapshot_path": tmp_path / name / "snapshot.json",
        "history": "none",
    }
    settings.update(overrides)
    return server_config(tmp_path, node.info_url, **settings)


def relay_config(
    tmp_path: Path, nats: "NatsServer", name: str = "relay", **overrides: Any
) -> hlbook.Config:
    settings: dict[str, Any] = {
        "source": (nats.url,),
        "port": 0,
        "validate_every": 0,
        "snapshot_path": tmp_path / name / "snapshot.json",
        "history": "none",
        "node_data": tmp_path / name,
    }
    settings.update(overrides)
    return hlbook.Config(**settings)


async def at_height(handle: hlbook.ServerHandle, height: int, limit: float = 20.0) -> None:
    """Wait until ``handle``'s books are exactly at ``height``, diffs and statuses, and live."""
    with trio.fail_after(limit):
        while True:
            books = handle.books
            if (
                books is not None
                and books.height == height
                and books.details_height == height
                and handle.health()["status"] == "live"
            ):
                return
            await trio.sleep(0.02)


async def settle_all(node: "SimHandle", *handles: hlbook.ServerHandle) -> int:
    """Pause the node; wait until every server has applied all it wrote. Returns the height."""
    node.pause()
    height = await node.wait_idle()
    for handle in handles:
        await at_height(handle, height)
    return height


def book_bytes(handle: hlbook.ServerHandle) -> dict[str, bytes]:
    """Every coin's book, every order with every field, as bytes (exact comparison)."""
    books = handle.books
    assert books is not None
    return {coin: encode([list(bids), list(asks)]) for coin, bids, asks in sorted(books.snapshot())}


def same_books(a: hlbook.ServerHandle, b: hlbook.ServerHandle) -> list[str]:
    """Coins whose books differ (both must be at one height)."""
    assert a.books is not None
    assert b.books is not None
    assert a.books.height == b.books.height
    mine, theirs = book_bytes(a), book_bytes(b)
    return sorted(
        coin for coin in mine.keys() | theirs.keys() if mine.get(coin) != theirs.get(coin)
    )


def same_as_node(handle: hlbook.ServerHandle, node: "SimHandle") -> list[str]:
    """Coins whose (oid, px, sz) lists differ from the simulator's own book."""
    from server_support import same_books as sim_same

    return sim_same(handle, node)
