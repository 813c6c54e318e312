"""Getting and loading node snapshots (``fileSnapshot``).

The node answers ``POST /info`` by writing the snapshot to a path we name and
replying 2xx; only the status is documented, so the file is read once the
request returns. Loading 100+ MB happens in a worker thread with progress in
the log, so the server keeps serving while it runs.
"""

import logging
import time
import urllib.parse
from pathlib import Path

import h11
import orjson
import trio

from hlbook.book.books import Books
from hlbook.errors import SnapshotError
from hlbook.model import CoinFilter
from hlbook.node.formats import SnapshotSide, decode_snapshot

__all__ = [
    "InfoServerError",
    "decode_snapshot_file",
    "load_books",
    "read_snapshot",
    "request_file_snapshot",
]

log = logging.getLogger(__name__)

_MAX_ANSWER = 1024 * 1024
_READ_CHUNK = 16 * 1024 * 1024


class InfoServerError(SnapshotError):
    """The node's info server could not be reached or refused the request."""


def _request_body(out_path: Path) -> bytes:
    return orjson.dumps(
        {
            "type": "fileSnapshot",
            "request": {
                "type": "l4Snapshots",
                "includeUsers": True,
                "includeTriggerOrders": False,
            },
            "outPath": str(out_path.absolute()),
            "includeHeightInOutput": True,
        }
    )


async def request_file_snapshot(info_url: str, out_path: Path) -> None:
    """Ask the node at ``info_url`` to write a snapshot with its height to ``out_path``.

    Raises :class:`InfoServerError` when the server is unreachable or answers
    anything but 2xx. Writing a mainnet snapshot takes seconds: callers bound
    the wait with ``trio.fail_after``.
    """
    url = urllib.parse.urlsplit(info_url)
    if url.scheme != "http" or not url.hostname:
        raise InfoServerError(f"unsupported info URL {info_url!r} (expected http://host:port/info)")
    host, port = url.hostname, url.port or 80
    body = _request_body(out_path)
    try:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            status, answer = await _post(stream, host, url.path or "/", body)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise InfoServerError(f"cannot reach the node's info server at {info_url}: {why}") from None
    except (trio.BrokenResourceError, h11.ProtocolError):
        raise InfoServerError(
            f"the node's info server at {info_url} closed the connection without a valid answer"
        ) from None
    if not 200 <= status < 300:
        text = answer[:300].decode("utf-8", "replace")
        raise InfoServerError(f"{info_url} answered HTTP {status}: {text}")


async def _post(
    stream: trio.SocketStream, host: str, target: str, body: bytes
) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target=target,
        headers=[
            ("Host", host),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ],
    )
    await stream.send_all(conn.send(request) + conn.send(h11.Data(data=body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))
    status = 0
    answer = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            if len(answer) < _MAX_ANSWER:
                answer += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, bytes(answer)


def read_snapshot(path: Path) -> bytes:
    """Read a snapshot file, logging progress for large ones (blocking; use a thread)."""
    try:
        size = path.stat().st_size
        started = time.monotonic()
        chunks: list[bytes] = []
        done = 0
        next_report = started + 2.0
        with path.open("rb") as file:
            while chunk := file.read(_READ_CHUNK):
                chunks.append(chunk)
                done += len(chunk)
                if time.monotonic() >= next_report:
                    log.info("snapshot: read %.0f%% of %.1f MB", 100 * done / size, size / 1e6)
                    next_report += 2.0
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc}") from None
    data = b"".join(chunks)
    log.info(
        "snapshot: read %.1f MB from %s in %.1f s",
        len(data) / 1e6,
        path,
        time.monotonic() - started,
    )
    return data


def load_books(
    data: bytes, *, coin_filter: CoinFilter | None = None, height: int | None = None
) -> Books:
    """Build books from snapshot bytes, logging progress (blocking; use a thread)."""
    started = time.monotonic()
    state = {"next": started + 2.0}

    def progress(count: int, coin: str) -> None:
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + 2.0
            log.info("snapshot: loaded %d coins (latest %s)", count, coin)

    books = Books.load(data, height=height, coin_filter=coin_filter, progress=progress)
    log.info(
        "snapshot: height %d, %d coins, %d resting orders, built in %.1f s",
        books.height,
        len(books.coins()),
        len(books),
        time.monotonic() - started,
    )
    return books


def decode_snapshot_file(
    data: bytes, height: int | None = None
) -> tuple[int, list[tuple[str, SnapshotSide, SnapshotSide]]]:
    """Decode snapshot bytes fully (for comparison): ``(height, [(coin, bids, asks)])``."""
    found, coins = decode_snapshot(data, height)
    return found, list(coins)
