"""Validating the info requests the history store answers, and the official limits.

Each ``parse_*`` function takes the request body as a client sent it (the
JSON object with ``"type"``; extra keys are ignored, as the public API does)
and returns a typed request, or raises :class:`HistoryRequestError` naming the
request type, the field and what is wrong. Field rules follow the public API
as ``@nktkas/hyperliquid`` validates it: addresses are ``0x`` + 40 hex digits
(any case; answered in lower case), cloids ``0x`` + 32 hex digits, times are
non-negative integer milliseconds (digit strings accepted), ``endTime`` may
be absent or ``null`` (no upper bound).

Official limits (Hyperliquid's info endpoint documentation):

* ``userFills``: at most :data:`FILLS_LIMIT` (2000) most recent fills;
* ``userFillsByTime``: at most 2000 fills per response, oldest first from
  ``startTime`` (``reversed: true``: newest first from ``endTime``); page by
  moving ``startTime``. The public API keeps only a user's 10000 most recent
  fills; hlbook answers from everything within its retention;
* ``candleSnapshot``: at most :data:`CANDLES_LIMIT` (5000) candles; when the
  range holds more, the newest 5000 of it (the public API keeps only the most
  recent 5000 per coin and interval).
"""

import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from hlbook.errors import HlbookError
from hlbook.history.candles import INTERVALS
from hlbook.history.schema import MAX_TIME_MS
from hlbook.model import ADDRESS

__all__ = [
    "CANDLES_LIMIT",
    "FILLS_LIMIT",
    "CandleSnapshotRequest",
    "HistoryRequestError",
    "OrderStatusRequest",
    "UserFillsByTimeRequest",
    "UserFillsRequest",
    "parse_candle_snapshot",
    "parse_duration",
    "parse_order_status",
    "parse_user_fills",
    "parse_user_fills_by_time",
]

FILLS_LIMIT: Final = 2000
"""Most fills in one ``userFills``/``userFillsByTime`` answer."""

CANDLES_LIMIT: Final = 5000
"""Most candles in one ``candleSnapshot`` answer."""

_CLOID = re.compile(r"0[xX][0-9a-fA-F]{32}")
_DIGITS = re.compile(r"[0-9]{1,19}")


class HistoryRequestError(HlbookError, ValueError):
    """An info request the history store cannot answer as sent (the client's fault).

    ``request_type`` is the info type, ``field`` the offending field (or
    ``None``), ``reason`` what is wrong.
    """

    def __init__(self, request_type: str, field: str | None, reason: str) -> None:
        self.request_type = request_type
        self.field = field
        self.reason = reason
        where = f"{request_type}.{field}" if field else request_type
        super().__init__(f"{where}: {reason}")


@attrs.frozen
class UserFillsRequest:
    """``{"type":"userFills","user":…,"aggregateByTime"?:bool}``."""

    user: str
    aggregate_by_time: bool = False


@attrs.frozen
class UserFillsByTimeRequest:
    """``userFillsByTime``: fills with ``start_time <= time <= end_time`` (``None``: no end)."""

    user: str
    start_time: int
    end_time: int | None = None
    aggregate_by_time: bool = False
    reversed: bool = False


@attrs.frozen
class CandleSnapshotRequest:
    """``{"type":"candleSnapshot","req":{coin, interval, startTime, endTime?}}``."""

    coin: str
    interval: str
    start_time: int
    end_time: int | None = None


@attrs.frozen
class OrderStatusRequest:
    """``orderStatus``: exactly one of ``oid`` and ``cloid`` is set (the request's ``oid``
    field carries either an integer oid or a cloid string)."""

    user: str
    oid: int | None = None
    cloid: str | None = None


def _object(kind: str, body: object, field: str | None = None) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise HistoryRequestError(kind, field, f"expected a JSON object, got {_show(body)}")
    return body


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _user(kind: str, body: Mapping[str, Any]) -> str:
    if "user" not in body:
        raise HistoryRequestError(kind, "user", "missing")
    value = body["user"]
    if not isinstance(value, str) or not ADDRESS.fullmatch(value):
        raise HistoryRequestError(
            kind, "user", f"expected an address (0x and 40 hex digits), got {_show(value)}"
        )
    return value.lower()


def _flag(kind: str, body: Mapping[str, Any], field: str) -> bool:
    value = body.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise HistoryRequestError(kind, field, f"expected true or false, got {_show(value)}")
    return value


def _time(
    kind: str, body: Mapping[str, Any], field: str, *, required: bool, prefix: str = ""
) -> int | None:
    value = body.get(field)
    field = prefix + field
    if value is None:
        if required:
            raise HistoryRequestError(kind, field, "missing")
        return None
    if (isinstance(value, str) and _DIGITS.fullmatch(value)) or (
        isinstance(value, float) and value.is_integer()
    ):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 1 << 63:
        raise HistoryRequestError(
            kind, field, f"expected non-negative integer milliseconds, got {_show(value)}"
        )
    # Later times ("no end" sentinels: 9999999999999, 2**53 - 1) mean the same as the
    # latest the store can hold, and later ones would not fit its keys.
    return min(value, MAX_TIME_MS)


def parse_user_fills(body: object) -> UserFillsRequest:
    """Validate a ``userFills`` request."""
    kind = "userFills"
    obj = _object(kind, body)
    return UserFillsRequest(_user(kind, obj), _flag(kind, obj, "aggregateByTime"))


def parse_user_fills_by_time(body: object) -> UserFillsByTimeRequest:
    """Validate a ``userFillsByTime`` request."""
    kind = "userFillsByTime"
    obj = _object(kind, body)
    start = _time(kind, obj, "startTime", required=True)
    assert start is not None
    return UserFillsByTimeRequest(
        _user(kind, obj),
        start,
        _time(kind, obj, "endTime", required=False),
        _flag(kind, obj, "aggregateByTime"),
        _flag(kind, obj, "reversed"),
    )


def parse_candle_snapshot(body: object) -> CandleSnapshotRequest:
    """Validate a ``candleSnapshot`` request (its fields are inside ``req``)."""
    kind = "candleSnapshot"
    obj = _object(kind, body)
    if "req" not in obj:
        raise HistoryRequestError(kind, "req", "missing")
    req = _object(kind, obj["req"], "req")
    coin = req.get("coin")
    if not isinstance(coin, str) or not coin:
        raise HistoryRequestError(kind, "req.coin", f"expected a coin name, got {_show(coin)}")
    interval = req.get("interval")
    if not isinstance(interval, str) or interval not in INTERVALS:
        raise HistoryRequestError(
            kind, "req.interval", f"expected one of {' '.join(INTERVALS)}, got {_show(interval)}"
        )
    start = _time(kind, req, "startTime", required=True, prefix="req.")
    assert start is not None
    end = _time(kind, req, "endTime", required=False, prefix="req.")
    return CandleSnapshotRequest(coin, interval, start, end)


def parse_order_status(body: object) -> OrderStatusRequest:
    """Validate an ``orderStatus`` request: ``oid`` is an integer oid or a cloid string."""
    kind = "orderStatus"
    obj = _object(kind, body)
    user = _user(kind, obj)
    if "oid" not in obj:
        raise HistoryRequestError(kind, "oid", "missing")
    value = obj["oid"]
    if isinstance(value, str) and _CLOID.fullmatch(value):
        return OrderStatusRequest(user, cloid=value.lower())
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
        raise HistoryRequestError(
            kind,
            "oid",
            f"expected an order id or a cloid (0x and 32 hex digits), got {_show(value)}",
        )
    return OrderStatusRequest(user, oid=value)


_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_UNITS: Final = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
}


def parse_duration(text: str) -> int:
    """``"7d"``, ``"12h"``, ``"90m"``, ``"1d12h"``… → milliseconds (for ``--history-retention``).

    Units: ``ms s m h d w``. Raises ``ValueError`` for anything else or zero.
    """
    spec = text.strip()
    pos = 0
    total = 0
    while pos < len(spec):
        match = _DURATION.match(spec, pos)
        if match is None:
            raise ValueError(
                f"not a duration: {text!r} (use a number and a unit: 7d, 12h, 30m, 1d12h)"
            )
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if total <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    return total
