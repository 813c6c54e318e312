"""Rendering data messages in Hyperliquid's wire format, once per (channel, coin, parameters).

Every function returns the final text (a :class:`~hlbook.server.frames.Text`,
which also carries its WebSocket frame) sent to every subscriber of that
view; nothing is serialised or framed per client. Dict-shaped
messages go through orjson; messages carrying node structs (``l4Book``,
``trades``) through msgspec, which encodes the structs directly.
"""

from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from hlbook.book.l4 import LevelView
from hlbook.book.trades import Trade
from hlbook.node.formats import DiffEvent, Order, StatusEvent
from hlbook.server.frames import Text

__all__ = [
    "bbo_message",
    "l2_book_message",
    "l4_snapshot_message",
    "l4_updates_message",
    "trades_message",
]

_encoder = msgspec.json.Encoder()


def _level(view: LevelView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    px, sz, n = view
    return {"px": px, "sz": sz, "n": n}


def l2_book_message(
    coin: str, time: int, bids: Sequence[LevelView], asks: Sequence[LevelView]
) -> str:
    """``{"channel":"l2Book","data":{"coin","time","levels":[bids, asks]}}``."""
    levels = [
        [{"px": px, "sz": sz, "n": n} for px, sz, n in bids],
        [{"px": px, "sz": sz, "n": n} for px, sz, n in asks],
    ]
    data = {"coin": coin, "time": time, "levels": levels}
    return Text(orjson.dumps({"channel": "l2Book", "data": data}).decode())


def bbo_message(coin: str, time: int, bid: LevelView | None, ask: LevelView | None) -> str:
    """``{"channel":"bbo","data":{"coin","time","bbo":[bid or null, ask or null]}}``."""
    data = {"coin": coin, "time": time, "bbo": [_level(bid), _level(ask)]}
    return Text(orjson.dumps({"channel": "bbo", "data": data}).decode())


def trades_message(trades: Sequence[Trade]) -> str:
    """``{"channel":"trades","data":[trade, …]}`` for one coin."""
    return Text(_encoder.encode({"channel": "trades", "data": trades}).decode())


def l4_snapshot_message(
    coin: str, time: int, height: int, bids: Sequence[Order], asks: Sequence[Order]
) -> str:
    """``{"channel":"l4Book","data":{"Snapshot":{"coin","time","height","levels":[…]}}}``."""
    snapshot = {"coin": coin, "time": time, "height": height, "levels": (bids, asks)}
    return Text(_encoder.encode({"channel": "l4Book", "data": {"Snapshot": snapshot}}).decode())


def l4_updates_message(
    time: int, height: int, statuses: Sequence[StatusEvent], diffs: Sequence[DiffEvent]
) -> str:
    """``{"channel":"l4Book","data":{"Updates":{"time","height","order_statuses","book_diffs"}}}``."""
    updates = {"time": time, "height": height, "order_statuses": statuses, "book_diffs": diffs}
    return Text(_encoder.encode({"channel": "l4Book", "data": {"Updates": updates}}).decode())
