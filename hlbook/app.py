"""``hlbook.serve``: the whole server in one nursery, startable from any Trio program.

::

    async with trio.open_nursery() as nursery:
        handle = await nursery.start(hlbook.serve, hlbook.Config(node_data=..., port=0))
        print(handle.url)             # clients can connect now
        await handle.wait_ready()     # books loaded from the first snapshot
        async with handle.feed() as updates:
            async for update in updates:
                ...

The library never calls ``trio.run``, installs signal handlers or configures
logging; cancel the nursery to stop it.
"""

import time
from typing import Any

import attrs
import trio

from hlbook.book.books import Books
from hlbook.config import Config
from hlbook.feed import Feed, FeedSink
from hlbook.listen import open_listeners
from hlbook.server.fanout import Hub
from hlbook.server.ws import ConnectionLimits, Connections
from hlbook.shell.ingest import DataPath
from hlbook.stages import Sinks
from hlbook.supervisor import Status

__all__ = ["ServerHandle", "serve"]


class ServerHandle:
    """What :func:`serve` hands back once clients can connect."""

    def __init__(
        self,
        config: Config,
        host: str,
        port: int,
        data_path: DataPath,
        hub: Hub,
        feeds: set[Feed],
        connections: Connections,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        """The bound WebSocket port (useful with ``Config(port=0)``)."""
        self._data_path = data_path
        self._hub = hub
        self._feeds = feeds
        self._connections = connections

    @property
    def url(self) -> str:
        """``ws://host:port/ws``."""
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def books(self) -> Books | None:
        """The live books (``None`` until the first snapshot is loaded).

        ``books.height`` is the last block whose diffs are applied and
        ``books.details_height`` the last whose statuses are (see
        :meth:`~hlbook.book.books.Books.details_ready`)."""
        return self._data_path.books

    @property
    def hub(self) -> Hub:
        """Subscriptions and fan-out counters."""
        return self._hub

    async def wait_ready(self) -> None:
        """Return once books are loaded and blocks are being applied."""
        await self._data_path.ready.wait()

    async def wait_for_height(self, height: int) -> None:
        """Return once the books have applied block ``height``'s diffs (or a later block's)."""
        await self._data_path.wait_for_height(height)

    async def wait_for_details(self, height: int) -> None:
        """Return once block ``height``'s statuses are attached to the books (or later)."""
        await self._data_path.wait_for_details(height)

    def feed(self, max_buffer: int = 1000) -> Feed:
        """A new in-process feed of per-block updates (see :mod:`hlbook.feed`)."""
        return Feed(self._feeds, max_buffer)

    def health(self) -> dict[str, Any]:
        """Whether the feed is live, its height and lag, clients served, and counters."""
        path, books = self._data_path, self._data_path.books
        connections, hub = self._connections, self._hub
        now = time.time()
        block_time = books.time if books is not None and books.time else None
        status = path.status
        return {
            "status": status.value,
            "detail": path.detail,
            "live": status is Status.LIVE,
            "uptime_s": round(time.monotonic() - path.started_at, 3),
            "layout": path.layout.value if path.layout else None,
            "height": books.height if books is not None else None,
            "details_height": books.details_height if books is not None else None,
            "block_time": block_time,
            "lag_ms": int(now * 1000) - block_time if block_time else None,
            "last_block_age_s": (
                round(now - path.last_block_wall, 3) if path.last_block_wall else None
            ),
            "coins": len(books.coins()) if books is not None else 0,
            "orders": len(books) if books is not None else 0,
            "clients": len(connections.active),
            "subscriptions": hub.subscription_count,
            "queued_messages": connections.queued(),
            "connections": {
                "accepted": connections.accepted,
                "rejected": connections.rejected,
                "closed_idle": connections.closed_idle,
                "protocol_errors": connections.protocol_errors,
                "client_errors": connections.client_errors,
                "messages_sent": connections.sent_messages,
                "bytes_sent": connections.sent_bytes,
                "recent_lag_disconnects": list(hub.recent_disconnects),
            },
            "fanout": _asdict(hub.stats),
            "pipeline": _asdict(path.stats),
            "joiner": path.joiner_stats(),
            "streams": {
                stream.value: _asdict(tailer.stats) for stream, tailer in path.tailers.items()
            },
        }

    def client_stats(self) -> list[dict[str, Any]]:
        """Per-client counters: queued, sent, conflated, resnapshots, lag disconnects."""
        return [
            {
                "id": client.id,
                "subscriptions": len(client.subscriptions),
                "queued": len(client),
                "queued_bytes": client.queued_bytes,
                **_asdict(client.stats),
            }
            for client in self._connections.active
        ]


def _asdict(value: Any) -> dict[str, Any]:
    result: dict[str, Any] = attrs.asdict(value)
    return result


async def serve(
    config: Config, *, task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run hlbook until cancelled. Use as ``handle = await nursery.start(serve, config)``.

    ``task_status.started`` is called with a :class:`ServerHandle` once the
    WebSocket port accepts connections; books load in the background
    (:meth:`ServerHandle.wait_ready`).
    """
    hub = Hub()
    feeds: set[Feed] = set()
    data_path = DataPath(config, Sinks(hub, FeedSink(feeds)))
    limits = ConnectionLimits(
        idle_timeout=config.idle_timeout,
        max_message_size=config.max_message_size,
        max_connections=config.max_connections,
        max_subscriptions=config.max_subscriptions,
        queue_messages=config.client_queue_messages,
        queue_bytes=config.client_queue_bytes,
    )
    handle_box: list[ServerHandle] = []
    connections = Connections(
        hub,
        limits,
        books=lambda: data_path.books,
        ready=lambda: data_path.ready,
        health=lambda: handle_box[0].health(),
    )
    # Opened before the nursery, so that a taken port is a plain StartupError
    # raised by ``nursery.start(serve, ...)``, not one wrapped in a group.
    listeners = await open_listeners(config.host, config.port, "hlbook")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, connections.handle_stream, listeners)
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(connections.flusher.run)
            handle = ServerHandle(config, config.host, port, data_path, hub, feeds, connections)
            handle_box.append(handle)
            nursery.start_soon(data_path.run)
            task_status.started(handle)
    finally:
        # Consumers iterating a feed elsewhere see it end rather than wait forever.
        for feed in list(feeds):
            feed.close()
