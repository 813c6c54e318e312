"""What the books keep per resting order, and the full order rebuilt from it.

A mainnet book holds ~10^6 resting orders, so their record is the bulk of
hlbook's memory. The node's order object has 17 fields, but eight of them
(trigger condition and price, order type, tif, the flags, the TP/SL children)
take a handful of distinct values across a whole book: :class:`Shape` holds
them once for every order that shares them. The oid is not stored (it is the
record's key in the books' index and in its level's queue), a cloid in its
usual form (``0x`` and 32 lower-case hex digits) is kept as an int (48 B
instead of an 88 B string), and TP/SL children as their encoded bytes instead
of decoded dicts. :func:`full_order` rebuilds the node's :class:`Order` —
byte for byte what the books held before this record existed — when an
``l4Book`` snapshot, an ``openOrders`` answer or an ``orderStatus`` is built.
"""

from typing import Any

import msgspec

from hlbook.node.formats import Order

__all__ = ["Resting", "Shape", "full_order", "pack_cloid", "shape_of", "unpack_cloid"]


class Shape(msgspec.Struct, frozen=True, gc=False):
    """The details of an order that many orders share (one object for all of them)."""

    triggerCondition: str = "N/A"
    isTrigger: bool = False
    triggerPx: str = "0.0"
    children: bytes | None = None
    """The TP/SL children as encoded JSON (``None``: no children)."""
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
    side: str
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

# Bounded: shapes without children take a few dozen values on mainnet.
_SHAPE_LIMIT = 4096
_shapes: dict[tuple[Any, ...], Shape] = {}


def shape_of(order: Order) -> Shape:
    """The shared :class:`Shape` of ``order``'s details."""
    children = order.children
    if children:
        # TP/SL children differ per order: their own shape, not shared.
        return Shape(
            order.triggerCondition,
            order.isTrigger,
            order.triggerPx,
            _encoder.encode(children),
            order.isPositionTpsl,
            order.reduceOnly,
            order.orderType,
            order.tif,
        )
    key = (
        order.triggerCondition,
        order.isTrigger,
        order.triggerPx,
        order.isPositionTpsl,
        order.reduceOnly,
        order.orderType,
        order.tif,
    )
    found = _shapes.get(key)
    if found is None:
        if len(_shapes) >= _SHAPE_LIMIT:
            _shapes.clear()
        found = _shapes[key] = Shape(key[0], key[1], key[2], None, key[3], key[4], key[5], key[6])
    return found


def full_order(oid: int, record: Resting) -> Order:
    """The node's order object for the resting order ``oid`` (a new object)."""
    shape = record.shape
    children = shape.children
    return Order(
        user=record.user,
        coin=record.coin,
        side=record.side,
        limitPx=record.limitPx,
        sz=record.sz,
        oid=oid,
        timestamp=record.timestamp,
        triggerCondition=shape.triggerCondition,
        isTrigger=shape.isTrigger,
        triggerPx=shape.triggerPx,
        children=() if children is None else _children_decoder.decode(children),
        isPositionTpsl=shape.isPositionTpsl,
        reduceOnly=shape.reduceOnly,
        orderType=shape.orderType,
        origSz=record.origSz,
        tif=shape.tif,
        cloid=unpack_cloid(record.cloid),
    )
