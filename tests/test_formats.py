"""Node line and event formats: decoding, validation, errors, snapshots."""

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fixtures import (
    BASE_MS,
    OTHER,
    USER,
    MainnetSlice,
    fill,
    line,
    new,
    node_time,
    order_obj,
    remove,
    status,
    update,
)
from hypothesis import given
from hypothesis import strategies as st
from msgspec import UNSET

from hlbook.errors import NodeFormatError, SnapshotError
from hlbook.node.formats import (
    DiffLine,
    FillLine,
    Layout,
    NewDiff,
    RawDiff,
    StatusLine,
    Stream,
    UpdateDiff,
    decode_line,
    decode_snapshot,
    encode,
    encode_snapshot,
    iter_snapshot,
    normalize_side,
    time_ms,
)

H = 985148182


def status_line(*events: Any, height: int = H) -> StatusLine:
    decoded = decode_line(Stream.STATUSES, line(height, events))
    assert isinstance(decoded, StatusLine)
    return decoded


def diff_line(*events: Any, height: int = H) -> DiffLine:
    decoded = decode_line(Stream.DIFFS, line(height, events))
    assert isinstance(decoded, DiffLine)
    return decoded


def fill_line(*events: Any, height: int = H) -> FillLine:
    decoded = decode_line(Stream.FILLS, line(height, events))
    assert isinstance(decoded, FillLine)
    return decoded


# -- streams and layouts -------------------------------------------------------


def test_stream_directories() -> None:
    assert Stream.STATUSES.dirname(Layout.BY_BLOCK) == "node_order_statuses_by_block"
    assert Stream.DIFFS.dirname(Layout.STREAMING) == "node_raw_book_diffs_streaming"
    assert Stream.FILLS.dirname(Layout.BY_BLOCK) == "node_fills_by_block"


# -- times ---------------------------------------------------------------------


def test_time_ms_examples() -> None:
    assert time_ms("2026-05-05T17:39:13.024084407") == 1778002753024
    assert time_ms("2026-05-05T17:39:13") == 1778002753000
    assert time_ms("2026-05-05T17:39:13.5") == 1778002753500
    assert time_ms("2026-05-05T17:39:13.999999999") == 1778002753999
    assert time_ms("1970-01-01T00:00:00.000000001") == 0


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_time_ms_matches_datetime(moment: datetime) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "417"  # nanoseconds, like the node
    expected = (
        int(moment.replace(microsecond=0, tzinfo=UTC).timestamp()) * 1000
        + moment.microsecond // 1000
    )
    assert time_ms(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-05-05",
        "2026-13-05T17:39:13.024",
        "2026-05-05T25:39:13.024",
        "2026-05-05T17:39:13.",
        "2026-05-05T17:39:13Z",
        "2026-05-05T17:39:13,024",
        "2026-05-05T17:39:13.024Z",
        "2026-05-05T17:39:13.024084407+00:00",
        "2026-05-05T17:39:13.02x",
        "2026-05-05T17:39:13.-12",
        "2026-05-05T17:39:13.٠٢٤",  # non-ASCII digits
    ],
)
def test_time_ms_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad time"):
        time_ms(text)


def test_node_time_helper_round_trips() -> None:
    assert node_time(BASE_MS) == "2026-05-05T17:39:13.024084407"
    assert time_ms(node_time(BASE_MS + 12345)) == BASE_MS + 12345


# -- sides ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "side"), [("A", "A"), ("B", "B"), ("Ask", "A"), ("Bid", "B"), (UNSET, None)]
)
def test_normalize_side(raw: Any, side: str | None) -> None:
    assert normalize_side(raw) == side


@pytest.mark.parametrize("raw", ["a", "b", "S", "Sell", "ask", "", 1])
def test_normalize_side_rejects(raw: Any) -> None:
    with pytest.raises(ValueError, match="unknown side"):
        normalize_side(raw)


# -- statuses ------------------------------------------------------------------


def test_status_line_by_block() -> None:
    decoded = status_line(
        status(1, "open", side="A", px="81311.0", sz="0.61488", cloid="0xabc"),
        status(2, "badAloPxRejected", px="65045.0", sz="0.0003"),
    )
    assert decoded.block_number == H
    assert time_ms(decoded.block_time) == BASE_MS + 70 * (H % 1_000_000)
    first, second = decoded.events
    assert first.status == "open"
    assert first.user == USER
    assert first.hash is None
    assert first.parsed_order().oid == 1
    assert first.parsed_order().side == "A"
    assert first.parsed_order().limitPx == "81311.0"
    assert first.parsed_order().sz == "0.61488"
    assert first.parsed_order().cloid == "0xabc"
    assert first.parsed_order().tif == "Alo"
    assert first.parsed_order().user is UNSET  # not part of the node's order object
    assert second.status == "badAloPxRejected"


def test_status_line_streaming_single_event() -> None:
    # Streaming lines carry the same wrapper with (often) one event.
    decoded = status_line(status(7, "canceled"), height=H + 5)
    assert decoded.block_number == H + 5
    assert [e.parsed_order().oid for e in decoded.events] == [7]


def test_status_unknown_fields_and_statuses_are_kept_or_ignored() -> None:
    event = status(9, "someFutureStatus", extra_order_field={"x": [1, 2]})
    event["brandNewField"] = 12
    raw = orjson.loads(line(H, [event]))
    raw["another_wrapper_field"] = "ignored"
    decoded = decode_line(Stream.STATUSES, orjson.dumps(raw))
    assert isinstance(decoded, StatusLine)
    assert decoded.events[0].status == "someFutureStatus"
    assert decoded.events[0].parsed_order().oid == 9


def test_status_open_side_bid_ask_accepted_and_kept_verbatim() -> None:
    # Older nodes write Bid/Ask: accepted; the order object is kept as written (l4Book
    # forwards it verbatim) and the book normalises the side where it uses it.
    decoded = status_line(status(1, "open", side="Bid"), status(2, "triggered", side="Ask"))
    sides = [e.parsed_order().side for e in decoded.events]
    assert sides == ["Bid", "Ask"]
    assert [normalize_side(side) for side in sides] == ["B", "A"]


def test_status_missing_optional_fields_get_defaults() -> None:
    order = {
        "coin": "@107",
        "side": "B",
        "limitPx": "0.012345",
        "sz": "10.0",
        "oid": 5,
        "timestamp": BASE_MS,
    }
    event = {"time": node_time(BASE_MS), "user": USER, "status": "open", "order": order}
    decoded = status_line(event)
    got = decoded.events[0]
    assert got.hash is None
    assert got.builder is None
    assert got.parsed_order().tif is None
    assert got.parsed_order().cloid is None
    assert got.parsed_order().triggerCondition == "N/A"
    assert got.parsed_order().isTrigger is False
    assert got.parsed_order().children == ()


def test_rejected_statuses_are_not_interpreted() -> None:
    # 95% of mainnet statuses are rejections; their numbers are never needed.
    decoded = status_line(status(1, "badAloPxRejected", px="not a number", side="?"))
    assert decoded.events[0].parsed_order().limitPx == "not a number"


# -- diffs ---------------------------------------------------------------------


def test_diff_kinds() -> None:
    decoded = diff_line(
        new(1, side="A", px="81311.0", sz="0.61488"),
        new(2, side="B", before=1),
        update(3, "0.1804", "0.18007", side="A"),
        remove(4, side="B"),
    )
    first, second, third, fourth = decoded.events
    assert isinstance(first.raw_book_diff, RawDiff)
    assert first.raw_book_diff.new == NewDiff(sz="0.61488")
    assert first.raw_book_diff.update is UNSET
    assert first.raw_book_diff.new.insertBefore is UNSET
    assert isinstance(second.raw_book_diff, RawDiff)
    assert second.raw_book_diff.new is not UNSET
    assert second.raw_book_diff.new.insertBefore == 1
    assert isinstance(third.raw_book_diff, RawDiff)
    assert third.raw_book_diff.update == UpdateDiff(origSz="0.1804", newSz="0.18007")
    assert fourth.raw_book_diff == "remove"
    assert [e.oid for e in decoded.events] == [1, 2, 3, 4]


def test_diff_insert_before_null() -> None:
    event = new(1)
    event["raw_book_diff"]["new"]["insertBefore"] = None
    decoded = diff_line(event)
    raw = decoded.events[0].raw_book_diff
    assert isinstance(raw, RawDiff)
    assert raw.new is not UNSET
    assert raw.new.insertBefore is None


@pytest.mark.parametrize(("raw", "side"), [("A", "A"), ("B", "B"), ("Ask", "A"), ("Bid", "B")])
def test_diff_sides(raw: str, side: str) -> None:
    assert diff_line(remove(1, side=raw)).events[0].side == side


def test_diff_side_absent() -> None:
    assert diff_line(remove(1, side=None)).events[0].side is UNSET


def test_diff_unknown_fields_ignored() -> None:
    event = new(1)
    event["future"] = True
    event["raw_book_diff"]["new"]["hint"] = "x"
    assert diff_line(event).events[0].oid == 1


# -- fills ---------------------------------------------------------------------


def test_fill_events() -> None:
    decoded = fill_line(
        fill(USER, 316059956208702, side="B", crossed=True, px="81308.0", sz="0.00033"),
        fill(
            OTHER,
            316059956208702,
            side="A",
            crossed=False,
            cloid="0x01",
            twapId=None,
            liquidation={"method": "market"},
            builderFee="0.1",
        ),
    )
    (u1, f1), (u2, f2) = decoded.events
    assert (u1, u2) == (USER, OTHER)
    assert f1.tid == f2.tid == 316059956208702
    assert f1.crossed
    assert not f2.crossed
    assert f1.cloid is UNSET
    assert f2.cloid == "0x01"
    assert f2.twapId is None
    assert f2.builderFee == "0.1"


def test_fill_side_normalized() -> None:
    decoded = fill_line(fill(USER, 1, side="Bid", crossed=True))
    assert decoded.events[0][1].side == "B"


# -- round trips ---------------------------------------------------------------


def test_mainnet_lines_decode_and_reencode(mainnet: MainnetSlice) -> None:
    for stream, lines in mainnet.lines.items():
        for raw in lines[:5]:
            decoded = decode_line(stream, raw)
            assert decoded.block_number >= mainnet.height + 1
            again = decode_line(stream, encode(decoded))
            assert again == decoded


def test_decode_accepts_str() -> None:
    text = line(H, [remove(1)]).decode()
    assert decode_line(Stream.DIFFS, text).block_number == H


# -- malformed lines -----------------------------------------------------------


def _wrap(events: Any, height: Any = H, **fields: Any) -> bytes:
    body = {
        "local_time": node_time(BASE_MS + 300),
        "block_time": node_time(BASE_MS),
        "block_number": height,
        "events": events,
    }
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def _with(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``event`` with ``path`` set to ``value`` (``...`` deletes it)."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(event))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


GOOD_LINE = line(H, [new(1)])
_OPEN = status(1, "open")
_NEW = new(1)
_FILL = fill(USER, 1, side="B", crossed=True)[1]

# (stream, line bytes, block the error must name (None: unreadable), reason substring)
MALFORMED: list[tuple[Stream, bytes, int | None, str]] = [
    # not JSON / not an object / empty
    (Stream.DIFFS, b"", None, "truncated"),
    (Stream.DIFFS, b"   ", None, "truncated"),
    (Stream.DIFFS, b"not json", None, "invalid"),
    (Stream.STATUSES, b"[]", None, "Expected `object`"),
    (Stream.STATUSES, b"null", None, "Expected `object`"),
    (Stream.FILLS, b"42", None, "Expected `object`"),
    (Stream.FILLS, b'"line"', None, "Expected `object`"),
    # truncated mid-line (the writer was mid-line): the height is still readable
    (Stream.DIFFS, GOOD_LINE[: len(GOOD_LINE) // 2], H, "truncated"),
    (Stream.DIFFS, GOOD_LINE[:-1], H, "truncated"),
    (Stream.DIFFS, GOOD_LINE + b"garbage", H, "trailing"),
    # the wrapper
    (Stream.DIFFS, _wrap([], height=...), None, "block_number"),
    (
        Stream.DIFFS,
        orjson.dumps({"block_time": node_time(BASE_MS), "events": []}),
        None,
        "block_number",
    ),
    (Stream.DIFFS, _wrap([], height="985148182"), None, "Expected `int`"),
    (Stream.DIFFS, _wrap([], height=1.5), None, "Expected `int`"),
    (Stream.DIFFS, _wrap({}), H, "Expected `array`"),
    (Stream.DIFFS, _wrap(None), H, "Expected `array`"),
    (Stream.DIFFS, _wrap([], block_time="yesterday"), H, "bad time"),
    (Stream.DIFFS, _wrap([], block_time=12), H, "Expected `str`"),
    (Stream.STATUSES, _wrap([], block_time="2026-13-45T17:39:13.0"), H, "bad time"),
    # diff events
    (Stream.DIFFS, _wrap([1]), H, "Expected `object`"),
    (Stream.DIFFS, _wrap([[]]), H, "Expected `object`"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("oid",), "1")]), H, "Expected `int`"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("oid",), ...)]), H, "oid"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("coin",), ...)]), H, "coin"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("user",), ...)]), H, "user"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("px",), ...)]), H, "px"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("px",), 100.0)]), H, "Expected `str`"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("px",), "1e2")]), H, "not a decimal"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("px",), "NaN")]), H, "not a decimal"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("side",), "C")]), H, "unknown side"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("side",), 1)]), H, "Expected `str`"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("side",), None)]), H, "Expected `str`"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("raw_book_diff",), ...)]), H, "raw_book_diff"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("raw_book_diff",), None)]), H, "raw_book_diff"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("raw_book_diff",), "removed")]), H, "raw_book_diff"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("raw_book_diff",), {})]), H, "unknown diff kind"),
    (
        Stream.DIFFS,
        _wrap([_with(_NEW, ("raw_book_diff",), {"modify": {"sz": "1.0"}})]),
        H,
        "unknown diff kind",
    ),
    (
        Stream.DIFFS,
        _wrap(
            [
                _with(
                    _NEW,
                    ("raw_book_diff",),
                    {"new": {"sz": "1.0"}, "update": {"origSz": "1.0", "newSz": "0.5"}},
                )
            ]
        ),
        H,
        "unknown diff kind",
    ),
    (Stream.DIFFS, _wrap([_with(_NEW, ("raw_book_diff", "new", "sz"), ...)]), H, "sz"),
    (Stream.DIFFS, _wrap([_with(_NEW, ("raw_book_diff", "new", "sz"), "-")]), H, "not a decimal"),
    (
        Stream.DIFFS,
        _wrap([_with(_NEW, ("raw_book_diff", "new", "insertBefore"), "x")]),
        H,
        "insertBefore",
    ),
    (Stream.DIFFS, _wrap([update(1, "1.0", "1e-3")]), H, "not a decimal"),
    (Stream.DIFFS, _wrap([update(1, "abc", "1.0")]), H, "not a decimal"),
    (
        Stream.DIFFS,
        _wrap([_with(update(1, "1.0", "0.5"), ("raw_book_diff", "update", "newSz"), ...)]),
        H,
        "newSz",
    ),
    # status events
    (Stream.STATUSES, _wrap([_with(_OPEN, ("order",), ...)]), H, "order"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("order",), [])]), H, "Expected `object`"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("status",), 3)]), H, "Expected `str`"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("user",), ...)]), H, "user"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("time",), ...)]), H, "time"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("time",), "noon")]), H, "bad time"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("order", "oid"), ...)]), H, "oid"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("order", "oid"), -1.5)]), H, "Expected `int`"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("order", "limitPx"), "81,311")]), H, "not a decimal"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("order", "sz"), "")]), H, "not a decimal"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("order", "side"), "X")]), H, "unknown side"),
    (Stream.STATUSES, _wrap([_with(_OPEN, ("order", "isTrigger"), "no")]), H, "Expected `bool`"),
    (
        Stream.STATUSES,
        _wrap([_with(status(1, "triggered"), ("order", "sz"), "1e1")]),
        H,
        "not a decimal",
    ),
    # fill events
    (Stream.FILLS, _wrap([_FILL]), H, "Expected `array`"),
    (Stream.FILLS, _wrap([[USER]]), H, "length"),
    (Stream.FILLS, _wrap([[USER, _FILL, 1]]), H, "length"),
    (Stream.FILLS, _wrap([[1, _FILL]]), H, "Expected `str`"),
    (Stream.FILLS, _wrap([[USER, _with(_FILL, ("side",), "Z")]]), H, "unknown side"),
    (Stream.FILLS, _wrap([[USER, _with(_FILL, ("px",), "8.1e4")]]), H, "not a decimal"),
    (Stream.FILLS, _wrap([[USER, _with(_FILL, ("sz",), 1)]]), H, "Expected `str`"),
    (Stream.FILLS, _wrap([[USER, _with(_FILL, ("tid",), ...)]]), H, "tid"),
    (Stream.FILLS, _wrap([[USER, _with(_FILL, ("crossed",), ...)]]), H, "crossed"),
    (Stream.FILLS, _wrap([[USER, _with(_FILL, ("time",), "now")]]), H, "Expected `int`"),
]


@pytest.mark.parametrize(
    ("stream", "data", "block", "reason"),
    MALFORMED,
    ids=[f"{i}-{case[0].value}-{case[3]}" for i, case in enumerate(MALFORMED)],
)
def test_malformed_lines(stream: Stream, data: bytes, block: int | None, reason: str) -> None:
    with pytest.raises(NodeFormatError) as info:
        decode_line(stream, data, where="file 17 @1234")
    error = info.value
    assert error.stream == stream.value
    assert error.block == block
    assert reason in error.reason
    assert error.where == "file 17 @1234"
    text = str(error)
    assert stream.value in text
    assert reason in text
    assert "file 17 @1234" in text
    if block is not None:
        assert f"block {block}" in text


def test_malformed_line_error_without_where() -> None:
    with pytest.raises(NodeFormatError) as info:
        decode_line(Stream.FILLS, b"{")
    assert info.value.where is None
    assert str(info.value).startswith("malformed fills line: ")


def test_each_stream_uses_its_own_schema() -> None:
    # A perfectly good diff line is not a status line.
    with pytest.raises(NodeFormatError) as info:
        decode_line(Stream.STATUSES, line(H, [new(1)]))
    assert info.value.block == H
    assert info.value.stream == "order_statuses"


@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    for stream in Stream:
        error: NodeFormatError | None = None
        try:
            decode_line(stream, data)
        except NodeFormatError as exc:
            error = exc
        assert error is None or error.stream == stream.value


@given(st.integers(min_value=1, max_value=len(GOOD_LINE) - 1))
def test_every_truncation_is_a_format_error(cut: int) -> None:
    with pytest.raises(NodeFormatError) as info:
        decode_line(Stream.DIFFS, GOOD_LINE[:cut])
    # The height is named as soon as it was written out in full.
    full = GOOD_LINE.index(str(H).encode()) + len(str(H)) + 1
    if cut >= full:
        assert info.value.block == H


# -- snapshots -----------------------------------------------------------------


def _snapshot_body() -> list[Any]:
    return [
        [
            "BTC",
            [
                [
                    [USER, order_obj(1, side="B", px="100.0", sz="1.0")],
                    [OTHER, order_obj(2, side="B", px="100.0", sz="2.5")],
                    [USER, order_obj(3, side="B", px="99.0", sz="0.1")],
                ],
                [[OTHER, order_obj(4, side="A", px="101.0", sz="3.0", cloid="0x44")]],
            ],
        ],
        ["@107", [[], [[USER, order_obj(5, coin="@107", side="A", px="0.012345", sz="7.0")]]]],
    ]


def test_snapshot_with_height() -> None:
    height, coins = decode_snapshot(orjson.dumps([H, _snapshot_body()]))
    assert height == H
    decoded = list(coins)
    assert [c for c, _, _ in decoded] == ["BTC", "@107"]
    _, bids, asks = decoded[0]
    assert [(u, o.oid, o.sz) for u, o in bids] == [
        (USER, 1, "1.0"),
        (OTHER, 2, "2.5"),
        (USER, 3, "0.1"),
    ]
    assert [o.cloid for _, o in asks] == ["0x44"]
    assert decoded[1][1] == []


def test_snapshot_given_height_must_agree() -> None:
    data = orjson.dumps([H, _snapshot_body()])
    assert decode_snapshot(data, H)[0] == H
    with pytest.raises(SnapshotError, match="expected"):
        decode_snapshot(data, H + 1)


def test_snapshot_without_height() -> None:
    data = orjson.dumps(_snapshot_body())
    height, coins = decode_snapshot(data, H)
    assert height == H
    assert [c for c, _, _ in coins] == ["BTC", "@107"]
    with pytest.raises(SnapshotError):
        decode_snapshot(data)


def test_snapshot_sides_bid_ask_spelled_out() -> None:
    body = _snapshot_body()
    body[0][1][0][0][1]["side"] = "Bid"
    body[0][1][1][0][1]["side"] = "Ask"
    _, coins = decode_snapshot(orjson.dumps([H, body]))
    _, bids, asks = next(coins)
    assert bids[0][1].side == "B"
    assert asks[0][1].side == "A"


def test_iter_snapshot_splits_coins_lazily() -> None:
    height, coins = iter_snapshot(orjson.dumps([H, _snapshot_body()]))
    assert height == H
    assert [coin for coin, _ in coins] == ["BTC", "@107"]


def test_snapshot_round_trip() -> None:
    height, coins = decode_snapshot(orjson.dumps([H, _snapshot_body()]))
    decoded = list(coins)
    for with_height in (True, False):
        data = encode_snapshot(height if with_height else None, decoded)
        again_height, again = decode_snapshot(data, None if with_height else height)
        assert again_height == height
        assert list(again) == decoded


def _bad_snapshots() -> list[tuple[str, bytes]]:
    good = _snapshot_body()
    cases: list[tuple[str, bytes]] = [
        ("empty", b""),
        ("truncated", orjson.dumps([H, good])[:-10]),
        ("not a list", b'{"height": 1}'),
        ("height string", orjson.dumps(["985148181", good])),
        ("coins not a list", orjson.dumps([H, {"BTC": []}])),
        ("coin not a pair", orjson.dumps([H, [["BTC"]]])),
        ("coin name number", orjson.dumps([H, [[1, [[], []]]]])),
    ]

    def variant(name: str, edit: Any) -> None:
        body = orjson.loads(orjson.dumps(good))
        edit(body)
        cases.append((name, orjson.dumps([H, body])))

    variant("ask among bids", lambda b: b[0][1][0][0][1].update(side="A"))
    variant("bid among asks", lambda b: b[0][1][1][0][1].update(side="B"))
    variant("unknown side", lambda b: b[0][1][0][0][1].update(side="X"))
    variant("bad px", lambda b: b[0][1][0][0][1].update(limitPx="1e2"))
    variant("bad sz", lambda b: b[1][1][1][0][1].update(sz="seven"))
    variant("px number", lambda b: b[0][1][0][0][1].update(limitPx=100.0))
    variant("missing oid", lambda b: b[0][1][0][0][1].pop("oid"))
    variant("entry not a pair", lambda b: b[0][1][0].__setitem__(0, [USER]))
    variant("three sides", lambda b: b[0][1].append([]))
    return cases


@pytest.mark.parametrize(
    ("name", "data"), _bad_snapshots(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_malformed_snapshots(name: str, data: bytes) -> None:
    def load() -> None:
        _, coins = decode_snapshot(data)
        list(coins)  # coins are decoded (and checked) lazily

    with pytest.raises(SnapshotError):
        load()
