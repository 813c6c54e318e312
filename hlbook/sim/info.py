"""What the simulator's info servers answer, without I/O: requests in, JSON values out.

Two roles answer ``POST /info``:

* the **node** role plays a node's own info server (``--serve-info``):
  ``fileSnapshot`` (see :func:`parse_file_snapshot`), ``meta`` (``dex``),
  ``spotMeta``, ``perpDexs``, ``exchangeStatus``, ``openOrders`` and
  ``frontendOpenOrders`` (``user``, ``dex``);
* the **fallback** role plays the public API for what a node cannot answer:
  the node's types except ``fileSnapshot``, plus ``metaAndAssetCtxs``
  (``dex``) and ``spotMetaAndAssetCtxs``.

Errors are those of the server a node runs (axum's JSON extractor): invalid
JSON is ``400`` "Failed to parse the request body as JSON: …", a body that
is not one of the role's requests (unknown ``type``, a missing or mistyped
field) is ``422`` "Failed to deserialize the JSON body into the target
type: …", a body not sent as ``application/json`` is ``415``, all as
``text/plain``. A ``dex`` that does not exist is a ``422`` too (what a node
answers then is not documented).

Asset contexts are computed from the simulator's own state at the height of
the last written block: ``midPx`` from the best bid and ask, ``markPx`` the
median of best bid, best ask and last trade, ``oraclePx`` the fair price the
simulated traders trade around (rounded to the tick), ``impactPxs`` the
prices at which an order of the impact notional (20,000 USDC for BTC and ETH,
6,000 for the others) would have traded all of it, ``premium`` and
``funding`` by Hyperliquid's formulas from those (the premium of the moment,
not an hour's average), ``openInterest`` the sum of every long position from
the fills, day volumes and ``prevDayPx`` over the last 24 hours of block time
(``prevDayPx`` is the coin's start price until a day has passed).
"""

import enum
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import msgspec

from hlbook.node.formats import Order
from hlbook.numbers import SCALE, fmt, parse
from hlbook.sim.book import BID, SimBook
from hlbook.sim.generator import BlockGenerator
from hlbook.sim.markets import Markets

__all__ = [
    "FALLBACK_TYPES",
    "NODE_TYPES",
    "InfoApi",
    "InfoError",
    "Query",
    "Role",
    "decode_request",
    "frontend_open_order",
    "open_order",
    "parse_file_snapshot",
]

NODE_TYPES = (
    "fileSnapshot",
    "meta",
    "spotMeta",
    "perpDexs",
    "exchangeStatus",
    "openOrders",
    "frontendOpenOrders",
)
"""The request types a node's info server answers (as far as the simulator plays one)."""

FALLBACK_TYPES = (*NODE_TYPES[1:], "metaAndAssetCtxs", "spotMetaAndAssetCtxs")
"""The request types the fallback role (a stand-in for the public API) answers."""

_PARSE = "Failed to parse the request body as JSON"
_DATA = "Failed to deserialize the JSON body into the target type"
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_INTEREST = Decimal("0.0001")  # per 8 hours
_PREMIUM_CLAMP = Decimal("0.0005")
_FUNDING_CAP = Decimal("0.04")  # per hour
_EIGHT = Decimal(8)
_RATE_QUANTUM = Decimal("1e-8")
_IMPACT_NOTIONAL = {"BTC": 20_000 * SCALE, "ETH": 20_000 * SCALE}
_DEFAULT_IMPACT = 6_000 * SCALE


class InfoError(Exception):
    """A request refused: the HTTP status and the ``text/plain`` body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Role(enum.Enum):
    """Which server the simulator plays."""

    NODE = "node"
    FALLBACK = "fallback"


def _data_error(reason: str) -> InfoError:
    return InfoError(422, f"{_DATA}: {reason}")


def decode_request(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The JSON object of a ``POST /info`` body; :class:`InfoError` if it is none."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    is_json = mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )
    if not is_json:
        raise InfoError(415, "Expected request with `Content-Type: application/json`")
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InfoError(400, f"{_PARSE}: {exc}") from None
    if not isinstance(message, dict):
        raise _data_error(f"invalid type: {_json_kind(message)}, expected internally tagged enum")
    kind = message.get("type")
    if kind is None:
        raise _data_error("missing field `type`")
    if not isinstance(kind, str):
        raise _data_error(f"invalid type: {_json_kind(kind)}, expected a string")
    return message


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"number `{value}`"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    return "null"


def check_type(message: dict[str, Any], types: tuple[str, ...]) -> str:
    """The request's ``type``, if ``types`` has it; a ``422`` otherwise."""
    kind: str = message["type"]
    if kind not in types:
        expected = ", ".join(f"`{t}`" for t in types)
        raise _data_error(f"unknown variant `{kind}`, expected one of {expected}")
    return kind


def parse_file_snapshot(message: dict[str, Any]) -> tuple[Path, bool]:
    """``(outPath, includeHeightInOutput)`` of a ``fileSnapshot`` request.

    Only ``{"type":"l4Snapshots","includeUsers":true,"includeTriggerOrders":false}``
    is implemented: the simulator's snapshot has the books only, like a node's
    without trigger orders.
    """
    inner = message.get("request")
    if not isinstance(inner, dict) or inner.get("type") != "l4Snapshots":
        raise _data_error('request: only {"type": "l4Snapshots"} is simulated')
    if inner.get("includeUsers") is not True:
        raise _data_error("request: only includeUsers: true is simulated")
    if inner.get("includeTriggerOrders", False) is not False:
        raise _data_error("request: only includeTriggerOrders: false is simulated")
    out_path = message.get("outPath")
    if out_path is None:
        raise _data_error("missing field `outPath`")
    if not isinstance(out_path, str):
        raise _data_error(f"outPath: invalid type: {_json_kind(out_path)}, expected a string")
    if not os.path.isabs(out_path):
        raise _data_error(f"outPath must be an absolute path, not {out_path!r}")
    include_height = message.get("includeHeightInOutput", False)
    if not isinstance(include_height, bool):
        raise _data_error("includeHeightInOutput: expected a boolean")
    return Path(out_path), include_height


@attrs.frozen
class Query:
    """A checked request: its type and parameters."""

    kind: str
    dex: str = ""
    user: str = ""


def open_order(order: Order) -> dict[str, Any]:
    """One entry of ``openOrders``: ``cloid`` only when set, ``reduceOnly`` only when true."""
    entry: dict[str, Any] = {
        "coin": order.coin,
        "side": order.side,
        "limitPx": order.limitPx,
        "sz": order.sz,
        "oid": order.oid,
        "timestamp": order.timestamp,
        "origSz": order.origSz,
    }
    if order.cloid is not None:
        entry["cloid"] = order.cloid
    if order.reduceOnly:
        entry["reduceOnly"] = True
    return entry


def frontend_open_order(order: Order) -> dict[str, Any]:
    """One entry of ``frontendOpenOrders``: every field of the node's order object."""
    entry: dict[str, Any] = msgspec.to_builtins(order)
    entry.pop("user", None)
    entry["children"] = list(entry["children"])  # a JSON array, as it is once sent
    return entry


def _newest_first(orders: list[Order]) -> list[Order]:
    return sorted(orders, key=lambda o: (o.timestamp, o.oid), reverse=True)


def _rate(value: Decimal) -> str:
    """A rate with at most 8 decimals, as the API writes them: ``"0.0000125"``."""
    text = format(value.quantize(_RATE_QUANTUM), "f").rstrip("0")
    if text.endswith("."):
        text += "0"
    return "0.0" if text in ("0.0", "-0.0") else text


def _clamp(value: Decimal, low: Decimal, high: Decimal) -> Decimal:
    return max(low, min(high, value))


def impact_prices(book: SimBook, notional: int) -> tuple[int, int] | None:
    """The prices at which a sell and a buy of ``notional`` would have traded all of it."""
    found: list[int] = []
    for side in (BID, "A"):
        levels = book.levels(side)
        keys = reversed(levels.keys()) if side == BID else iter(levels.keys())
        total = 0
        reached: int | None = None
        for px in keys:
            total += sum(px * rest.sz // SCALE for rest in levels[px].values())
            if total >= notional:
                reached = px
                break
        if reached is None:
            return None
        found.append(reached)
    return found[0], found[1]


class InfoApi:
    """Checks and answers the requests of one :class:`Role` (``fileSnapshot`` aside)."""

    def __init__(self, markets: Markets, role: Role) -> None:
        self.markets = markets
        self.role = role
        self.types = NODE_TYPES if role is Role.NODE else FALLBACK_TYPES

    def parse(self, message: dict[str, Any]) -> Query:
        """Check a decoded request (:func:`decode_request`); :class:`InfoError` if invalid."""
        kind = check_type(message, self.types)
        dex = ""
        user = ""
        if kind in ("meta", "metaAndAssetCtxs", "openOrders", "frontendOpenOrders"):
            value = message.get("dex")
            if value is not None and not isinstance(value, str):
                raise _data_error(f"dex: invalid type: {_json_kind(value)}, expected a string")
            dex = value or ""
            if not self.markets.has_dex(dex):
                raise _data_error(f"dex: unknown perp dex {dex!r}")
        if kind in ("openOrders", "frontendOpenOrders"):
            value = message.get("user")
            if value is None:
                raise _data_error("missing field `user`")
            if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
                raise _data_error(f"user: invalid address {value!r}")
            user = value.lower()
        return Query(kind, dex, user)

    def answer(self, query: Query, generator: BlockGenerator) -> Any:
        """The answer to ``query`` from the generator's state now (a JSON value)."""
        kind = query.kind
        markets = self.markets
        if kind == "meta":
            return markets.meta(query.dex)
        if kind == "spotMeta":
            return markets.spot_meta()
        if kind == "perpDexs":
            return markets.perp_dexs()
        if kind == "exchangeStatus":
            return {"time": generator.exchange.time_ms, "specialStatuses": None}
        if kind in ("openOrders", "frontendOpenOrders"):
            resting, pending = generator.user_orders(query.user)
            coins = markets.dex_coins(query.dex)
            orders = _newest_first([o for o in (*resting, *pending) if o.coin in coins])
            if kind == "openOrders":
                return [open_order(o) for o in orders]
            return [frontend_open_order(o) for o in orders]
        if kind == "metaAndAssetCtxs":
            ctxs = [self.perp_ctx(a.name, generator) for a in markets.perps(query.dex)]
            return [markets.meta(query.dex), ctxs]
        if kind == "spotMetaAndAssetCtxs":
            ctxs = [self.spot_ctx(pair.name, generator) for pair in markets.pairs]
            return [markets.spot_meta(), ctxs]
        raise AssertionError(f"unhandled {kind}")  # parse() lets no other type through

    # -- asset contexts ----------------------------------------------------------------------

    def _prices(self, coin: str, generator: BlockGenerator) -> dict[str, Any]:
        """``midPx``, ``markPx``, day volumes and ``prevDayPx`` of ``coin`` (scaled ints)."""
        book = generator.book(coin)
        stats = generator.exchange.stats[coin]
        market = generator.market(coin)
        bid, ask = book.best_bid(), book.best_ask()
        last = stats.last_px
        oracle = market.center() * market.tick
        mid = None if bid is None or ask is None else (bid + ask) // 2
        if mid is not None and bid is not None and ask is not None:
            mark = sorted((bid, ask, mid if last is None else last))[1]
        else:
            mark = last if last is not None else oracle
        notional, volume, before = stats.day(generator.exchange.time_ms)
        return {
            "mid": mid,
            "mark": mark,
            "oracle": oracle,
            "notional": notional,
            "volume": volume,
            "prev": before if before is not None else parse(market.spec.px),
        }

    def perp_ctx(self, coin: str, generator: BlockGenerator) -> dict[str, Any]:
        """The asset context of a perp (first dex or HIP-3), from the simulator's state."""
        p = self._prices(coin, generator)
        book = generator.book(coin)
        impact = impact_prices(book, _IMPACT_NOTIONAL.get(coin, _DEFAULT_IMPACT))
        oracle: int = p["oracle"]
        premium: Decimal | None = None
        funding = _INTEREST / _EIGHT
        if impact is not None and oracle > 0:
            impact_bid, impact_ask = impact
            premium = Decimal(max(impact_bid - oracle, 0) - max(oracle - impact_ask, 0)) / oracle
            rate = premium + _clamp(_INTEREST - premium, -_PREMIUM_CLAMP, _PREMIUM_CLAMP)
            funding = _clamp(rate / _EIGHT, -_FUNDING_CAP, _FUNDING_CAP)
        return {
            "funding": _rate(funding),
            "openInterest": fmt(generator.exchange.stats[coin].open_interest),
            "prevDayPx": fmt(p["prev"]),
            "dayNtlVlm": fmt(p["notional"]),
            "premium": None if premium is None else _rate(premium),
            "oraclePx": fmt(oracle),
            "markPx": fmt(p["mark"]),
            "midPx": None if p["mid"] is None else fmt(p["mid"]),
            "impactPxs": None if impact is None else [fmt(impact[0]), fmt(impact[1])],
            "dayBaseVlm": fmt(p["volume"]),
        }

    def spot_ctx(self, coin: str, generator: BlockGenerator) -> dict[str, Any]:
        """The asset context of a spot pair, from the simulator's state."""
        p = self._prices(coin, generator)
        total, circulating = self.markets.supply()
        return {
            "prevDayPx": fmt(p["prev"]),
            "dayNtlVlm": fmt(p["notional"]),
            "markPx": fmt(p["mark"]),
            "midPx": None if p["mid"] is None else fmt(p["mid"]),
            "circulatingSupply": circulating,
            "coin": coin,
            "totalSupply": total,
            "dayBaseVlm": fmt(p["volume"]),
        }
