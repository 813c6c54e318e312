"""What the books keep per resting order, and the full order rebuilt from it.

A mainnet book holds ~10^6 resting orders, so their record is the bulk of
hlbook's memory. The node's order object has 17 fields, but eight of them
(trigger condition and price, order type, tif, the flags, the TP/SL children)
take a handful of distinct values across a whole book: :class:`Shape` holds
them (and the side) once for every order that shares them; the record has 8
fields, 80 B (9 would take 96: allocations come in steps of 16 B). The oid is not stored (it is the
record's key in the books' index and in its level's queue), a cloid in its
usual form (``0x`` and 32 lower-case hex digits) is kept as an int (48 B
instead of an 88 B string), and TP/SL children as their JSON deflated against
a template child (~85 B instead of ~1 kB of decoded dicts).
:func:`full_order` rebuilds the node's :class:`Order` — byte for byte what
the books held before this record existed — when an ``l4Book`` snapshot, an
``openOrders`` answer or an ``orderStatus`` is built.
"""

import zlib
from typing import Any, Final

import msgspec

from hlbook.node.formats import Order

__all__ = [
    "Resting",
    "Shape",
    "full_order",
    "pack_cloid",
    "shape_of",
    "shared_shapes",
    "unpack_cloid",
]


class Shape(msgspec.Struct, frozen=True, gc=False):
    """The side and details of an order that many orders share (one object for all)."""

    side: str
    triggerCondition: str = "N/A"
    isTrigger: bool = False
    triggerPx: str = "0.0"
    children: bytes | None = None
    """The TP/SL children as deflated JSON (``None``: no children; see :func:`full_order`)."""
    isPositionTpsl: bool = False
    reduceOnly: bool = False
    orderType: str = "Limit"
    tif: str | None = None


class Resting(msgspec.Struct, gc=False):
    """One resting order as the books keep it (its oid is its key).

    Not GC-tracked: it holds only strings, ints and a :class:`Shape`, so it
    can be in no reference cycle, and the collector never walks a book.
    """

    user: str
    coin: str
    limitPx: str
    sz: str
    timestamp: int
    origSz: str
    cloid: str | int | None
    """See :func:`pack_cloid`."""
    shape: Shape


def pack_cloid(cloid: str | None) -> str | int | None:
    """A cloid as stored: an int when it is ``0x`` and 32 lower-case hex digits."""
    if cloid is not None and len(cloid) == 34:
        try:
            value = int(cloid, 16)
        except ValueError:
            return cloid
        if f"0x{value:032x}" == cloid:  # exactly its own spelling (not 0X, A-F, _ or spaces)
            return value
    return cloid


def unpack_cloid(cloid: str | int | None) -> str | None:
    """The cloid as the node wrote it (the inverse of :func:`pack_cloid`)."""
    if cloid.__class__ is int:
        return f"0x{cloid:032x}"
    return cloid  # type: ignore[return-value]


_encoder = msgspec.json.Encoder()
_children_decoder = msgspec.json.Decoder(tuple[Any, ...])

# TP/SL children are 6% of mainnet BTC's orders but were a third of their bytes:
# deflated against a typical pair of children they take ~85 B instead of ~410.
_CHILDREN_TEMPLATE: Final = _encoder.encode(
    [
        {
            "coin": "BTC",
            "side": side,
            "limitPx": "",
            "sz": "0.000",
            "oid": 41201,
            "timestamp": 17780016,
            "triggerCondition": f"Price {where} ",
            "isTrigger": True,
            "triggerPx": ".0",
            "children": [],
            "isPositionTpsl": False,
            "reduceOnly": True,
            "orderType": kind,
            "origSz": "0.000",
            "tif": None,
            "cloid": cloid,
        }
        for side, where, kind, cloid in (
            ("A", "below", "Stop Market", None),
            ("B", "above", "Take Profit Market", "0x"),
        )
    ]
)


def _pack_children(children: tuple[Any, ...]) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _CHILDREN_TEMPLATE)
    return packer.compress(_encoder.encode(children)) + packer.flush()


def _unpack_children(packed: bytes) -> tuple[Any, ...]:
    unpacker = zlib.decompressobj(-15, zdict=_CHILDREN_TEMPLATE)
    children: tuple[Any, ...] = _children_decoder.decode(
        unpacker.decompress(packed) + unpacker.flush()
    )
    return children


# Bounded: shapes without children take a few dozen values on mainnet.
_SHAPE_LIMIT = 4096
shared_shapes: dict[tuple[Any, ...], Shape] = {}
"""The shared shapes by ``(side, triggerCondition, isTrigger, triggerPx, isPositionTpsl,
reduceOnly, orderType, tif)``: read only, for loops that inline :func:`shape_of`."""


def shape_of(order: Order, side: str) -> Shape:
    """The shared :class:`Shape` of ``order``'s details, resting on ``side``."""
    children = order.children
    if children:
        # TP/SL children differ per order: their own shape, not shared.
        return Shape(
            side,
            order.triggerCondition,
            order.isTrigger,
            order.triggerPx,
            _pack_children(children),
            order.isPositionTpsl,
            order.reduceOnly,
            order.orderType,
            order.tif,
        )
    key = (
        side,
        order.triggerCondition,
        order.isTrigger,
        order.triggerPx,
        order.isPositionTpsl,
        order.reduceOnly,
        order.orderType,
        order.tif,
    )
    found = shared_shapes.get(key)
    if found is None:
        if len(shared_shapes) >= _SHAPE_LIMIT:
            shared_shapes.clear()
        found = shared_shapes[key] = Shape(
            key[0], key[1], key[2], key[3], None, key[4], key[5], key[6], key[7]
        )
    return found


def full_order(oid: int, record: Resting) -> Order:
    """The node's order object for the resting order ``oid`` (a new object)."""
    shape = record.shape
    children = shape.children
    return Order(
        user=record.user,
        coin=record.coin,
        side=shape.side,
        limitPx=record.limitPx,
        sz=record.sz,
        oid=oid,
        timestamp=record.timestamp,
        triggerCondition=shape.triggerCondition,
        isTrigger=shape.isTrigger,
        triggerPx=shape.triggerPx,
        children=() if children is None else _unpack_children(children),
        isPositionTpsl=shape.isPositionTpsl,
        reduceOnly=shape.reduceOnly,
        orderType=shape.orderType,
        origSz=record.origSz,
        tif=shape.tif,
        cloid=unpack_cloid(record.cloid),
    )
