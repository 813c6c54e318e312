"""WebSocket connections (trio-websocket): one reader and one writer task per client.

The reader answers requests and enforces the idle timeout; the writer
(:mod:`hlbook.server.writer`) moves the client's queued messages to its
socket. Either ending (disconnect, idle, lag policy, garbage) ends both, for
that client only. On shutdown each client gets close code 1001 within a
bounded time.
"""

import logging
import math
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
    Request,
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
_REPLY_ALLOWANCE = 64
"""Replies a client may have queued beyond ``--client-queue`` (see ``ClientQueue.put``)."""
WS_PATHS = ("/ws", "/")


class _Received(trio.abc.Stream):
    """A client's TCP stream that notes when the client last sent anything.

    trio-websocket answers WebSocket-level pings itself and never shows them
    to us; reading through this stream lets them count as activity for the
    idle timeout, so a client library's keepalive keeps its connection.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.last = trio.current_time()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.stream.receive_some(max_bytes)
        self.last = trio.current_time()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


@attrs.define
class _Deferred:
    """A client's subscription requests that wait for the books (in order), and the
    reader's current wait, which must not time the client out meanwhile."""

    requests: list[Subscribe | Unsubscribe] = attrs.Factory(list)
    wait: trio.CancelScope | None = None
    answered_at: float = -math.inf
    """When the last of them was answered: idleness counts from then at the earliest."""


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
        self._slots = 0  # connections accepted or being accepted (bounded by max_connections)
        self.accepted = 0
        self.rejected = 0
        self.closed_idle = 0
        self.protocol_errors = 0
        self.client_errors = 0
        self.sent_messages = 0
        self.sent_bytes = 0
        self.flusher = Flusher()
        """Run :meth:`Flusher.run` alongside the server (``serve`` does)."""

    def _count_sent(self, messages: int, size: int) -> None:
        self.sent_messages += messages
        self.sent_bytes += size

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """``trio.serve_tcp`` handler: one call per incoming TCP connection.

        Whatever happens to one connection stays with it: a client that resets
        mid-handshake, or a bug met serving it, is logged and the server goes on.
        """
        received = _Received(stream)
        peer = _peer(stream)  # now: once the socket is closed it has no peer name
        try:
            async with trio.open_nursery() as nursery:  # trio-websocket's reader task
                with trio.move_on_after(_HANDSHAKE_TIMEOUT) as handshake:
                    request = await wrap_server_stream(
                        nursery,
                        received,
                        max_message_size=self.limits.max_message_size,
                    )
                if not handshake.cancelled_caught:
                    await self._handle(request, stream, received)
                nursery.cancel_scope.cancel()
        except* (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as lost:
            log.debug("%s: connection lost: %r", peer, lost.exceptions[0])
        except* Exception:
            # A bug, not the client's doing: counted in health so that it is seen.
            self.client_errors += 1
            log.exception("%s: error serving this client (others are unaffected)", peer)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _handle(
        self, request: WebSocketRequest, stream: trio.SocketStream, received: _Received
    ) -> None:
        path = request.path.split("?", 1)[0]
        if path not in WS_PATHS:
            self.rejected += 1
            await request.reject(404, body=b"hlbook serves WebSocket at /ws\n")
            return
        if self._slots >= self.limits.max_connections:
            self.rejected += 1
            await request.reject(503, body=b"too many connections\n")
            return
        # Taken before the handshake's await, so simultaneous connects cannot overshoot.
        self._slots += 1
        try:
            ws = await request.accept()
            await self._run_client(ws, stream, received)
        finally:
            self._slots -= 1

    async def _run_client(
        self, ws: WebSocketConnection, stream: trio.SocketStream, received: _Received
    ) -> None:
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
                nursery.start_soon(self._read, ws, client, received)
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

    async def _read(
        self, ws: WebSocketConnection, client: ClientQueue, received: _Received
    ) -> None:
        async with trio.open_nursery() as nursery:
            code, reason = await self._reader(ws, client, received, nursery)
            nursery.cancel_scope.cancel()
        client.close(code, reason)

    async def _reader(
        self,
        ws: WebSocketConnection,
        client: ClientQueue,
        received: _Received,
        nursery: trio.Nursery,
    ) -> tuple[int, str]:
        idle = self.limits.idle_timeout
        # Subscription requests that arrive while the books are still loading are
        # answered in order once they are ready; meanwhile pings are answered, and the
        # client, waiting for us, is not timed out.
        deferred = _Deferred()
        while True:
            message: str | bytes | None = None
            since = max(received.last, deferred.answered_at)
            deadline = math.inf if deferred.requests else since + idle
            with trio.CancelScope(deadline=deadline) as deferred.wait:
                try:
                    message = await ws.get_message()
                except ConnectionClosed:
                    return (1000, "")
            deferred.wait = None
            if message is None:
                since = max(received.last, deferred.answered_at)
                if deferred.requests or trio.current_time() < since + idle:
                    continue  # a WebSocket ping came in, or deferred replies went out
                self.closed_idle += 1
                return (1000, f"idle timeout: nothing received for {idle:g} s")
            request = parse_request(message)
            if isinstance(request, Subscribe | Unsubscribe) and (
                deferred.requests or not self._ready().is_set()
            ):
                if len(deferred.requests) < self.limits.max_subscriptions:
                    if not deferred.requests:
                        nursery.start_soon(self._answer_when_ready, client, deferred)
                    deferred.requests.append(request)
                    continue
                replies = [error_message(too_many(self.limits.max_subscriptions))]
            else:
                replies = self._answer(client, request)
            if not self._reply(client, replies):
                assert client.close_reason is not None
                return client.close_reason

    async def _answer_when_ready(self, client: ClientQueue, deferred: _Deferred) -> None:
        await self._ready().wait()
        # No checkpoint from here on: the reader queues behind us, never in between.
        requests = deferred.requests
        while requests:
            if not self._reply(client, self._answer(client, requests.pop(0))):
                return
        deferred.answered_at = trio.current_time()
        if deferred.wait is not None:
            deferred.wait.cancel()  # the reader's wait had no deadline: give it one

    def _reply(self, client: ClientQueue, replies: list[str]) -> bool:
        """Queue replies; False if the client was disconnected for not reading them."""
        for text in replies:
            if not client.put(text, allowance=_REPLY_ALLOWANCE):
                self.hub.disconnect_slow(client, "replies not read")
                return False
        return True

    def _answer(self, client: ClientQueue, request: Request) -> list[str]:
        if isinstance(request, Ping):
            return [pong_message()]
        if isinstance(request, Health):
            return [dumps({"channel": "health", "data": self._health()})]
        if isinstance(request, ProtocolError):
            self.protocol_errors += 1
            return [error_message(request.text)]
        books = self._books()
        assert books is not None  # the caller waited for the books to be ready
        sub = request.subscription
        if isinstance(request, Unsubscribe):
            if sub not in client.subscriptions:
                return [error_message(already(False, request.echo))]
            self.hub.unsubscribe(client, sub)
            return [subscription_response("unsubscribe", request.echo)]
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
