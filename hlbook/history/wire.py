"""The official response shapes for fills and orders, and ``aggregateByTime``.

Shapes follow the public API as the SDKs type it (``@nktkas/hyperliquid``'s
``UserFill``, ``FrontendOpenOrder`` and ``OrderStatusResponse``; the Python
SDK's ``Info``):

* a fill is the node's own fill object (``coin px sz side time startPosition
  dir closedPnl hash oid crossed fee tid feeToken twapId`` and, when the node
  wrote them, ``cloid liquidation builderFee deployerFee``); ``twapId`` is
  always present (``null`` when absent);
* ``orderStatus`` answers ``{"status":"order","order":{"order":<frontend
  order>,"status":S,"statusTimestamp":ms}}`` or ``{"status":"unknownOid"}``.

Which statuses the store keeps (:func:`is_recorded`): every status that is
neither a rejection nor ``open`` — ``filled``, ``canceled`` and every
``…Canceled`` kind, ``scheduledCancel``, ``internalCancel``, ``triggered``
and kinds the node adds later — because these are final (or, ``triggered``,
the last word before the order rests in the book or fills) and the book can no
longer answer for them. ``open`` is the book's to answer, except for trigger
orders (``isTrigger``): they wait outside the book (the node's snapshot has
none), so their ``open`` status is kept too. Rejections (``rejected`` and
every ``…Rejected``) are ≈95% of all statuses on mainnet; keeping them would
multiply the store's size many times, so ``orderStatus`` of a rejected order
is ``unknownOid`` here while the public API reports the rejection.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from msgspec import UNSET

from hlbook.node.formats import Fill, Order
from hlbook.numbers import SCALE_DIGITS, fmt, parse

__all__ = [
    "AGGREGATE_PX_DECIMALS",
    "aggregate_by_time",
    "fill_wire",
    "is_recorded",
    "is_rejection",
    "open_order_wire",
    "order_status_wire",
    "order_wire",
    "unknown_oid",
]

AGGREGATE_PX_DECIMALS: Final = 8
"""Decimals of an aggregated fill's average price (Hyperliquid prices have at most 8)."""

_kinds: dict[str, bool] = {}


def is_rejection(status: str) -> bool:
    """``rejected`` and every ``…Rejected`` status (cached per distinct string)."""
    found = _kinds.get(status)
    if found is None:
        found = status == "rejected" or status.endswith("Rejected")
        if len(_kinds) < 4096:
            _kinds[status] = found
    return found


def is_recorded(status: str, order: Order) -> bool:
    """True for the statuses the history store keeps (see the module docstring)."""
    if status == "open":
        return order.isTrigger
    return not is_rejection(status)


def unknown_oid() -> dict[str, Any]:
    """The official answer for an order that is not known: ``{"status": "unknownOid"}``."""
    return {"status": "unknownOid"}


def order_wire(order: Order) -> dict[str, Any]:
    """A node order as the official frontend order object (without ``user``)."""
    return {
        "coin": order.coin,
        "side": order.side,
        "limitPx": order.limitPx,
        "sz": order.sz,
        "oid": order.oid,
        "timestamp": order.timestamp,
        "triggerCondition": order.triggerCondition,
        "isTrigger": order.isTrigger,
        "triggerPx": order.triggerPx,
        "children": list(order.children),
        "isPositionTpsl": order.isPositionTpsl,
        "reduceOnly": order.reduceOnly,
        "orderType": order.orderType,
        "origSz": order.origSz,
        "tif": order.tif,
        "cloid": order.cloid,
    }


def open_order_wire(order: Order) -> dict[str, Any]:
    """A node order as the official ``openOrders`` element (and the order of an
    ``orderUpdates`` entry): ``cloid`` only when set, ``reduceOnly`` only when true."""
    out: dict[str, Any] = {
        "coin": order.coin,
        "side": order.side,
        "limitPx": order.limitPx,
        "sz": order.sz,
        "oid": order.oid,
        "timestamp": order.timestamp,
        "origSz": order.origSz,
    }
    if order.cloid is not None:
        out["cloid"] = order.cloid
    if order.reduceOnly:
        out["reduceOnly"] = True
    return out


def order_status_wire(order: Order, status: str, status_timestamp: int) -> dict[str, Any]:
    """The official ``orderStatus`` answer for ``order`` with ``status`` since ``status_timestamp``.

    For a resting order from the book, pass ``"open"`` and its status time.
    """
    return {
        "status": "order",
        "order": {
            "order": order_wire(order),
            "status": status,
            "statusTimestamp": status_timestamp,
        },
    }


def fill_wire(fill: Fill) -> dict[str, Any]:
    """A node fill as the official ``userFills`` element."""
    out: dict[str, Any] = {
        "coin": fill.coin,
        "px": fill.px,
        "sz": fill.sz,
        "side": fill.side,
        "time": fill.time,
        "startPosition": fill.startPosition,
        "dir": fill.dir,
        "closedPnl": fill.closedPnl,
        "hash": fill.hash,
        "oid": fill.oid,
        "crossed": fill.crossed,
        "fee": fill.fee,
        "tid": fill.tid,
    }
    if fill.cloid is not UNSET:
        out["cloid"] = fill.cloid
    if fill.liquidation is not UNSET and fill.liquidation is not None:
        out["liquidation"] = fill.liquidation
    if fill.builderFee is not UNSET:
        out["builderFee"] = fill.builderFee
    if fill.deployerFee is not UNSET:
        out["deployerFee"] = fill.deployerFee
    out["feeToken"] = fill.feeToken
    out["twapId"] = None if fill.twapId is UNSET else fill.twapId
    return out


# -- aggregateByTime ---------------------------------------------------------

_GROUP_KEYS: Final = ("coin", "oid", "time", "side", "dir", "hash", "feeToken", "twapId")
_SUMMED: Final = ("fee", "closedPnl", "builderFee", "deployerFee")
_PX_UNIT: Final = 10 ** (SCALE_DIGITS - AGGREGATE_PX_DECIMALS)


def _same_group(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return bool(a["crossed"]) and all(a.get(key) == b.get(key) for key in _GROUP_KEYS)


def _average_px(fills: Sequence[Mapping[str, Any]], total_sz: int) -> str:
    prices = {fill["px"] for fill in fills}
    if len(prices) == 1:
        return str(next(iter(prices)))
    notional = sum(parse(fill["px"]) * parse(fill["sz"]) for fill in fills)
    # The average in scaled units is notional / total_sz; round half-even to the unit.
    quotient, remainder = divmod(notional, total_sz * _PX_UNIT)
    twice = 2 * remainder
    if twice > total_sz * _PX_UNIT or (twice == total_sz * _PX_UNIT and quotient % 2):
        quotient += 1
    return fmt(quotient * _PX_UNIT)


def _merge(group: Sequence[Mapping[str, Any]], *, newest_first: bool) -> dict[str, Any]:
    earliest = group[-1] if newest_first else group[0]
    merged = dict(earliest)
    total_sz = sum(parse(fill["sz"]) for fill in group)
    merged["sz"] = fmt(total_sz)
    merged["px"] = _average_px(group, total_sz)
    for key in _SUMMED:
        values = [fill[key] for fill in group if key in fill]
        if values:
            merged[key] = fmt(sum(parse(value) for value in values))
    return merged


def aggregate_by_time(
    fills: Iterable[dict[str, Any]], *, newest_first: bool, limit: int | None = None
) -> list[dict[str, Any]]:
    """Combine the partial fills of one crossing order, as ``aggregateByTime: true`` does.

    "When true, partial fills are combined when a crossing order gets filled
    by multiple different resting orders. Resting orders filled by multiple
    crossing orders will not be aggregated." (the official SDK's docstring).

    Consecutive fills (in either time order, ``newest_first`` says which) of
    the same taker order (``crossed``, same oid, coin, time, side, dir, hash,
    fee token, twap) become one: ``sz``, ``fee``, ``closedPnl``,
    ``builderFee`` and ``deployerFee`` are summed exactly, ``px`` is the
    size-weighted average rounded half-even to :data:`AGGREGATE_PX_DECIMALS`,
    ``startPosition``, ``tid`` and the rest come from the group's earliest
    fill. Maker fills are never combined.

    Fills that are not combined are returned as given (not copied). With
    ``limit``, at most ``limit`` fills are returned, each complete: the
    input is consumed only until the fill after the last one returned starts
    (so ``fills`` may be a lazy, paged iterator).
    """
    groups: list[list[dict[str, Any]]] = []
    for fill in fills:
        if groups and fill["crossed"] and _same_group(groups[-1][0], fill):
            groups[-1].append(fill)
            continue
        if limit is not None and len(groups) == limit:
            break
        groups.append([fill])
    return [
        _merge(group, newest_first=newest_first) if len(group) > 1 else group[0] for group in groups
    ]
