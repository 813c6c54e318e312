"""Builders for history-store tests: node-shaped blocks at chosen times, and a recorder run."""

from collections.abc import Iterable, Sequence
from typing import Any

from fixtures import fill, line, status

from hlbook.history import HistoryRecorder
from hlbook.model import Block
from hlbook.node.formats import FillLine, StatusLine, Stream, decode_line, time_ms
from hlbook.stages import Stage

ALICE = "0x1624a8af8b91cc781586b4d7a33b8e693dc11015"
BOB = "0x5eaac7c475b1fad85701f02c4e9e796a53f94bd5"
CAROL = "0x0fd468a73084daa6ea77a9261e40fdec3e67e0c7"

T0 = 1778002753024
"""2026-05-05T17:39:13.024 UTC (the mainnet slice's first block)."""


def make_block(
    height: int,
    time: int,
    *,
    fills: Sequence[list[Any]] = (),
    statuses: Sequence[dict[str, Any]] = (),
) -> Block:
    """A block decoded from node lines, with block time ``time`` (ms)."""
    fill_line = decode_line(Stream.FILLS, line(height, fills, block_ms=time))
    status_line = decode_line(Stream.STATUSES, line(height, statuses, block_ms=time))
    assert isinstance(fill_line, FillLine)
    assert isinstance(status_line, StatusLine)
    return Block(height, time_ms(fill_line.block_time), status_line.events, [], fill_line.events)


def trade_fills(
    tid: int,
    time: int,
    *,
    buyer: str = ALICE,
    seller: str = BOB,
    coin: str = "BTC",
    px: str = "100.0",
    sz: str = "1.0",
    taker_side: str = "B",
    taker_oid: int | None = None,
    maker_oid: int | None = None,
    **extra: Any,
) -> list[list[Any]]:
    """The two node fills (buyer's, seller's) of one trade; the taker is on ``taker_side``."""
    taker_oid = tid * 2 if taker_oid is None else taker_oid
    maker_oid = tid * 2 + 1 if maker_oid is None else maker_oid
    buy_taker = taker_side == "B"
    return [
        fill(
            buyer,
            tid,
            side="B",
            crossed=buy_taker,
            coin=coin,
            px=px,
            sz=sz,
            time=time,
            oid=taker_oid if buy_taker else maker_oid,
            **extra,
        ),
        fill(
            seller,
            tid,
            side="A",
            crossed=not buy_taker,
            coin=coin,
            px=px,
            sz=sz,
            time=time,
            oid=maker_oid if buy_taker else taker_oid,
            **extra,
        ),
    ]


def finished(
    oid: int, kind: str = "canceled", *, user: str = ALICE, time: int = T0, **order: Any
) -> dict[str, Any]:
    """A node status event ``kind`` for ``oid`` at ``time``."""
    return status(oid, kind, user=user, time_ms=time, **order)


def record(recorder: HistoryRecorder, blocks: Iterable[Block]) -> None:
    """Publish each block's FILLS and STATUSES stages, as the data path does."""
    for block in blocks:
        for stage in Stage:
            recorder.publish(stage, block, None, {})  # type: ignore[arg-type]
