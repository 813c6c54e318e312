"""Validating history info requests: one typed error that names the type and the field."""

from typing import Any

import pytest

from hlbook.errors import HlbookError
from hlbook.history.requests import (
    CandleSnapshotRequest,
    HistoryRequestError,
    OrderStatusRequest,
    UserFillsByTimeRequest,
    UserFillsRequest,
    parse_candle_snapshot,
    parse_duration,
    parse_order_status,
    parse_user_fills,
    parse_user_fills_by_time,
)

USER = "0x0fd468a73084daa6ea77a9261e40fdec3e67e0c7"


def test_user_fills_as_the_sdks_send_it() -> None:
    # The Python SDK sends {"type","user"}; aggregateByTime is optional.
    assert parse_user_fills({"type": "userFills", "user": USER}) == UserFillsRequest(USER)
    checksummed = "0x0FD468A73084daa6ea77a9261e40fdec3e67e0C7"
    assert parse_user_fills(
        {"type": "userFills", "user": checksummed, "aggregateByTime": True}
    ) == UserFillsRequest(USER, True)


def test_user_fills_by_time_with_null_end_and_flags() -> None:
    # The Python SDK sends "endTime": null and "aggregateByTime": false explicitly.
    body = {
        "type": "userFillsByTime",
        "user": USER,
        "startTime": 1778002753024,
        "endTime": None,
        "aggregateByTime": False,
    }
    assert parse_user_fills_by_time(body) == UserFillsByTimeRequest(USER, 1778002753024)
    body.update(endTime="1778002800000", reversed=True)
    assert parse_user_fills_by_time(body) == UserFillsByTimeRequest(
        USER, 1778002753024, 1778002800000, False, True
    )


def test_candle_snapshot_fields_live_in_req() -> None:
    body = {
        "type": "candleSnapshot",
        "req": {
            "coin": "BTC",
            "interval": "15m",
            "startTime": 1681923600000,
            "endTime": 1681924500000,
        },
    }
    assert parse_candle_snapshot(body) == CandleSnapshotRequest(
        "BTC", "15m", 1681923600000, 1681924500000
    )


def test_order_status_takes_an_oid_or_a_cloid_in_the_oid_field() -> None:
    assert parse_order_status({"user": USER, "oid": 412036470893}) == OrderStatusRequest(
        USER, oid=412036470893
    )
    cloid = "0xD4CFE113017B4E31B56B2344A425F8B0"
    assert parse_order_status({"user": USER, "oid": cloid}) == OrderStatusRequest(
        USER, cloid=cloid.lower()
    )


@pytest.mark.parametrize(
    ("parse", "body", "field", "words"),
    [
        (parse_user_fills, {"type": "userFills"}, "user", "missing"),
        (parse_user_fills, {"user": "0x1234"}, "user", "40 hex"),
        (parse_user_fills, {"user": 12}, "user", "40 hex"),
        (parse_user_fills, {"user": USER, "aggregateByTime": "yes"}, "aggregateByTime", "true"),
        (parse_user_fills, ["not", "an", "object"], None, "JSON object"),
        (parse_user_fills_by_time, {"user": USER}, "startTime", "missing"),
        (parse_user_fills_by_time, {"user": USER, "startTime": -1}, "startTime", "non-negative"),
        (parse_user_fills_by_time, {"user": USER, "startTime": 1.5}, "startTime", "integer"),
        (parse_user_fills_by_time, {"user": USER, "startTime": True}, "startTime", "integer"),
        (
            parse_user_fills_by_time,
            {"user": USER, "startTime": 0, "endTime": "soon"},
            "endTime",
            "",
        ),
        (parse_user_fills_by_time, {"user": USER, "startTime": 0, "reversed": 1}, "reversed", ""),
        (parse_candle_snapshot, {"type": "candleSnapshot"}, "req", "missing"),
        (parse_candle_snapshot, {"req": "BTC"}, "req", "JSON object"),
        (parse_candle_snapshot, {"req": {"interval": "1m", "startTime": 0}}, "req.coin", "coin"),
        (
            parse_candle_snapshot,
            {"req": {"coin": "BTC", "interval": "2w", "startTime": 0}},
            "req.interval",
            "1m 3m 5m 15m 30m 1h 2h 4h 8h 12h 1d 3d 1w 1M",
        ),
        (
            parse_candle_snapshot,
            {"req": {"coin": "BTC", "interval": "1m"}},
            "req.startTime",
            "missing",
        ),
        (parse_order_status, {"user": USER}, "oid", "missing"),
        (parse_order_status, {"user": USER, "oid": "0x12"}, "oid", "cloid"),
        (parse_order_status, {"user": USER, "oid": -5}, "oid", "order id"),
        (parse_order_status, {"oid": 5}, "user", "missing"),
    ],
)
def test_bad_requests_raise_one_typed_error(
    parse: Any, body: Any, field: str | None, words: str
) -> None:
    with pytest.raises(HistoryRequestError) as caught:
        parse(body)
    error = caught.value
    assert isinstance(error, HlbookError)
    assert isinstance(error, ValueError)
    assert error.field == field
    assert words in str(error)
    assert error.request_type in str(error)


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("7d", 7 * 86_400_000),
        ("12h", 12 * 3_600_000),
        ("90m", 90 * 60_000),
        ("30s", 30_000),
        ("1w", 7 * 86_400_000),
        ("1d12h", 36 * 3_600_000),
        ("250ms", 250),
        (" 2d ", 2 * 86_400_000),
    ],
)
def test_durations(text: str, millis: int) -> None:
    assert parse_duration(text) == millis


@pytest.mark.parametrize("text", ["", "7", "d", "7 days", "-1d", "0d", "1.5h", "7D", "1d 2h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
