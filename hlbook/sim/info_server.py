"""The node's info server (``--serve-info``), as far as hlbook uses it.

``POST /info`` with
``{"type":"fileSnapshot","request":{"type":"l4Snapshots","includeUsers":true,
"includeTriggerOrders":false},"outPath":"/abs/path","includeHeightInOutput":true}``
writes the books to ``outPath`` and answers 200 once the file is complete.
Everything else gets a 4xx with a JSON ``{"error": …}`` body. HTTP/1.1 with
keep-alive, spoken with h11 over Trio streams.
"""

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import h11
import msgspec
import trio

from hlbook.listen import open_listeners

__all__ = ["SnapshotWriter", "serve_info"]

log = logging.getLogger(__name__)

SnapshotWriter = Callable[[Path, bool], Awaitable[int]]
"""``await write(out_path, include_height)`` writes a snapshot and returns its height."""

_MAX_BODY = 64 * 1024
_READ_SIZE = 16 * 1024
_IDLE_TIMEOUT = 30.0
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1 << 20
_JSON = [(b"content-type", b"application/json")]
_GONE = (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError)


class _Reject(Exception):
    """A request the server refuses: HTTP status and the error text for the body."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


async def serve_info(
    write_snapshot: SnapshotWriter,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``POST /info`` on ``host:port`` until cancelled.

    Reports the bound port (useful with port 0) once it accepts connections.
    """
    listeners = await open_listeners(host, port, "the info server")
    bound: int = listeners[0].socket.getsockname()[1]
    log.debug("info server listening on %s:%d", host, bound)

    async def handle(stream: trio.SocketStream) -> None:
        await _connection(stream, write_snapshot)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(bound)


async def _connection(stream: trio.SocketStream, write_snapshot: SnapshotWriter) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            with trio.move_on_after(_IDLE_TIMEOUT) as idle:
                request, body = await _receive(stream, conn)
            if idle.cancelled_caught or request is None:
                return
            try:
                status, payload = 200, await _answer(request, body, write_snapshot)
            except _Reject as exc:
                status, payload = exc.status, {"error": exc.error}
            await _send(stream, conn, status, payload)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except _Reject as exc:  # the request could not even be read: answer, then hang up
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(*_GONE):
                await _send(stream, conn, exc.status, {"error": exc.error})
                await _linger(stream)
    except _GONE as exc:
        log.debug("info connection dropped: %s", exc)
    finally:
        await trio.aclose_forcefully(stream)


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close, then read and drop what the client still sends, for a moment.

    Closing a socket with unread input makes the kernel reset the connection,
    which can destroy the answer just sent (e.g. a 413 before the body was read).
    """
    await stream.send_eof()
    dropped = 0
    with trio.move_on_after(_LINGER_SECONDS):
        while dropped < _LINGER_BYTES:
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                break
            dropped += len(data)


async def _receive(
    stream: trio.SocketStream, conn: h11.Connection
) -> tuple[h11.Request | None, bytes]:
    """One whole request and its body, or ``(None, b"")`` when the client is done."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _Reject(exc.error_status_hint, f"bad HTTP request: {exc}") from None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_READ_SIZE)
            conn.receive_data(data)
            if not data and conn.their_state is h11.IDLE:
                return None, b""
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                raise _Reject(413, f"request body larger than {_MAX_BODY} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, status: int, payload: dict[str, Any]
) -> None:
    body = msgspec.json.encode(payload)
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    if status == 405:
        headers.append((b"allow", b"POST"))
    reason = HTTPStatus(status).phrase.encode()
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _answer(
    request: h11.Request, body: bytes, write_snapshot: SnapshotWriter
) -> dict[str, Any]:
    """Check a request and perform it; raise :class:`_Reject` for anything unsupported."""
    target = request.target.split(b"?", 1)[0].rstrip(b"/")
    if target != b"/info":
        raise _Reject(404, f"not found: {request.target.decode(errors='replace')}")
    if request.method != b"POST":
        raise _Reject(405, "use POST")
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise _Reject(400, f"invalid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise _Reject(400, "expected a JSON object")
    kind = message.get("type")
    if kind != "fileSnapshot":
        raise _Reject(400, f"unsupported request type {kind!r}; only 'fileSnapshot' is served")
    inner = message.get("request")
    if not isinstance(inner, dict) or inner.get("type") != "l4Snapshots":
        raise _Reject(400, "unsupported snapshot request; only 'l4Snapshots' is served")
    if inner.get("includeUsers") is not True:
        raise _Reject(400, "only includeUsers: true is supported")
    if inner.get("includeTriggerOrders", False) is not False:
        raise _Reject(400, "only includeTriggerOrders: false is supported")
    out_path = message.get("outPath")
    if not isinstance(out_path, str) or not os.path.isabs(out_path):
        raise _Reject(400, "outPath must be an absolute path")
    include_height = message.get("includeHeightInOutput", False)
    if not isinstance(include_height, bool):
        raise _Reject(400, "includeHeightInOutput must be true or false")
    try:
        height = await write_snapshot(Path(out_path), include_height)
    except OSError as exc:
        raise _Reject(500, f"cannot write {out_path}: {exc.strerror or exc}") from None
    return {"height": height, "outPath": out_path}
