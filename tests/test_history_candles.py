"""Candles from trades: official alignment and shape, and a brute-force recomputation."""

import itertools
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hlbook.book.trades import Trade
from hlbook.history.candles import (
    INTERVALS,
    Candle,
    CandleBuilder,
    candle_close,
    candle_open,
)

MINUTE = 60_000
DAY = 86_400_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def trade(time: int, px: str = "100.0", sz: str = "1.0", coin: str = "BTC", tid: int = 1) -> Trade:
    return Trade(
        coin=coin, side="B", px=px, sz=sz, hash="0x" + "0" * 64, time=time, tid=tid, users=("", "")
    )


def test_the_documented_15m_example() -> None:
    # The public API's documented candle: t=1681923600000, T=1681924499999.
    assert candle_open(1681923600000 + 123_456, "15m") == 1681923600000
    assert candle_close(1681923600000, "15m") == 1681924499999


def test_fixed_intervals_are_epoch_aligned_and_close_one_ms_before_the_next() -> None:
    time = ms("2026-05-05T17:39:13.024")
    for interval, length in INTERVALS.items():
        if length is None:
            continue
        start = candle_open(time, interval)
        assert start % length == 0
        assert start <= time <= candle_close(start, interval)
        assert candle_close(start, interval) == start + length - 1
        assert candle_open(candle_close(start, interval) + 1, interval) == start + length


def test_weeks_start_on_thursday_days_at_midnight() -> None:
    start = candle_open(ms("2026-05-05T17:39:13"), "1w")  # a Tuesday
    assert datetime.fromtimestamp(start / 1000, UTC) == datetime(2026, 4, 30, tzinfo=UTC)
    assert datetime.fromtimestamp(start / 1000, UTC).strftime("%A") == "Thursday"
    assert candle_open(ms("2026-05-05T17:39:13"), "1d") == ms("2026-05-05T00:00:00")
    assert candle_open(ms("2026-05-05T17:39:13"), "4h") == ms("2026-05-05T16:00:00")


@pytest.mark.parametrize(
    ("time", "start", "after"),
    [
        ("2026-05-05T17:39:13", "2026-05-01", "2026-06-01"),
        ("2026-12-31T23:59:59.999", "2026-12-01", "2027-01-01"),
        ("2028-02-29T12:00:00", "2028-02-01", "2028-03-01"),
        ("2026-03-01T00:00:00", "2026-03-01", "2026-04-01"),
    ],
)
def test_months_are_calendar_months(time: str, start: str, after: str) -> None:
    opened = candle_open(ms(time), "1M")
    assert opened == ms(start + "T00:00:00")
    assert candle_close(opened, "1M") == ms(after + "T00:00:00") - 1


def test_unknown_interval_is_refused() -> None:
    with pytest.raises(KeyError):
        candle_open(0, "2w")
    with pytest.raises(ValueError, match="2w"):
        CandleBuilder(["1m", "2w"])


def test_candle_encodes_to_the_official_keys() -> None:
    builder = CandleBuilder(["15m"])
    (candle,) = builder.add([trade(1681923600000 + 5, px="29295.0", sz="0.98639")])
    assert msgspec.json.decode(msgspec.json.encode(candle)) == candle.to_wire()
    assert candle.to_wire() == {
        "t": 1681923600000,
        "T": 1681924499999,
        "s": "BTC",
        "i": "15m",
        "o": "29295.0",
        "c": "29295.0",
        "h": "29295.0",
        "l": "29295.0",
        "v": "0.98639",
        "n": 1,
    }


def test_ohlcv_within_one_candle_and_a_new_one_after_close() -> None:
    builder = CandleBuilder(["1m"])
    base = ms("2026-05-05T17:39:00")
    (first,) = builder.add(
        [
            trade(base + 1, px="10.0", sz="0.1"),
            trade(base + 2, px="12.5", sz="0.2"),
            trade(base + 3, px="9.0", sz="0.3"),
            trade(base + 4, px="11.0", sz="0.4"),
        ]
    )
    assert (first.open, first.high, first.low, first.close) == ("10.0", "12.5", "9.0", "11.0")
    assert (first.volume, first.trades) == ("1.0", 4)
    # One block crossing the minute: the closed candle's final state and the new one.
    closed, opened = builder.add([trade(base + 59_999, px="13.0"), trade(base + MINUTE, px="8.0")])
    assert (closed.open_time, closed.close, closed.high, closed.trades) == (base, "13.0", "13.0", 5)
    assert (opened.open_time, opened.open, opened.trades) == (base + MINUTE, "8.0", 1)
    assert builder.current("BTC", "1m") == opened
    assert builder.current("ETH", "1m") is None


def test_late_trade_is_counted_not_misplaced() -> None:
    builder = CandleBuilder(["1m", "1h"])
    base = ms("2026-05-05T17:39:00")
    builder.add([trade(base + MINUTE)])
    changed = builder.add([trade(base + 5)])
    assert builder.late_trades == 1
    # The 1h candle still contains it; the 1m candle does not go back in time.
    assert [c.interval for c in changed] == ["1h"]
    current = builder.current("BTC", "1m")
    assert current is not None
    assert (current.open_time, current.trades) == (base + MINUTE, 1)


def test_restore_continues_the_current_candle() -> None:
    base = ms("2026-05-05T17:39:00")
    first = CandleBuilder(["1m", "1d"])
    first.add([trade(base + 1, px="10.0"), trade(base + 2, px="11.0")])
    again = CandleBuilder(["1m", "1d"])
    again.restore(first.currents())
    expected = first.add([trade(base + 3, px="9.0")])
    assert again.add([trade(base + 3, px="9.0")]) == expected
    assert expected[0].trades == 3


# -- brute force -----------------------------------------------------------------


def _brute_open(time: int, interval: str) -> tuple[int, int]:
    """(t, T) computed with datetime, independently of hlbook.history.candles."""
    stamp = datetime.fromtimestamp(time / 1000, UTC)
    if interval == "1M":
        start = stamp.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        after = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return int(start.timestamp() * 1000), int(after.timestamp() * 1000) - 1
    number, unit = int(interval[:-1]), interval[-1]
    length = number * {"m": MINUTE, "h": 60 * MINUTE, "d": DAY, "w": 7 * DAY}[unit]
    start_ms = (time // length) * length
    return start_ms, start_ms + length - 1


def brute_force(trades: list[Trade], interval: str) -> dict[tuple[str, int], Candle]:
    grouped: dict[tuple[str, int], list[Trade]] = defaultdict(list)
    closes: dict[tuple[str, int], int] = {}
    for item in trades:
        start, close = _brute_open(item.time, interval)
        grouped[(item.coin, start)].append(item)
        closes[(item.coin, start)] = close
    out = {}
    for (coin, start), group in grouped.items():
        prices = [Decimal(t.px) for t in group]
        volume = sum((Decimal(t.sz) for t in group), Decimal(0))

        def text(value: Decimal) -> str:
            body = format(value.normalize(), "f")
            return body if "." in body else body + ".0"

        out[(coin, start)] = Candle(
            open_time=start,
            close_time=closes[(coin, start)],
            coin=coin,
            interval=interval,
            open=text(prices[0]),
            close=text(prices[-1]),
            high=text(max(prices)),
            low=text(min(prices)),
            volume=text(volume),
            trades=len(group),
        )
    return out


_prices = st.sampled_from(["0.5", "1.0", "99.75", "100.0", "101.25", "81308.0", "0.00001234"])
_sizes = st.sampled_from(["0.00033", "1.0", "2.5", "1000.0", "0.1"])
# Steps up to ~4 days so that weeks, 3-day and calendar-month boundaries are crossed.
_steps = st.one_of(st.integers(0, 90_000), st.integers(0, 5 * DAY), st.integers(0, 4 * 60 * MINUTE))


@given(
    start=st.integers(ms("2025-12-20T00:00:00"), ms("2026-03-01T00:00:00")),
    steps=st.lists(
        st.tuples(_steps, st.sampled_from(["BTC", "@107"]), _prices, _sizes), max_size=60
    ),
    cuts=st.lists(st.integers(0, 60), max_size=8),
)
def test_builder_equals_brute_force_from_random_trades(
    start: int, steps: list[tuple[int, str, str, str]], cuts: list[int]
) -> None:
    trades = []
    time = start
    for index, (step, coin, px, sz) in enumerate(steps):
        time += step
        trades.append(trade(time, px=px, sz=sz, coin=coin, tid=index))
    bounds = sorted({0, len(trades), *(c for c in cuts if c <= len(trades))})
    builder = CandleBuilder()
    reported: dict[tuple[str, str, int], Candle] = {}
    for low, high in itertools.pairwise(bounds):
        block = trades[low:high]
        changed = builder.add(block)
        # Exactly the candles this block's trades fall in, each once.
        touched = {
            (t.coin, interval, _brute_open(t.time, interval)[0])
            for t in block
            for interval in INTERVALS
        }
        keys = [(c.coin, c.interval, c.open_time) for c in changed]
        assert len(keys) == len(set(keys))
        assert set(keys) == touched
        for candle in changed:
            reported[(candle.coin, candle.interval, candle.open_time)] = candle
    for interval in INTERVALS:
        expected = brute_force(trades, interval)
        got = {(c, t): candle for (c, i, t), candle in reported.items() if i == interval}
        assert got == expected
