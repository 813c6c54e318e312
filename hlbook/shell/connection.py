"""Every connection on hlbook's one port: HTTP/1.1 first (h11), WebSocket after an upgrade.

A connection is HTTP until a ``GET /ws`` or ``GET /`` with ``Upgrade:
websocket`` turns it into a WebSocket (wsproto, with permessage-deflate
negotiated by :mod:`hlbook.server.deflate`); anything else is routed as HTTP
(:mod:`hlbook.server.routes`), with keep-alive. Everything here moves bytes:
the decisions live in sans-I/O objects — h11's and wsproto's connections,
the :class:`~hlbook.server.slots.Slots` that admit connections, the
:class:`~hlbook.server.session.Session` of each WebSocket client.

Why not trio-websocket on the server: hlbook writes pre-built frames (one
per message and encoding, shared by every client) and must negotiate
permessage-deflate itself so that one compressed frame serves every client;
trio-websocket has no public API for either (the previous server had to
share its private stream lock). trio-websocket is built on wsproto and h11;
the server uses those directly, and trio-websocket stays the client in tests
and examples.

Bounds, each configurable (:class:`ServerLimits`): the request head
(``max_head``), the body (``max_body``), the time to send a request
(``handshake_timeout``, also for the first request of a connection, so a
half-open socket holds its slot for at most that long), idle keep-alive
connections (``http_idle_timeout``), half-open connections
(``max_half_open``), WebSocket messages (``max_message_size``, 1009), idle
WebSocket clients (``idle_timeout``, 1000).
"""

import contextlib
import logging
import ssl
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import attrs
import h11
import orjson
import trio
import wsproto
import wsproto.events as ws_events
from wsproto.utilities import RemoteProtocolError

from hlbook.book.books import Books
from hlbook.errors import HistoryError
from hlbook.info import InfoRegistry
from hlbook.info.history import history_unavailable
from hlbook.server.access import AccessPolicy
from hlbook.server.deflate import PerMessageDeflate
from hlbook.server.fanout import ClientQueue, Hub, error_message
from hlbook.server.frames import pong_frame
from hlbook.server.routes import Response, Routes
from hlbook.server.session import Action, RunInfo, Session, SessionLimits
from hlbook.server.slots import Kind, Refusal, Slot, Slots
from hlbook.server.tls import HandshakeFailureLog, describe_handshake_error
from hlbook.shell.writer import CompressionBudget, Flusher, Writer

__all__ = ["ConnectionStats", "Server", "ServerLimits"]

log = logging.getLogger("hlbook.server")

WS_PATHS = ("/ws", "/")
_CLOSE_TIMEOUT = 2.0  # for each client when the server shuts down
_FINISH_TIMEOUT = 10.0  # for a client being closed to read the rest of its frame
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1 << 20
_READ_SIZE = 64 * 1024
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


@attrs.frozen
class ServerLimits:
    """Limits of the connection layer (from :class:`~hlbook.config.Config`)."""

    max_connections: int = 1000
    max_per_address: int | None = None
    max_half_open: int = 256
    handshake_timeout: float = 10.0
    http_idle_timeout: float = 30.0
    max_head: int = 16 * 1024
    max_body: int = 64 * 1024
    max_message_size: int = 64 * 1024
    idle_timeout: float = 60.0
    max_subscriptions: int = 1000
    queue_messages: int = 4096
    queue_bytes: int = 64 * 1024 * 1024
    max_reply_bytes: int = 1024 * 1024
    compression_level: int = 1
    compression_rate: float = 4 * 1024 * 1024
    """Bytes per second a client may have compressed for it alone (then plain frames)."""


@attrs.define
class ConnectionStats:
    """Counters of the connection layer."""

    accepted: int = 0
    rejected: int = 0
    http_requests: int = 0
    websockets: int = 0
    compressed_websockets: int = 0
    closed_idle: int = 0
    protocol_errors: int = 0
    client_errors: int = 0
    denied: int = 0
    """Requests refused by the access policy (401/403)."""
    compressed_messages: int = 0
    """Of closed clients (add the connected ones' for the total)."""
    conflated: int = 0
    """Of closed clients (add the connected ones' for the total)."""
    tls_failures: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0


class _Timeout(Exception):
    """A request did not arrive in time."""


class Server:
    """Serves one listener's connections (``trio.serve_listeners(server.handle_stream, …)``)."""

    def __init__(
        self,
        hub: Hub,
        info: InfoRegistry,
        *,
        books: Callable[[], Books | None],
        ready: Callable[[], trio.Event],
        health: Callable[[], dict[str, Any]],
        limits: ServerLimits,
        page: Callable[[h11.Request], Response] | None = None,
        access: AccessPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        flusher: Flusher | None = None,
    ) -> None:
        self.hub = hub
        self.info = info
        self.limits = limits
        self.access = access if access is not None else AccessPolicy()
        self.ssl_context = ssl_context
        self._scheme = "http" if ssl_context is None else "https"
        self._books = books
        self._ready = ready
        self._health = health
        self.slots = Slots(limits.max_connections, limits.max_half_open, limits.max_per_address)
        self.stats = ConnectionStats()
        self.routes = Routes(info, health, page, on_bug=self._count_bug)
        self.flusher = flusher if flusher is not None else Flusher()
        """Run :meth:`Flusher.run` alongside the server (``serve`` does); a
        :class:`~hlbook.shell.writer.FlushSink` of it among the data path's sinks
        writes each block's messages in the step that built them."""
        self.active: set[ClientQueue] = set()
        """Connected WebSocket clients."""
        self.tls_failure_log = HandshakeFailureLog()
        """When failed TLS handshakes are logged (run :meth:`report_tls_failures`)."""
        self._session_limits = SessionLimits(
            idle_timeout=limits.idle_timeout, max_subscriptions=limits.max_subscriptions
        )

    def _count_sent(self, messages: int, size: int) -> None:
        self.stats.messages_sent += messages
        self.stats.bytes_sent += size

    def queued(self) -> int:
        """Messages waiting in all client queues."""
        return sum(len(client) for client in self.active)

    def sent_totals(self) -> dict[str, int]:
        """Compressed messages and conflations so far, connected and closed clients."""
        active = self.active
        return {
            "compressed": self.stats.compressed_messages
            + sum(client.stats.compressed_messages for client in active),
            "conflated": self.stats.conflated + sum(client.stats.conflated for client in active),
        }

    # -- connections ------------------------------------------------------------------------

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """One call per accepted connection. Whatever happens to it stays with it."""
        peer = _peer(stream)  # now: once closed, a socket has no peer name
        address = peer.rpartition(":")[0]
        try:
            with trio.CancelScope() as scope:
                slot = self.slots.admit(scope.cancel, address)
                if not isinstance(slot, Slot):
                    self.stats.rejected += 1
                    await self._refuse(stream, slot)
                    return
                self.stats.accepted += 1
                try:
                    if self.ssl_context is not None:
                        tls = await self._tls(stream, peer)
                        if tls is None:
                            return
                        stream = tls
                    await self._serve(stream, slot, peer)
                finally:
                    self.slots.release(slot)
        except* _GONE as lost:
            log.debug("%s: connection lost: %r", peer, lost.exceptions[0])
        except* Exception:
            # A bug, not the client's doing: counted in health so that it is seen.
            self._count_bug()
            log.exception("%s: error serving this client (others are unaffected)", peer)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def _count_bug(self) -> None:
        """A client's request met a bug (logged with its traceback): seen in health and
        ``hlbook_client_errors_total``."""
        self.stats.client_errors += 1

    async def _tls(self, stream: trio.abc.Stream, peer: str) -> trio.SSLStream[Any] | None:
        """The TLS session over ``stream``, or ``None`` if its handshake failed or stalled
        (that connection is closed; nobody else notices)."""
        assert self.ssl_context is not None
        tls = trio.SSLStream(stream, self.ssl_context, server_side=True, https_compatible=True)
        with trio.move_on_after(self.limits.handshake_timeout):
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                log.debug("%s: TLS handshake failed: %r", peer, exc.__cause__ or exc)
                self._tls_failed(peer, describe_handshake_error(exc.__cause__))
                return None
            return tls
        timeout = self.limits.handshake_timeout
        self._tls_failed(peer, f"no TLS handshake within --handshake-timeout ({timeout:g} s)")
        return None

    def _tls_failed(self, peer: str, reason: str) -> None:
        self.stats.tls_failures += 1
        line = self.tls_failure_log.failed(trio.current_time(), peer, reason)
        if line is not None:
            log.info("%s", line)

    async def report_tls_failures(self) -> None:
        """Log the failed TLS handshakes not logged yet, once per the log's interval, until
        cancelled (``serve`` runs it beside the server when TLS is on)."""
        failures = self.tls_failure_log
        while True:
            await trio.sleep(failures.interval)
            line = failures.tick(trio.current_time())
            if line is not None:
                log.info("%s", line)

    async def _refuse(self, stream: trio.abc.Stream, why: Refusal) -> None:
        # Before TLS: a TLS client gets a closed connection rather than plaintext.
        if why is Refusal.PER_ADDRESS:
            status = b"429 Too Many Requests"
            body = orjson.dumps(
                {"code": "tooManyConnections", "msg": "too many connections from this address"}
            )
        else:
            status = b"503 Service Unavailable"
            body = orjson.dumps({"code": "overCapacity", "msg": "too many connections"})
        if self.ssl_context is None:
            data = (
                b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)
            )
            with trio.move_on_after(1.0):
                await stream.send_all(data)
            await _linger(stream)

    async def _serve(self, stream: trio.abc.Stream, slot: Slot, peer: str) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        limits = self.limits
        waited_from = trio.current_time()
        idle_limit = limits.handshake_timeout  # half-open: the first request must come soon
        while True:
            try:
                request, body = await self._receive_request(
                    stream, conn, waited_from + idle_limit, slot
                )
            except _Timeout as timeout:
                if str(timeout):
                    await self._send(stream, conn, _error(408, "timeout", str(timeout)))
                return
            except h11.RemoteProtocolError as exc:
                self.stats.protocol_errors += 1
                status = exc.error_status_hint
                await self._send(stream, conn, _error(status, "badRequest", str(exc) or "bad"))
                return
            if request is None:
                return  # the client closed the connection
            self.stats.http_requests += 1
            denial = self.access.decide(
                request.target, request.headers, scheme=self._scheme, page=_is_page(request)
            )
            if denial is not None:
                self.stats.denied += 1
                headers = (
                    (("www-authenticate", denial.authenticate),) if denial.status == 401 else ()
                )
                error = _error(denial.status, denial.code, denial.msg, headers=headers)
                await self._send(stream, conn, error, request)
                return
            if _is_upgrade(request):
                await self._upgrade(stream, conn, request, slot, peer)
                return
            response = (
                body
                if isinstance(body, Response)
                else await self.routes.handle(request, body or b"")
            )
            await self._send(stream, conn, response, request)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
            self.slots.set(slot, Kind.IDLE)
            waited_from = trio.current_time()
            idle_limit = limits.http_idle_timeout

    async def _receive_request(
        self, stream: trio.abc.Stream, conn: h11.Connection, deadline: float, slot: Slot
    ) -> tuple[h11.Request | None, bytes | Response | None]:
        """The next request and its body (or the error response to send instead).

        Until its first byte, a request may take until ``deadline``; from then
        on, head and body must arrive within ``handshake_timeout``.
        """
        limits = self.limits
        request: h11.Request | None = None
        body = bytearray()
        started = bool(conn.trailing_data[0])
        if started:
            deadline = min(deadline, trio.current_time() + limits.handshake_timeout)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if trio.current_time() >= deadline:
                    raise _Timeout("the request took too long" if started else "")
                with trio.move_on_at(deadline):
                    data = await stream.receive_some(_READ_SIZE)
                    if not started and data:
                        started = True
                        deadline = min(deadline, trio.current_time() + limits.handshake_timeout)
                    conn.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Request):
                request = event
                self.slots.set(slot, Kind.HTTP)
                if _head_size(event) > limits.max_head:
                    # h11 bounds only a head still incomplete: one read may bring more.
                    return request, _error(
                        431, "headersTooLarge", f"request head larger than {limits.max_head} bytes"
                    )
                size = _content_length(event)
                if size is not None and size > limits.max_body:
                    return request, _too_large(limits.max_body)
                continue
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limits.max_body:
                    return request, _too_large(limits.max_body)
                continue
            if isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            if event is h11.PAUSED:
                return request, bytes(body)
            if isinstance(event, h11.ConnectionClosed):
                return None, None
            return None, None  # pragma: no cover - h11 has no other events for a server

    async def _send(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        response: Response,
        request: h11.Request | None = None,
    ) -> None:
        """Send ``response`` to ``request``; for a ``HEAD`` request, its headers only
        (``content-length`` still the body's, as HTTP says; h11 refuses body bytes after a
        HEAD). 204 and 304 have no body and no ``content-length``."""
        head = request is not None and request.method == b"HEAD"
        headers = [("content-type", response.content_type)]
        if response.status not in (204, 304):  # which must not declare a length (RFC 9110)
            headers.append(("content-length", str(len(response.body))))
        headers += [*self._cors(request), *response.headers]
        if response.close:
            headers.append(("connection", "close"))
        try:
            reason = _REASONS.get(response.status, b"")
            data = conn.send(
                h11.Response(status_code=response.status, headers=headers, reason=reason)
            )
            if response.body and not head:
                data += conn.send(h11.Data(data=response.body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return  # the connection cannot carry a response any more
        with trio.move_on_after(self.limits.handshake_timeout):
            await stream.send_all(data)
        if response.close:
            await _linger(stream)

    def _cors(self, request: h11.Request | None) -> list[tuple[str, str]]:
        """Which browser origins may read the answer (all, unless an allow-list is set)."""
        if not self.access.allow_origins:
            return [("access-control-allow-origin", "*")]
        origin = None
        for name, value in request.headers if request is not None else ():
            if name == b"origin":
                origin = value.decode("latin-1")
        if origin is not None and origin in self.access.allow_origins:
            return [("access-control-allow-origin", origin), ("vary", "Origin")]
        return [("vary", "Origin")]

    # -- WebSocket ------------------------------------------------------------------------

    async def _upgrade(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        request: h11.Request,
        slot: Slot,
        peer: str,
    ) -> None:
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        if request.method != b"GET" or path not in WS_PATHS:
            self.stats.rejected += 1
            error = _error(404, "notFound", "WebSocket is served at /ws")
            await self._send(stream, conn, error, request)
            return
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(list(request.headers), request.target)
            handshake = next(ws.events())
            assert isinstance(handshake, ws_events.Request)
        except (RemoteProtocolError, StopIteration, ValueError) as exc:
            # ValueError: wsproto decoding a header that is not ASCII (UnicodeDecodeError).
            self.stats.protocol_errors += 1
            await self._send(stream, conn, _error(400, "badHandshake", f"bad handshake: {exc}"))
            return
        extension = None
        if self.limits.compression_level > 0:
            extension = PerMessageDeflate(
                self.limits.compression_level, self.limits.max_message_size
            )
        accept = ws_events.AcceptConnection(extensions=[extension] if extension else [])
        await stream.send_all(ws.send(accept))
        trailing, _closed = conn.trailing_data
        self.slots.set(slot, Kind.WEBSOCKET)
        self.stats.websockets += 1
        client = ClientQueue(
            max_messages=self.limits.queue_messages,
            max_bytes=self.limits.queue_bytes,
            max_reply_bytes=self.limits.max_reply_bytes,
        )
        if extension is not None and extension.deflater is not None:
            client.deflater = extension.deflater
            self.stats.compressed_websockets += 1
        await self._run_client(stream, ws, client, trailing, peer)

    async def _run_client(
        self,
        stream: trio.abc.Stream,
        ws: wsproto.WSConnection,
        client: ClientQueue,
        trailing: bytes,
        peer: str,
    ) -> None:
        fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        limits = self.limits
        writer = Writer(
            stream,
            client,
            fd=fd,
            budget=CompressionBudget(limits.compression_rate, 16 * limits.compression_rate),
            on_sent=self._count_sent,
        )
        reader_scope = trio.CancelScope()
        waits = _Waits()

        def on_close() -> None:
            writer.waker.set()
            reader_scope.cancel()

        client.wake = lambda: self.flusher.mark(writer)
        client.on_close = on_close
        session = Session(
            client,
            self.hub,
            books=self._books,
            health=self._health,
            limits=self._session_limits,
            now=trio.current_time(),
        )
        self.active.add(client)
        log.debug("client %d connected from %s", client.id, peer)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                if self._books() is None:
                    nursery.start_soon(self._when_ready, session, waits, nursery)
                with reader_scope:
                    await self._read(stream, ws, session, writer, trailing, nursery, waits)
                if client.close_reason is None:
                    client.close(1000, "")
                # The writer stops at a frame boundary: at most one frame to finish, which a
                # slow client may take a while to read.
                with trio.move_on_after(_FINISH_TIMEOUT):
                    await writer.done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.hub.drop(client)
            self.active.discard(client)
            self.stats.compressed_messages += client.stats.compressed_messages
            self.stats.conflated += client.stats.conflated
            self.flusher.forget(writer)
            code, reason = client.close_reason or (1001, "server shutting down")
            logger = log.warning if client.stats.disconnected_for_lag else log.debug
            logger("client %d (%s) closed: %d %s", client.id, peer, code, reason or "")
            # Shutting down, every client gets a short time; one we close gets longer to
            # read the end of its frame and the close frame (it may be reading slowly). A
            # writer cut off mid-frame cannot be followed by anything: then just drop.
            timeout = _FINISH_TIMEOUT if client.close_reason is not None else _CLOSE_TIMEOUT
            if writer.can_close and code != 1006:
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(timeout),
                    contextlib.suppress(*_GONE),
                ):
                    await writer.close(code, reason)
                    # Let the client's close frame (and what it sent before) arrive:
                    # closing with its bytes unread would reset the connection, and a
                    # browser would then report 1006 instead of our code.
                    with trio.move_on_after(_LINGER_SECONDS):
                        while await stream.receive_some(_READ_SIZE):
                            pass

    async def _when_ready(self, session: Session, waits: "_Waits", nursery: trio.Nursery) -> None:
        await self._ready().wait()
        for action in session.books_ready(trio.current_time()):
            nursery.start_soon(self._carry_out, session, action)
        if waits.scope is not None:
            waits.scope.deadline = session.deadline()  # the wait had none: give it one

    async def _read(
        self,
        stream: trio.abc.Stream,
        ws: wsproto.WSConnection,
        session: Session,
        writer: Writer,
        trailing: bytes,
        nursery: trio.Nursery,
        waits: "_Waits",
    ) -> None:
        """Feed the client's bytes to wsproto and its messages to the session, until the
        connection is to be closed (``client.close_reason`` says why)."""
        client = session.client
        reader = _MessageReader(self.limits.max_message_size)
        if trailing:
            session.activity(trio.current_time())
            ws.receive_data(trailing)
        while True:
            for event in ws.events():
                message = reader.add(event, client)
                if message is not None:
                    for action in session.receive(message, trio.current_time()):
                        nursery.start_soon(self._carry_out, session, action)
                elif isinstance(event, ws_events.Ping):
                    writer.send_pong(pong_frame(bytes(event.payload)))
                elif isinstance(event, ws_events.CloseConnection) and client.close_reason is None:
                    if event.code in (1002, 1007, 1009):  # what wsproto found wrong
                        self.stats.protocol_errors += 1
                        client.close(event.code, event.reason or "")
                    elif event.code == 1006:
                        client.close(1006, "connection lost")
                    else:  # the client closes: answer with its code
                        client.close(event.code if event.code < 4000 else 1000, "")
                if client.close_reason is not None:
                    return
            deadline = session.deadline()
            if trio.current_time() >= deadline:
                self.stats.closed_idle += 1
                idle = self.limits.idle_timeout
                client.close(1000, f"idle timeout: nothing received for {idle:g} s")
                return
            # The wait's deadline moves when the session's does (books ready: see
            # _when_ready); with no data by then, loop and look again.
            with trio.CancelScope(deadline=deadline) as wait:
                waits.scope = wait
                data = await stream.receive_some(_READ_SIZE)
            waits.scope = None
            if wait.cancelled_caught:
                continue
            if not data:
                ws.receive_data(None)  # EOF: wsproto reports 1006
                continue
            session.activity(trio.current_time())
            ws.receive_data(bytes(data))

    async def _carry_out(self, session: Session, action: Action) -> None:
        if isinstance(action, RunInfo):
            await self._run_info(session, action)
            return
        try:
            message = await trio.to_thread.run_sync(action.job)
        except Exception as exc:  # a broken store or a bug: the subscriber is told, in
            # place of the snapshot, and still gets its pushes
            if isinstance(exc, HistoryError):
                why = history_unavailable(exc)
            else:
                log.exception("preparing the first %s message failed", action.channel)
                self._count_bug()
                why = "internal error (logged)"
            message = error_message(f"{action.channel}: no snapshot: {why}; updates follow")
        session.first_ready(action, message)

    async def _run_info(self, session: Session, call: RunInfo) -> None:
        payload = call.payload
        kind = payload.get("type")
        try:
            body = orjson.dumps(payload)
        except TypeError:  # nested deeper than orjson writes (~254 levels): no info type is
            session.answered(call, None, "the request is nested too deeply")
            return
        try:
            request = InfoRegistry.parse(body)
            answer = await self.info.answer(request, body)
        except Exception as exc:  # InfoError, or a bug: the client gets an error answer
            text = str(exc) if getattr(exc, "status", None) else "internal error"
            if not getattr(exc, "status", None):
                log.exception("post %r failed", kind)
                self._count_bug()
            session.answered(call, None, text)
            return
        if answer.status != 200:
            session.answered(call, None, answer.body.decode("utf-8", "replace")[:1000])
            return
        wrapped = b'{"type":%s,"data":%s}' % (orjson.dumps(kind), answer.body)
        session.answered(call, wrapped, None)


class _Waits:
    """The reader's current wait, whose deadline others may move."""

    scope: trio.CancelScope | None = None


class _MessageReader:
    """Joins a message's frames (wsproto hands them out in parts), bounded in size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[str | bytes] = []
        self._size = 0

    def add(self, event: ws_events.Event, client: ClientQueue) -> str | bytes | None:
        """The complete message, once ``event`` finishes one (else ``None``)."""
        if not isinstance(event, ws_events.Message):
            return None
        data = event.data
        self._size += len(data) if isinstance(data, bytes) else len(data.encode())
        if self._size > self.limit:
            client.close(1009, f"message larger than {self.limit} bytes")
            return None
        self._parts.append(data)
        if not event.message_finished:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], str):
            return "".join(part for part in parts if isinstance(part, str))
        return b"".join(part for part in parts if isinstance(part, bytes))


def _is_page(request: h11.Request) -> bool:
    """``GET /`` (or ``HEAD /``) without an upgrade: the live page."""
    path = request.target.split(b"?", 1)[0]
    return path == b"/" and request.method in (b"GET", b"HEAD") and not _is_upgrade(request)


def _is_upgrade(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"upgrade" and value.lower() == b"websocket":
            return True
    return False


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _error(status: int, code: str, msg: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = orjson.dumps({"code": code, "msg": msg})
    return Response(status, body, headers=headers, close=True)


def _head_size(request: h11.Request) -> int:
    """About the bytes of a request's head as sent (its line and its header lines)."""
    return len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _too_large(limit: int) -> Response:
    return _error(413, "tooLarge", f"request body larger than {limit} bytes")


async def _linger(stream: trio.abc.Stream) -> None:
    """Before closing after an error, let the client's unread bytes arrive (bounded): closing
    with them unread would reset the connection and could destroy the answer in flight."""
    with contextlib.suppress(*_GONE, AttributeError), trio.move_on_after(_LINGER_SECONDS):
        await stream.send_eof()  # type: ignore[attr-defined]
        drained = 0
        while drained < _LINGER_BYTES and (chunk := await stream.receive_some(_READ_SIZE)):
            drained += len(chunk)


def _peer(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        inner = getattr(stream, "transport_stream", None)
        sock = getattr(inner, "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return "?"
    return f"{host}:{port}"
