"""Candles built from trades, in Hyperliquid's shape and alignment.

Sans I/O: :class:`CandleBuilder` is fed a block's trades and returns the
candles that changed. Prices and sizes stay exact (scaled integers, see
:mod:`hlbook.numbers`) and are rendered in the node's canonical form.

Official semantics (checked against the public API's documented examples and
the SDKs' response types):

* ``t`` is the open time, ``T`` the close time, the last millisecond of the
  interval (``t + length - 1``: 15m at ``t=1681923600000`` has
  ``T=1681924499999``);
* ``o``/``c`` are the first/last trade price, ``h``/``l`` the extremes, ``v``
  the volume in the base asset, ``n`` the number of trades, ``s`` the coin and
  ``i`` the interval; numbers are strings, times and ``n`` are integers;
* fixed intervals are aligned on the Unix epoch: ``t = time - time % length``.
  For ``1w`` that makes weeks start on Thursday 00:00 UTC (1970-01-01 was a
  Thursday), which is what the public API serves; ``3d`` follows the same
  rule. ``1M`` is the calendar month (UTC), from the 1st 00:00 to the last
  millisecond before the next month.

A candle exists only for an interval with at least one trade.
"""

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Final

import msgspec

from hlbook.book.trades import Trade
from hlbook.numbers import fmt, parse

__all__ = [
    "INTERVALS",
    "Candle",
    "CandleBuilder",
    "candle_close",
    "candle_open",
]

_MINUTE: Final = 60_000
_HOUR: Final = 60 * _MINUTE
_DAY: Final = 24 * _HOUR

INTERVALS: Final[dict[str, int | None]] = {
    "1m": _MINUTE,
    "3m": 3 * _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": _HOUR,
    "2h": 2 * _HOUR,
    "4h": 4 * _HOUR,
    "8h": 8 * _HOUR,
    "12h": 12 * _HOUR,
    "1d": _DAY,
    "3d": 3 * _DAY,
    "1w": 7 * _DAY,
    "1M": None,
}
"""Every official interval and its length in ms (``None``: the calendar month)."""

_EPOCH: Final = date(1970, 1, 1)


def _month_start(time_ms: int) -> tuple[int, date]:
    day = _EPOCH + timedelta(days=time_ms // _DAY)
    first = day.replace(day=1)
    return (first - _EPOCH).days * _DAY, first


def candle_open(time_ms: int, interval: str) -> int:
    """The open time ``t`` of the ``interval`` candle that contains ``time_ms``.

    Raises ``KeyError`` for an interval that is not in :data:`INTERVALS`.
    """
    length = INTERVALS[interval]
    if length is not None:
        return time_ms - time_ms % length
    return _month_start(time_ms)[0]


def candle_close(open_ms: int, interval: str) -> int:
    """The close time ``T`` (last millisecond) of the candle opening at ``open_ms``."""
    length = INTERVALS[interval]
    if length is not None:
        return open_ms + length - 1
    _, first = _month_start(open_ms)
    year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
    return (date(year, month, 1) - _EPOCH).days * _DAY - 1


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One candle as the official API sends it (encode it with msgspec for the wire).

    Attribute names say what each field is; the encoded names are the
    official one-letter keys.
    """

    open_time: int = msgspec.field(name="t")
    close_time: int = msgspec.field(name="T")
    coin: str = msgspec.field(name="s")
    interval: str = msgspec.field(name="i")
    open: str = msgspec.field(name="o")
    close: str = msgspec.field(name="c")
    high: str = msgspec.field(name="h")
    low: str = msgspec.field(name="l")
    volume: str = msgspec.field(name="v")
    trades: int = msgspec.field(name="n")

    def to_wire(self) -> dict[str, str | int]:
        """The official JSON object ``{t,T,s,i,o,c,h,l,v,n}``."""
        return {
            "t": self.open_time,
            "T": self.close_time,
            "s": self.coin,
            "i": self.interval,
            "o": self.open,
            "c": self.close,
            "h": self.high,
            "l": self.low,
            "v": self.volume,
            "n": self.trades,
        }


class _Bar:
    """The mutable state of one current candle (exact scaled integers)."""

    __slots__ = ("close", "close_time", "high", "low", "open", "open_time", "trades", "volume")

    def __init__(self, open_time: int, close_time: int, px: int) -> None:
        self.open_time = open_time
        self.close_time = close_time
        self.open = self.close = self.high = self.low = px
        self.volume = 0
        self.trades = 0

    def candle(self, coin: str, interval: str) -> Candle:
        return Candle(
            open_time=self.open_time,
            close_time=self.close_time,
            coin=coin,
            interval=interval,
            open=fmt(self.open),
            close=fmt(self.close),
            high=fmt(self.high),
            low=fmt(self.low),
            volume=fmt(self.volume),
            trades=self.trades,
        )


def _bar_from(candle: Candle) -> _Bar:
    bar = _Bar(candle.open_time, candle.close_time, parse(candle.open))
    bar.close = parse(candle.close)
    bar.high = parse(candle.high)
    bar.low = parse(candle.low)
    bar.volume = parse(candle.volume)
    bar.trades = candle.trades
    return bar


class CandleBuilder:
    """The current candle of every (coin, interval), updated from trades.

    Trades must come in time order per coin, as blocks do. A trade older than
    its coin's current candle (time going backwards) cannot be placed without
    the closed candle and is not counted; :attr:`late_trades` says how many.
    """

    def __init__(self, intervals: Iterable[str] = INTERVALS) -> None:
        self.intervals: tuple[str, ...] = tuple(intervals)
        unknown = [name for name in self.intervals if name not in INTERVALS]
        if unknown:
            raise ValueError(f"unknown candle interval(s) {unknown}; choose from {list(INTERVALS)}")
        self._bars: dict[tuple[str, str], _Bar] = {}
        self.late_trades = 0

    def restore(self, candles: Iterable[Candle]) -> None:
        """Continue from recorded candles (e.g. after a restart): the newest per key wins."""
        for candle in candles:
            key = (candle.coin, candle.interval)
            if candle.interval not in self.intervals:
                continue
            bar = self._bars.get(key)
            if bar is None or candle.open_time >= bar.open_time:
                self._bars[key] = _bar_from(candle)

    def add(self, trades: Iterable[Trade]) -> list[Candle]:
        """Apply ``trades`` (one block's, in order); return every candle they changed.

        A candle that closed because a later trade opened the next one is
        returned too, in its final state. Order: first touched, first returned.
        """
        changed: dict[tuple[str, str, int], tuple[str, str, _Bar]] = {}
        bars = self._bars
        for trade in trades:
            px = parse(trade.px)
            sz = parse(trade.sz)
            time = trade.time
            coin = trade.coin
            for interval in self.intervals:
                key = (coin, interval)
                bar = bars.get(key)
                if bar is None or time > bar.close_time:
                    start = candle_open(time, interval)
                    bar = _Bar(start, candle_close(start, interval), px)
                    bars[key] = bar
                elif time < bar.open_time:
                    if interval == self.intervals[0]:
                        self.late_trades += 1
                    continue
                else:
                    if px > bar.high:
                        bar.high = px
                    elif px < bar.low:
                        bar.low = px
                    bar.close = px
                bar.volume += sz
                bar.trades += 1
                changed[(coin, interval, bar.open_time)] = (coin, interval, bar)
        return [bar.candle(coin, interval) for coin, interval, bar in changed.values()]

    def current(self, coin: str, interval: str) -> Candle | None:
        """The current (newest) candle of ``coin`` at ``interval``, if it has traded."""
        bar = self._bars.get((coin, interval))
        return None if bar is None else bar.candle(coin, interval)

    def currents(self) -> list[Candle]:
        """Every current candle."""
        return [bar.candle(coin, interval) for (coin, interval), bar in self._bars.items()]
