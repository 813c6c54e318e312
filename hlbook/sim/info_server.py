"""The simulator's info servers: ``POST /info`` over HTTP/1.1, spoken with h11 over Trio.

:func:`serve_info_api` serves any handler of decoded requests (the node and
fallback roles of :mod:`hlbook.sim.info`); :func:`serve_info` serves only
``fileSnapshot`` with a given snapshot writer (for tests that replay
recorded files). Keep-alive, a bounded body, an idle timeout; answers are
JSON, refusals ``text/plain`` with the status a node gives
(:class:`~hlbook.sim.info.InfoError`).
"""

import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import h11
import msgspec
import trio

from hlbook.listen import open_listeners
from hlbook.sim.info import InfoError, check_type, decode_request, parse_file_snapshot

__all__ = ["InfoHandler", "SnapshotWriter", "answer_file_snapshot", "serve_info", "serve_info_api"]

log = logging.getLogger(__name__)

SnapshotWriter = Callable[[Path, bool], Awaitable[int]]
"""``await write(out_path, include_height)`` writes a snapshot and returns its height."""

InfoHandler = Callable[[dict[str, Any]], Awaitable[Any]]
"""``await handle(request)``: the JSON answer to a decoded request (a JSON object with a
string ``type``), or :class:`~hlbook.sim.info.InfoError`."""

_MAX_BODY = 64 * 1024
_READ_SIZE = 16 * 1024
_IDLE_TIMEOUT = 30.0
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1 << 20
_JSON = (b"content-type", b"application/json")
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_GONE = (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError)


async def answer_file_snapshot(write_snapshot: SnapshotWriter, message: dict[str, Any]) -> Any:
    """Perform a ``fileSnapshot`` request: write the file, then answer (only the status
    of a node's answer is documented; the simulator says where and at which height)."""
    out_path, include_height = parse_file_snapshot(message)
    try:
        height = await write_snapshot(out_path, include_height)
    except OSError as exc:
        raise InfoError(500, f"cannot write {out_path}: {exc.strerror or exc}") from None
    return {"height": height, "outPath": str(out_path)}


async def serve_info(
    write_snapshot: SnapshotWriter,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``fileSnapshot`` (and nothing else) on ``host:port`` until cancelled.

    Reports the bound port (useful with port 0) once it accepts connections.
    """

    async def handle(message: dict[str, Any]) -> Any:
        check_type(message, ("fileSnapshot",))
        return await answer_file_snapshot(write_snapshot, message)

    await serve_info_api(handle, host, port, task_status=task_status)


async def serve_info_api(
    handler: InfoHandler,
    host: str,
    port: int,
    *,
    name: str = "the info server",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``POST /info`` with ``handler`` on ``host:port`` until cancelled.

    Reports the bound port (useful with port 0) once it accepts connections.
    """
    listeners = await open_listeners(host, port, name)
    bound: int = listeners[0].socket.getsockname()[1]
    log.debug("%s listening on %s:%d", name, host, bound)

    async def connection(stream: trio.SocketStream) -> None:
        await _connection(stream, handler)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, connection, listeners)
        task_status.started(bound)


async def _connection(stream: trio.SocketStream, handler: InfoHandler) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            with trio.move_on_after(_IDLE_TIMEOUT) as idle:
                request, body = await _receive(stream, conn)
            if idle.cancelled_caught or request is None:
                return
            try:
                status, data = 200, msgspec.json.encode(await _answer(request, body, handler))
            except InfoError as exc:
                status, data = exc.status, exc.text.encode()
            await _send(stream, conn, status, data)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except InfoError as exc:  # the request could not even be read: answer, then hang up
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(*_GONE):
                await _send(stream, conn, exc.status, exc.text.encode())
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
            raise InfoError(exc.error_status_hint, f"bad HTTP request: {exc}") from None
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
                raise InfoError(413, "Failed to buffer the request body: length limit exceeded")
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""


async def _send(stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes) -> None:
    headers = [_JSON if status == 200 else _TEXT, (b"content-length", str(len(body)).encode())]
    if status == 405:
        headers.append((b"allow", b"POST"))
    reason = HTTPStatus(status).phrase.encode()
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _answer(request: h11.Request, body: bytes, handler: InfoHandler) -> Any:
    """Route, decode and hand a request to ``handler``; :class:`InfoError` for refusals."""
    target = request.target.split(b"?", 1)[0].rstrip(b"/")
    if target != b"/info":
        raise InfoError(404, f"not found: {request.target.decode(errors='replace')}")
    if request.method != b"POST":
        raise InfoError(405, "use POST")
    content_type = next(
        (value.decode("latin-1") for name, value in request.headers if name == b"content-type"),
        None,
    )
    return await handler(decode_request(body, content_type))
