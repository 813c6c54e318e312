"""Test helpers: the real mainnet slice from ``tests/data`` and builders for node lines.

The builders write node JSON (dicts and lines) exactly as the node does, so
tests go through :func:`hlbook.node.formats.decode_line` like real input.
"""

import functools
import gzip
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hlbook.book.books import Books
from hlbook.model import Block
from hlbook.node.formats import DiffLine, FillLine, StatusLine, Stream, decode_line, encode

DATA = Path(__file__).parent / "data"

BASE_MS = 1778002753024
"""2026-05-05T17:39:13.024 UTC, the first block of the mainnet slice."""

USER = "0x0fd468a73084daa6ea77a9261e40fdec3e67e0c7"
OTHER = "0x5eaac7c475b1fad85701f02c4e9e796a53f94bd5"

Json = dict[str, Any]


# -- the mainnet slice ---------------------------------------------------------


@dataclass(frozen=True)
class MainnetSlice:
    """The recorded mainnet data: a BTC snapshot and the 51 by-block lines that follow it."""

    snapshot: bytes
    height: int
    lines: dict[Stream, list[bytes]]

    @property
    def heights(self) -> list[int]:
        """Heights of the by-block lines, in order."""
        return [self.height + 1 + i for i in range(len(self.lines[Stream.DIFFS]))]


@functools.cache
def load_mainnet() -> MainnetSlice:
    """Read ``tests/data/snapshot.json.gz`` and ``tests/data/by_block.tar.gz`` (cached)."""
    snapshot = gzip.decompress((DATA / "snapshot.json.gz").read_bytes())
    height = orjson.loads(snapshot[: snapshot.index(b",")] + b"]")[0]
    lines: dict[Stream, list[bytes]] = {}
    with tarfile.open(DATA / "by_block.tar.gz") as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            handle = archive.extractfile(member)
            assert handle is not None
            for stream in Stream:
                if f"node_{stream.value}_by_block/" in member.name:
                    lines[stream] = handle.read().splitlines()
    assert set(lines) == set(Stream), lines.keys()
    return MainnetSlice(snapshot, height, lines)


# -- builders ----------------------------------------------------------------------


def node_time(ms: int, nanos: int = 84407) -> str:
    """Node-style naive UTC time with nanoseconds for ``ms`` since the epoch."""
    stamp = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}{nanos:06d}"


def order_obj(
    oid: int,
    *,
    coin: str = "BTC",
    side: str = "B",
    px: str = "100.0",
    sz: str = "1.0",
    timestamp: int = BASE_MS,
    **extra: Any,
) -> Json:
    """A node order object with mainnet-like fields."""
    order: Json = {
        "coin": coin,
        "side": side,
        "limitPx": px,
        "sz": sz,
        "oid": oid,
        "timestamp": timestamp,
        "triggerCondition": "N/A",
        "isTrigger": False,
        "triggerPx": "0.0",
        "children": [],
        "isPositionTpsl": False,
        "reduceOnly": False,
        "orderType": "Limit",
        "origSz": sz,
        "tif": "Alo",
        "cloid": None,
    }
    order.update(extra)
    return order


def status(
    oid: int,
    status: str = "open",
    *,
    user: str = USER,
    time_ms: int = BASE_MS,
    **order: Any,
) -> Json:
    """An order-status event."""
    return {
        "time": node_time(time_ms),
        "user": user,
        "hash": None,
        "builder": None,
        "status": status,
        "order": order_obj(oid, **order),
    }


def new(
    oid: int,
    *,
    coin: str = "BTC",
    side: str | None = "B",
    px: str = "100.0",
    sz: str = "1.0",
    user: str = USER,
    before: int | None = None,
) -> Json:
    """A ``new`` raw book diff (``before`` sets ``insertBefore``)."""
    body: Json = {"sz": sz}
    if before is not None:
        body["insertBefore"] = before
    return _diff(oid, coin, side, px, user, {"new": body})


def update(
    oid: int,
    orig: str,
    new_sz: str,
    *,
    coin: str = "BTC",
    side: str | None = "B",
    px: str = "100.0",
    user: str = USER,
) -> Json:
    """An ``update`` raw book diff."""
    return _diff(oid, coin, side, px, user, {"update": {"origSz": orig, "newSz": new_sz}})


def remove(
    oid: int, *, coin: str = "BTC", side: str | None = "B", px: str = "100.0", user: str = USER
) -> Json:
    """A bare ``"remove"`` raw book diff."""
    return _diff(oid, coin, side, px, user, "remove")


def _diff(oid: int, coin: str, side: str | None, px: str, user: str, raw: Any) -> Json:
    event: Json = {"user": user, "oid": oid, "coin": coin}
    if side is not None:
        event["side"] = side
    event["px"] = px
    event["raw_book_diff"] = raw
    return event


def fill(
    user: str,
    tid: int,
    *,
    side: str,
    crossed: bool,
    coin: str = "BTC",
    px: str = "100.0",
    sz: str = "1.0",
    oid: int = 1,
    time: int = BASE_MS,
    **extra: Any,
) -> list[Any]:
    """A ``[user, fill]`` fill event."""
    body: Json = {
        "coin": coin,
        "px": px,
        "sz": sz,
        "side": side,
        "time": time,
        "startPosition": "0.0",
        "dir": "Open Long" if side == "B" else "Open Short",
        "closedPnl": "0.0",
        "hash": f"0x{tid:064x}",
        "oid": oid,
        "crossed": crossed,
        "fee": "0.01",
        "tid": tid,
        "feeToken": "USDC",
    }
    body.update(extra)
    return [user, body]


def line(height: int, events: Sequence[Any], *, block_ms: int | None = None) -> bytes:
    """One node line (any stream) for ``height``; the block time defaults from the height."""
    ms = BASE_MS + 70 * (height % 1_000_000) if block_ms is None else block_ms
    return orjson.dumps(
        {
            "local_time": node_time(ms + 370),
            "block_time": node_time(ms),
            "block_number": height,
            "events": list(events),
        }
    )


def block(
    height: int,
    statuses: Sequence[Json] = (),
    diffs: Sequence[Json] = (),
    fills: Sequence[list[Any]] = (),
) -> Block:
    """A :class:`Block` built by decoding node lines, as the joiner would hand it out."""
    status_line = decode_line(Stream.STATUSES, line(height, statuses))
    diff_line = decode_line(Stream.DIFFS, line(height, diffs))
    fill_line = decode_line(Stream.FILLS, line(height, fills))
    assert isinstance(status_line, StatusLine)
    assert isinstance(diff_line, DiffLine)
    assert isinstance(fill_line, FillLine)
    return Block(
        height,
        BASE_MS + 70 * (height % 1_000_000),
        status_line.events,
        diff_line.events,
        fill_line.events,
    )


# -- observing books ----------------------------------------------------------------------

LevelState = tuple[int, str, int, int, tuple[tuple[int, bytes], ...]]
BookState = dict[str, tuple[list[LevelState], list[LevelState]]]


def book_state(books: Books) -> BookState:
    """Everything about every coin's book as plain values (a deep copy).

    Per coin and side, best first: ``(px, px_str, total, n, ((oid, encoded order), …))``.
    """
    state: BookState = {}
    for coin in books.coins():
        book = books.book(coin)
        assert book is not None
        sides = tuple(
            [
                (
                    level.px,
                    level.px_str,
                    level.total,
                    len(level.oids),
                    tuple((oid, encode(book.index[oid])) for oid in level.oids),
                )
                for level in book.levels(side)
            ]
            for side in ("B", "A")
        )
        state[coin] = (sides[0], sides[1])
    return state


def index_state(books: Books, oids: Iterable[int]) -> dict[int, bytes | None]:
    """What :meth:`Books.order` says about each of ``oids`` (encoded, or ``None``)."""
    found: dict[int, bytes | None] = {}
    for oid in oids:
        order = books.order(oid)
        found[oid] = None if order is None else encode(order)
    return found
