"""Getting and loading node snapshots (``fileSnapshot``).

The node answers ``POST /info`` by writing the snapshot to a path we name and
replying 2xx; only the status is documented, so the file is read once the
request returns. Loading 100+ MB happens in a worker thread with progress in
the log, so the server keeps serving while it runs.
"""

import logging
import time
from pathlib import Path

import orjson

from hlbook.book.books import Books
from hlbook.errors import SnapshotError
from hlbook.model import CoinFilter
from hlbook.node.formats import SnapshotSide, decode_snapshot

__all__ = [
    "InfoServerError",
    "decode_snapshot_file",
    "file_snapshot_request",
    "load_books",
    "read_snapshot",
]

log = logging.getLogger(__name__)

_READ_CHUNK = 16 * 1024 * 1024


class InfoServerError(SnapshotError):
    """The node's info server could not be reached or refused the request."""


def file_snapshot_request(out_path: Path) -> bytes:
    """The ``fileSnapshot`` request body: every resting order with its user, and the height."""
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
