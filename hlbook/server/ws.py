"""WebSocket connections (trio-websocket): one reader and one writer task per client.

The reader answers requests and enforces the idle timeout; the writer
(:mod:`hlbook.server.writer`) moves the client's queued messages to its
socket. Either ending (disconnect, idle, lag policy, garbage) ends both, for
that client only. On shutdown each client gets close code 1001 within a
bounded time.
"""

import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from hlbook.book.books import Books
from hlbook.server.fanout import ClientQueue, Hub
from hlbook.server.protocol import (
    Health,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    already,
    dumps,
    error_message,
    invalid_subscription,
    parse_request,
    pong_message,
    subscription_response,
    too_many,
)
from hlbook.server.writer import Flusher, Writer

__all__ = ["ConnectionLimits", "Connections"]

log = logging.getLogger("hlbook.server")

_CLOSE_TIMEOUT = 2.0
_HANDSHAKE_TIMEOUT = 10.0
WS_PATHS = ("/ws", "/")


@attrs.frozen
class ConnectionLimits:
    """Per-connection limits (from :class:`~hlbook.config.Config`)."""

    idle_timeout: float
    max_message_size: int
    max_connections: int
    max_subscriptions: int
    queue_messages: int
    queue_bytes: int


class Connections:
    """Accepts WebSocket clients and runs them against the hub."""

    def __init__(
        self,
        hub: Hub,
        limits: ConnectionLimits,
        books: Callable[[], Books | None],
        ready: Callable[[], trio.Event],
        health: Callable[[], dict[str, Any]],
    ) -> None:
        self.hub = hub
        self.limits = limits
        self._books = books
        self._ready = ready
        self._health = health
        self.active: set[ClientQueue] = set()
        self.accepted = 0
        self.rejected = 0
        self.closed_idle = 0
        self.protocol_errors = 0
        self.sent_messages = 0
        self.sent_bytes = 0
        self.flusher = Flusher()
        """Run :meth:`Flusher.run` alongside the server (``serve`` does)."""

    def _count_sent(self, messages: int, size: int) -> None:
        self.sent_messages += messages
        self.sent_bytes += size

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """``trio.serve_tcp`` handler: one call per incoming TCP connection."""
        try:
            async with trio.open_nursery() as nursery:  # trio-websocket's reader task
                with trio.move_on_after(_HANDSHAKE_TIMEOUT) as handshake:
                    request = await wrap_server_stream(
                        nursery, stream, max_message_size=self.limits.max_message_size
                    )
                if not handshake.cancelled_caught:
                    await self._handle(request, stream)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _handle(self, request: WebSocketRequest, stream: trio.SocketStream) -> None:
        path = request.path.split("?", 1)[0]
        if path not in WS_PATHS:
            self.rejected += 1
            await request.reject(404, body=b"hlbook serves WebSocket at /ws\n")
            return
        if len(self.active) >= self.limits.max_connections:
            self.rejected += 1
            await request.reject(503, body=b"too many connections\n")
            return
        ws = await request.accept()
        closing = trio.Event()
        client = ClientQueue(
            max_messages=self.limits.queue_messages, max_bytes=self.limits.queue_bytes
        )
        writer = Writer(ws, stream, client, on_sent=self._count_sent)
        client.wake = lambda: self.flusher.mark(writer)

        def on_close() -> None:
            closing.set()
            writer.waker.set()

        client.on_close = on_close
        self.active.add(client)
        self.accepted += 1
        peer = _peer(stream)
        log.debug("client %d connected from %s", client.id, peer)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, ws, client)
                nursery.start_soon(writer.run)
                await closing.wait()
                # Stop reading; let the writer finish the frame it is on (bounded).
                with trio.move_on_after(_CLOSE_TIMEOUT):
                    await writer.done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.hub.drop(client)
            self.active.discard(client)
            self.flusher.forget(writer)
            code, reason = client.close_reason or (1001, "server shutting down")
            logger = log.warning if client.stats.disconnected_for_lag else log.debug
            logger("client %d (%s) closed: %d %s", client.id, peer, code, reason or "")
            with trio.CancelScope(shield=True):
                if writer.mid_frame:
                    # A frame was cut off: nothing more may be written. Drop the connection.
                    await stream.aclose()
                else:
                    with trio.move_on_after(_CLOSE_TIMEOUT):
                        await ws.aclose(code, reason)

    async def _read(self, ws: WebSocketConnection, client: ClientQueue) -> None:
        code, reason = await self._reader(ws, client)
        client.close(code, reason)

    async def _reader(self, ws: WebSocketConnection, client: ClientQueue) -> tuple[int, str]:
        idle = self.limits.idle_timeout
        while True:
            message: str | bytes | None = None
            with trio.move_on_after(idle):
                try:
                    message = await ws.get_message()
                except ConnectionClosed:
                    return (1000, "")
            if message is None:
                self.closed_idle += 1
                return (1000, f"idle timeout: nothing received for {idle:g} s")
            reply = await self._answer(client, message)
            for text in reply:
                if not client.put(text):
                    self.hub.disconnect_slow(client, "replies not read")
                    assert client.close_reason is not None
                    return client.close_reason

    async def _answer(self, client: ClientQueue, message: str | bytes) -> list[str]:
        request = parse_request(message)
        if isinstance(request, Ping):
            return [pong_message()]
        if isinstance(request, Health):
            return [dumps({"channel": "health", "data": self._health()})]
        if isinstance(request, ProtocolError):
            self.protocol_errors += 1
            return [error_message(request.text)]
        # Subscriptions need the books: wait for the first snapshot if still loading.
        await self._ready().wait()
        books = self._books()
        assert books is not None
        sub = request.subscription
        if isinstance(request, Unsubscribe):
            if sub not in client.subscriptions:
                return [error_message(already(False, request.echo))]
            self.hub.unsubscribe(client, sub)
            return [subscription_response("unsubscribe", request.echo)]
        assert isinstance(request, Subscribe)
        if sub.coin not in books:
            self.protocol_errors += 1
            return [error_message(invalid_subscription(request.echo))]
        if sub in client.subscriptions:
            return [error_message(already(True, request.echo))]
        if len(client.subscriptions) >= self.limits.max_subscriptions:
            return [error_message(too_many(self.limits.max_subscriptions))]
        snapshot = self.hub.subscribe(client, sub, books, request.echo)
        replies = [subscription_response("subscribe", request.echo)]
        if snapshot is not None:
            replies.append(snapshot)
        return replies

    def queued(self) -> int:
        """Messages waiting in all client queues."""
        return sum(len(client) for client in self.active)


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"
