"""The node's line and event formats, and the one converter at the edge.

Node lines are decoded straight into ``msgspec`` Structs declared with
``gc=False``: the node writes ~1,100 events per block, and plain dicts would
put millions of short-lived objects in front of the cyclic garbage collector
(we measured full collections costing several ms per block; see
``benchmarks/decode.py``). The Structs hold no reference cycles, so opting
them out of GC tracking is safe.

Everything the rest of hlbook needs from a line is validated here, once:
numbers parse exactly, sides are normalised to ``"A"``/``"B"``, each diff is
exactly one of new/update/remove. A line that fails raises
:class:`~hlbook.errors.NodeFormatError` naming the stream, the block (when it
could be read) and the reason. Unknown fields are ignored; unknown statuses
are kept (they are forwarded to ``l4Book`` subscribers) but never interpreted.
"""

import enum
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

import msgspec
from msgspec import UNSET, UnsetType

from hlbook.errors import NodeFormatError, SnapshotError
from hlbook.numbers import PARSED, NumberError, parse

__all__ = [
    "AnyLine",
    "DiffEvent",
    "DiffLine",
    "Fill",
    "FillEvent",
    "FillLine",
    "Layout",
    "NewDiff",
    "Order",
    "RawDiff",
    "StatusEvent",
    "StatusLine",
    "Stream",
    "UpdateDiff",
    "decode_line",
    "decode_snapshot",
    "encode",
    "encode_snapshot",
    "iter_snapshot",
    "line_height",
    "line_time",
    "normalize_side",
    "status_event",
    "time_ms",
]


class Stream(enum.Enum):
    """The node's three output streams; the value is the directory stem."""

    STATUSES = "order_statuses"
    DIFFS = "raw_book_diffs"
    FILLS = "fills"

    def dirname(self, layout: "Layout") -> str:
        """The stream's directory under the node's data root for ``layout``."""
        return f"node_{self.value}_{layout.value}"


class Layout(enum.Enum):
    """How the node groups events into lines."""

    BY_BLOCK = "by_block"
    """``--batch-by-block``: one line per block per stream, empty blocks included."""
    STREAMING = "streaming"
    """``--stream-with-block-info``: lines of events, heights skip for empty blocks."""


# -- events ------------------------------------------------------------------


class Order(msgspec.Struct, kw_only=True, gc=False):
    """An order as the node writes it (in statuses and snapshots).

    ``user`` is not part of the node's order object; it is set on orders that
    rest in an hlbook book so that ``l4Book`` snapshots carry the owner, as the
    reference server does. While it is ``UNSET`` it is not encoded.
    """

    user: str | UnsetType = UNSET
    coin: str
    side: str
    limitPx: str
    sz: str
    oid: int
    timestamp: int
    triggerCondition: str = "N/A"
    isTrigger: bool = False
    triggerPx: str = "0.0"
    children: tuple[Any, ...] = ()
    isPositionTpsl: bool = False
    reduceOnly: bool = False
    orderType: str = "Limit"
    origSz: str = "0.0"
    tif: str | None = None
    cloid: str | None = None


class StatusEvent(msgspec.Struct, kw_only=True, gc=False):
    """One order-status event (``open``, ``filled``, ``badAloPxRejected``, …).

    ``order`` is kept as the node wrote it (:class:`msgspec.Raw`): most
    statuses are rejections whose order nobody reads, and ``l4Book`` forwards
    the bytes verbatim. :meth:`parsed_order` decodes it when needed (the
    ``open``/``triggered`` statuses of new resting orders). Build events with
    :func:`status_event`.
    """

    time: str
    user: str
    hash: str | None = None
    builder: Any = None
    status: str
    order: msgspec.Raw

    def parsed_order(self) -> Order:
        """The order, decoded (a new object on each call)."""
        order: Order = _ORDER_DECODER.decode(self.order)
        return order

    def coin(self) -> str:
        """The order's coin, decoding nothing else."""
        return _ORDER_COIN_DECODER.decode(self.order).coin


class _OrderCoin(msgspec.Struct, gc=False):
    coin: str


_ORDER_DECODER = msgspec.json.Decoder(Order)
_ORDER_COIN_DECODER = msgspec.json.Decoder(_OrderCoin)


def status_event(
    *,
    time: str,
    user: str,
    status: str,
    order: Order,
    hash: str | None = None,
    builder: Any = None,
) -> StatusEvent:
    """A :class:`StatusEvent` for ``order`` (encoded as the node writes it)."""
    return StatusEvent(
        time=time,
        user=user,
        hash=hash,
        builder=builder,
        status=status,
        order=msgspec.Raw(_ENCODER.encode(order)),
    )


class NewDiff(msgspec.Struct, kw_only=True, gc=False):
    """``{"new": {...}}``: the order now rests with size ``sz``."""

    sz: str
    insertBefore: int | UnsetType | None = UNSET


class UpdateDiff(msgspec.Struct, kw_only=True, gc=False):
    """``{"update": {...}}``: the resting order's size went from ``origSz`` to ``newSz``."""

    origSz: str
    newSz: str


class RawDiff(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """The object form of ``raw_book_diff``; exactly one field is set."""

    new: NewDiff | UnsetType = UNSET
    update: UpdateDiff | UnsetType = UNSET


class DiffEvent(msgspec.Struct, kw_only=True, gc=False):
    """One raw book diff. ``raw_book_diff`` is a :class:`RawDiff` or ``"remove"``."""

    user: str
    oid: int
    coin: str
    side: str | UnsetType = UNSET
    px: str
    raw_book_diff: Literal["remove"] | RawDiff


class Fill(msgspec.Struct, kw_only=True, gc=False):
    """One side of a trade, as in the node's fill stream."""

    coin: str
    px: str
    sz: str
    side: str
    time: int
    startPosition: str = "0.0"
    dir: str = ""
    closedPnl: str = "0.0"
    hash: str = ""
    oid: int
    crossed: bool
    fee: str = "0.0"
    tid: int
    cloid: str | UnsetType = UNSET
    liquidation: Any = UNSET
    builderFee: str | UnsetType = UNSET
    deployerFee: str | UnsetType = UNSET
    feeToken: str = "USDC"
    twapId: int | UnsetType | None = UNSET


FillEvent: TypeAlias = tuple[str, Fill]
"""``[user, fill]`` as written by the node."""


# -- lines -------------------------------------------------------------------


class StatusLine(msgspec.Struct, kw_only=True, gc=False):
    """A line of the order-status stream."""

    local_time: str = ""
    block_time: str
    block_number: int
    events: list[StatusEvent]


class DiffLine(msgspec.Struct, kw_only=True, gc=False):
    """A line of the raw-book-diff stream."""

    local_time: str = ""
    block_time: str
    block_number: int
    events: list[DiffEvent]


class FillLine(msgspec.Struct, kw_only=True, gc=False):
    """A line of the fill stream."""

    local_time: str = ""
    block_time: str
    block_number: int
    events: list[FillEvent]


AnyLine: TypeAlias = StatusLine | DiffLine | FillLine


class _Height(msgspec.Struct):
    block_number: int


class _Head(msgspec.Struct):
    block_number: int
    block_time: str


_DECODERS: dict[Stream, msgspec.json.Decoder[Any]] = {
    Stream.STATUSES: msgspec.json.Decoder(StatusLine),
    Stream.DIFFS: msgspec.json.Decoder(DiffLine),
    Stream.FILLS: msgspec.json.Decoder(FillLine),
}
_HEIGHT_DECODER = msgspec.json.Decoder(_Height)
_HEAD_DECODER = msgspec.json.Decoder(_Head)
_HEIGHT_TEXT = re.compile(rb'"block_number"\s*:\s*([0-9]+)\s*[,}]')
_ENCODER = msgspec.json.Encoder()

_SIDES = {"A": "A", "B": "B", "Ask": "A", "Bid": "B"}
_BOOK_STATUSES = frozenset({"open", "triggered"})


def normalize_side(side: str | UnsetType | None) -> str | None:
    """``"A"``/``"Ask"`` → ``"A"``, ``"B"``/``"Bid"`` → ``"B"``, absent → ``None``.

    Raises ``ValueError`` for anything else.
    """
    if side is UNSET or side is None:
        return None
    try:
        return _SIDES[side]
    except (KeyError, TypeError):
        raise ValueError(f"unknown side {side!r}") from None


_second_cache: dict[str, int] = {}


def time_ms(text: str) -> int:
    """Node time (naive UTC, nanoseconds) → integer milliseconds since the epoch."""
    head = text[:19]
    base = _second_cache.get(head)
    if base is None:
        try:
            stamp = datetime.fromisoformat(head).replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(f"bad time {text!r}") from None
        base = int(stamp.timestamp()) * 1000
        if len(_second_cache) > 4096:
            _second_cache.clear()
        _second_cache[head] = base
    if len(text) <= 20:
        if len(text) == 19:
            return base
        raise ValueError(f"bad time {text!r}")
    digits = text[20:]
    # isdigit() alone would accept other scripts' digits; every digit must be ASCII.
    if text[19] != "." or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"bad time {text!r}")
    return base + int(digits[:3].ljust(3, "0"))


def _check_statuses(line: StatusLine) -> None:
    for event in line.events:
        if event.status in _BOOK_STATUSES:
            # The statuses that put orders on the book are read later: check them now.
            try:
                order = event.parsed_order()
            except msgspec.DecodeError as exc:
                raise ValueError(f"{event.status} status: {exc}") from None
            if normalize_side(order.side) is None:
                raise ValueError(f"order {order.oid} has no side")
            parse(order.limitPx)
            parse(order.sz)
            time_ms(event.time)


def _check_diffs(line: DiffLine) -> None:
    # On the way to every l2Book (~400 diffs a mainnet block): names bound locally,
    # numbers looked up in parse's cache first. The same checks as normalize_side and
    # parse; a "remove" is the only string msgspec lets through (a Literal).
    sides = _SIDES
    known = PARSED
    for event in line.events:
        side = event.side
        if side is not UNSET:
            normal = sides.get(side)
            if normal is None:
                raise ValueError(f"unknown side {side!r}")
            if normal is not side:
                event.side = normal
        if event.px not in known:
            parse(event.px)
        raw = event.raw_book_diff
        if raw.__class__ is str:
            continue
        assert isinstance(raw, RawDiff)
        new, update = raw.new, raw.update
        if new is not UNSET and update is UNSET:
            if new.sz not in known:
                parse(new.sz)
        elif update is not UNSET and new is UNSET:
            if update.origSz not in known:
                parse(update.origSz)
            if update.newSz not in known:
                parse(update.newSz)
        else:
            raise ValueError(f"unknown diff kind for oid {event.oid}: {_ENCODER.encode(raw)!r}")


def _check_fills(line: FillLine) -> None:
    for _user, fill in line.events:
        side = normalize_side(fill.side)
        if side is None:
            raise ValueError(f"fill tid {fill.tid} has no side")
        fill.side = side
        parse(fill.px)
        parse(fill.sz)


_CHECKS: dict[Stream, Any] = {
    Stream.STATUSES: _check_statuses,
    Stream.DIFFS: _check_diffs,
    Stream.FILLS: _check_fills,
}


def decode_line(stream: Stream, data: bytes | str, *, where: str | None = None) -> AnyLine:
    """Decode and validate one node line of ``stream``.

    Returns a :class:`StatusLine`, :class:`DiffLine` or :class:`FillLine`.
    Raises :class:`NodeFormatError` for anything malformed.
    """
    try:
        line = _DECODERS[stream].decode(data)
    except msgspec.DecodeError as exc:
        raise NodeFormatError(
            stream.value, str(exc), block=line_height(data), where=where
        ) from None
    try:
        _CHECKS[stream](line)
        time_ms(line.block_time)
    except (ValueError, AssertionError) as exc:  # NumberError is a ValueError
        raise NodeFormatError(
            stream.value, str(exc), block=line.block_number, where=where
        ) from None
    return line  # type: ignore[no-any-return]


def line_height(data: bytes | str) -> int | None:
    """The ``block_number`` of a node line, even a truncated one; ``None`` if not found."""
    try:
        return _HEIGHT_DECODER.decode(data).block_number
    except msgspec.DecodeError:
        pass
    # Not valid JSON (typically a truncated line): the height is near the start.
    head = data[:512].encode() if isinstance(data, str) else data[:512]
    match = _HEIGHT_TEXT.search(head)
    return int(match.group(1)) if match else None


def line_time(data: bytes | str) -> int | None:
    """The block time (ms) of a whole node line; ``None`` if it has none that parses."""
    try:
        return time_ms(_HEAD_DECODER.decode(data).block_time)
    except (msgspec.DecodeError, ValueError):
        return None


def encode(obj: Any) -> bytes:
    """Encode node structs (lines, events, orders) as compact JSON."""
    return _ENCODER.encode(obj)


# -- snapshots ---------------------------------------------------------------

SnapshotSide: TypeAlias = list[tuple[str, Order]]
"""One side of a coin in a snapshot: ``[user, order]`` pairs, best first, queue order."""

_COIN_DECODER = msgspec.json.Decoder(tuple[SnapshotSide, SnapshotSide])
_WITH_HEIGHT = msgspec.json.Decoder(tuple[int, list[tuple[str, msgspec.Raw]]])
_WITHOUT_HEIGHT = msgspec.json.Decoder(list[tuple[str, msgspec.Raw]])


def iter_snapshot(
    data: bytes, height: int | None = None
) -> tuple[int, list[tuple[str, msgspec.Raw]]]:
    """Split a ``fileSnapshot`` output into its height and per-coin raw parts.

    Accepts ``[height, [[coin, [bids, asks]], …]]`` and, when ``height`` is
    given, the height-less ``[[coin, [bids, asks]], …]``. Decoding each coin is
    left to :func:`decode_snapshot_coin` so that callers can report progress.
    """
    try:
        found, coins = _WITH_HEIGHT.decode(data)
    except msgspec.DecodeError as first:
        if height is None:
            raise SnapshotError(f"not a snapshot with height: {first}") from None
        try:
            return height, _WITHOUT_HEIGHT.decode(data)
        except msgspec.DecodeError as exc:
            raise SnapshotError(f"not a snapshot: {exc}") from None
    if height is not None and height != found:
        raise SnapshotError(f"snapshot is at height {found}, expected {height}")
    return found, coins


def decode_snapshot_coin(coin: str, raw: msgspec.Raw) -> tuple[SnapshotSide, SnapshotSide]:
    """Decode one coin's ``[bids, asks]`` from :func:`iter_snapshot`."""
    try:
        bids, asks = _COIN_DECODER.decode(raw)
        for side, entries in (("B", bids), ("A", asks)):
            for _user, order in entries:
                got = normalize_side(order.side)
                if got != side:
                    raise ValueError(f"order {order.oid} with side {order.side!r} among {side}")
                order.side = got
                parse(order.limitPx)
                parse(order.sz)
    except (msgspec.DecodeError, ValueError, NumberError) as exc:
        raise SnapshotError(f"coin {coin}: {exc}") from None
    return bids, asks


_COIN_RAW_DECODER = msgspec.json.Decoder(tuple[list[msgspec.Raw], list[msgspec.Raw]])
_ENTRY_DECODER = msgspec.json.Decoder(tuple[str, Order])

LazySide: TypeAlias = Iterator[tuple[str, Order]]
"""One side of a coin, decoding each order only when it is reached."""


def _lazy_side(coin: str, side: str, entries: list[msgspec.Raw]) -> LazySide:
    for raw in entries:
        try:
            user, order = _ENTRY_DECODER.decode(raw)
            if normalize_side(order.side) != side:
                raise ValueError(f"order {order.oid} with side {order.side!r} among {side}")
            order.side = side
        except (msgspec.DecodeError, ValueError) as exc:
            raise SnapshotError(f"coin {coin}: {exc}") from None
        yield user, order


def decode_snapshot_coin_lazily(coin: str, raw: msgspec.Raw) -> tuple[LazySide, LazySide]:
    """Like :func:`decode_snapshot_coin`, decoding one order at a time as it is consumed.

    Loading a book this way lets the strings it discards (replaced by shared
    ones) be reused for the next order instead of fragmenting memory. Prices
    and sizes are not checked here: the consumer parses them anyway.
    """
    try:
        bids, asks = _COIN_RAW_DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"coin {coin}: {exc}") from None
    return _lazy_side(coin, "B", bids), _lazy_side(coin, "A", asks)


def decode_snapshot_coin_unchecked(
    coin: str, raw: msgspec.Raw
) -> tuple[SnapshotSide, SnapshotSide]:
    """Like :func:`decode_snapshot_coin`, leaving sides, prices and sizes unchecked.

    For a consumer that checks them anyway (:meth:`~hlbook.book.books.Books.set_coin`):
    one decode per coin is ~3x cheaper than one per order.
    """
    try:
        return _COIN_DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"coin {coin}: {exc}") from None


_SIDE_DECODER = msgspec.json.Decoder(SnapshotSide)
_CHUNK = 256


def _chunked_side(coin: str, entries: list[msgspec.Raw]) -> LazySide:
    for start in range(0, len(entries), _CHUNK):
        try:
            part = _SIDE_DECODER.decode(b"[" + b",".join(entries[start : start + _CHUNK]) + b"]")
        except msgspec.DecodeError as exc:
            raise SnapshotError(f"coin {coin}: {exc}") from None
        yield from part


def decode_snapshot_coin_chunked(coin: str, raw: msgspec.Raw) -> tuple[LazySide, LazySide]:
    """Like :func:`decode_snapshot_coin_unchecked`, decoding 256 orders at a time as
    they are consumed.

    For big coins: one decode per order is slow, and one for the whole coin
    leaves its transient orders interleaved with what the consumer keeps
    (fragmenting memory); each chunk's garbage is reused by the next.
    """
    try:
        bids, asks = _COIN_RAW_DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"coin {coin}: {exc}") from None
    return _chunked_side(coin, bids), _chunked_side(coin, asks)


def decode_snapshot(
    data: bytes, height: int | None = None
) -> tuple[int, Iterator[tuple[str, SnapshotSide, SnapshotSide]]]:
    """Decode a whole snapshot: its height and an iterator of ``(coin, bids, asks)``."""
    found, coins = iter_snapshot(data, height)

    def _coins() -> Iterator[tuple[str, SnapshotSide, SnapshotSide]]:
        for coin, raw in coins:
            bids, asks = decode_snapshot_coin(coin, raw)
            yield coin, bids, asks

    return found, _coins()


def encode_snapshot(
    height: int | None, coins: Iterable[tuple[str, SnapshotSide, SnapshotSide]]
) -> bytes:
    """Encode books in the node's ``fileSnapshot`` format (height included unless ``None``)."""
    body = [(coin, (bids, asks)) for coin, bids, asks in coins]
    if height is None:
        return _ENCODER.encode(body)
    return _ENCODER.encode((height, body))
