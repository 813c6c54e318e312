"""Rows of the history database: from node objects, and back to official shapes.

Addresses, hashes and cloids are stored as bytes when they are the node's
lower-case ``0x…`` hex (20, 32 and 16 bytes instead of 42, 66 and 34
characters), and as text otherwise, so that every value reads back exactly
as the node wrote it. Prices and sizes stay the node's decimal strings.
"""

from collections.abc import Sequence
from typing import Any, Final

import msgspec
from msgspec import UNSET

from hlbook.book.trades import Trade
from hlbook.history.candles import Candle
from hlbook.node.formats import Fill, Order

__all__ = [
    "CANDLE_COLUMNS",
    "FILL_COLUMNS",
    "ORDER_COLUMNS",
    "TRADE_COLUMNS",
    "FinishedOrder",
    "candle_from_row",
    "candle_row",
    "fill_from_row",
    "fill_row",
    "order_from_row",
    "order_row",
    "order_user",
    "pack_hex",
    "trade_from_row",
    "trade_row",
    "unpack_hex",
]

_HEX_DIGITS: Final = frozenset("0123456789abcdef")
_json = msgspec.json.Encoder()
_unjson = msgspec.json.Decoder()


def pack_hex(text: str) -> bytes | str:
    """``"0xab…"`` (lower case, even length) → its bytes; anything else unchanged."""
    if len(text) > 2 and len(text) % 2 == 0 and text.startswith("0x"):
        digits = text[2:]
        if _HEX_DIGITS.issuperset(digits):
            return bytes.fromhex(digits)
    return text


def unpack_hex(value: bytes | str) -> str:
    """The inverse of :func:`pack_hex`."""
    return "0x" + value.hex() if isinstance(value, bytes) else value


class FinishedOrder(msgspec.Struct, frozen=True, gc=False):
    """A status the store keeps: who, which status, when (ms), the order as the node wrote it."""

    user: str
    status: str
    time: int
    order: Order


# -- fills -------------------------------------------------------------------

FILL_COLUMNS: Final = (
    "id, user, coin, px, sz, side, time, start_position, dir, closed_pnl, hash, oid, crossed, "
    "fee, tid, fee_token, twap_id, cloid, liquidation, builder_fee, deployer_fee"
)


def fill_row(key: int, user: str, fill: Fill) -> tuple[Any, ...]:
    """The ``fills`` row (in :data:`FILL_COLUMNS` order) of ``user``'s ``fill``."""
    liquidation = fill.liquidation
    return (
        key,
        pack_hex(user),
        fill.coin,
        fill.px,
        fill.sz,
        fill.side,
        fill.time,
        fill.startPosition,
        fill.dir,
        fill.closedPnl,
        pack_hex(fill.hash),
        fill.oid,
        fill.crossed,
        fill.fee,
        fill.tid,
        fill.feeToken,
        None if fill.twapId is UNSET else fill.twapId,
        None if fill.cloid is UNSET else pack_hex(fill.cloid),
        None if liquidation is UNSET or liquidation is None else _json.encode(liquidation).decode(),
        None if fill.builderFee is UNSET else fill.builderFee,
        None if fill.deployerFee is UNSET else fill.deployerFee,
    )


def fill_from_row(row: Sequence[Any]) -> dict[str, Any]:
    """The official fill object of a ``fills`` row (``row[0]`` is the key, ``row[1]`` the user).

    Key order and optional fields are those of
    :func:`hlbook.history.wire.fill_wire`.
    """
    out: dict[str, Any] = {
        "coin": row[2],
        "px": row[3],
        "sz": row[4],
        "side": row[5],
        "time": row[6],
        "startPosition": row[7],
        "dir": row[8],
        "closedPnl": row[9],
        "hash": unpack_hex(row[10]),
        "oid": row[11],
        "crossed": bool(row[12]),
        "fee": row[13],
        "tid": row[14],
    }
    if row[17] is not None:
        out["cloid"] = unpack_hex(row[17])
    if row[18] is not None:
        out["liquidation"] = _unjson.decode(row[18])
    if row[19] is not None:
        out["builderFee"] = row[19]
    if row[20] is not None:
        out["deployerFee"] = row[20]
    out["feeToken"] = row[15]
    out["twapId"] = row[16]
    return out


# -- finished orders ---------------------------------------------------------

ORDER_COLUMNS: Final = (
    "id, oid, user, cloid, status, status_time, coin, side, limit_px, sz, timestamp, orig_sz, "
    "trigger_condition, is_trigger, trigger_px, children, is_position_tpsl, reduce_only, "
    "order_type, tif"
)


def order_row(key: int, finished: FinishedOrder) -> tuple[Any, ...]:
    """The ``orders`` row (in :data:`ORDER_COLUMNS` order) of a finished order."""
    order = finished.order
    return (
        key,
        order.oid,
        pack_hex(finished.user),
        None if order.cloid is None else pack_hex(order.cloid),
        finished.status,
        finished.time,
        order.coin,
        order.side,
        order.limitPx,
        order.sz,
        order.timestamp,
        order.origSz,
        order.triggerCondition,
        order.isTrigger,
        order.triggerPx,
        _json.encode(order.children).decode() if order.children else None,
        order.isPositionTpsl,
        order.reduceOnly,
        order.orderType,
        order.tif,
    )


def order_from_row(row: Sequence[Any]) -> dict[str, Any]:
    """The official ``orderStatus`` answer of an ``orders`` row."""
    return {
        "status": "order",
        "order": {
            "order": {
                "coin": row[6],
                "side": row[7],
                "limitPx": row[8],
                "sz": row[9],
                "oid": row[1],
                "timestamp": row[10],
                "triggerCondition": row[12],
                "isTrigger": bool(row[13]),
                "triggerPx": row[14],
                "children": [] if row[15] is None else _unjson.decode(row[15]),
                "isPositionTpsl": bool(row[16]),
                "reduceOnly": bool(row[17]),
                "orderType": row[18],
                "origSz": row[11],
                "tif": row[19],
                "cloid": None if row[3] is None else unpack_hex(row[3]),
            },
            "status": row[4],
            "statusTimestamp": row[5],
        },
    }


def order_user(row: Sequence[Any]) -> str:
    """The user of an ``orders`` row."""
    return unpack_hex(row[2])


# -- trades ------------------------------------------------------------------

TRADE_COLUMNS: Final = "id, coin, side, px, sz, time, hash, tid, buyer, seller"


def trade_row(key: int, trade: Trade) -> tuple[Any, ...]:
    """The ``trades`` row (in :data:`TRADE_COLUMNS` order) of ``trade``."""
    buyer, seller = trade.users
    return (
        key,
        trade.coin,
        trade.side,
        trade.px,
        trade.sz,
        trade.time,
        pack_hex(trade.hash),
        trade.tid,
        pack_hex(buyer),
        pack_hex(seller),
    )


def trade_from_row(row: Sequence[Any]) -> Trade:
    """The :class:`~hlbook.book.trades.Trade` of a ``trades`` row."""
    return Trade(
        coin=row[1],
        side=row[2],
        px=row[3],
        sz=row[4],
        hash=unpack_hex(row[6]),
        time=row[5],
        tid=row[7],
        users=(unpack_hex(row[8]), unpack_hex(row[9])),
    )


# -- candles -----------------------------------------------------------------

CANDLE_COLUMNS: Final = "coin, interval, t, close_time, o, c, h, l, v, n"


def candle_row(candle: Candle) -> tuple[Any, ...]:
    """The ``candles`` row (in :data:`CANDLE_COLUMNS` order) of ``candle``."""
    return (
        candle.coin,
        candle.interval,
        candle.open_time,
        candle.close_time,
        candle.open,
        candle.close,
        candle.high,
        candle.low,
        candle.volume,
        candle.trades,
    )


def candle_from_row(row: Sequence[Any]) -> Candle:
    """The :class:`~hlbook.history.candles.Candle` of a ``candles`` row."""
    return Candle(
        open_time=row[2],
        close_time=row[3],
        coin=row[0],
        interval=row[1],
        open=row[4],
        close=row[5],
        high=row[6],
        low=row[7],
        volume=row[8],
        trades=row[9],
    )
