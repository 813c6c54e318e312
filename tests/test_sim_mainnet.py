"""The simulator's output passes the checks the real mainnet slice passes, and looks like it."""

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import pytest
from fixtures import MainnetSlice
from msgspec import UNSET

from hlbook.book.books import Books
from hlbook.model import Block
from hlbook.node.formats import (
    DiffLine,
    FillLine,
    Layout,
    StatusLine,
    Stream,
    decode_line,
    decode_snapshot,
    time_ms,
)
from hlbook.numbers import parse
from hlbook.sim import BlockGenerator, LineRenderer, SimConfig

REJECTIONS = {"badAloPxRejected", "perpMarginRejected", "iocCancelRejected", "minTradeNtlRejected"}


@attrs.define
class Checked:
    """What :func:`check_blocks` saw."""

    blocks: int = 0
    statuses: Counter[str] = attrs.field(factory=Counter)
    updates: int = 0
    trades: int = 0
    crossed: list[tuple[int, str]] = attrs.field(factory=list)

    def share(self, status: str) -> float:
        return self.statuses[status] / sum(self.statuses.values())


def check_blocks(books: Books, blocks: Iterable[Block]) -> Checked:
    """Apply ``blocks`` and check the invariants a real node's output satisfies.

    Besides hlbook's own checks (``Books.apply`` refuses unknown oids and wrong
    sizes), a naive oid → size map checks every ``update``'s ``origSz``
    independently, every trade has two fills with one taker, and no book is
    ever crossed.
    """
    sizes = {
        o.oid: parse(o.sz) for c in books.coins() for side in books.coin_orders(c) for o in side
    }
    checked = Checked()
    for block in blocks:
        for event in block.diffs:
            raw = event.raw_book_diff
            if isinstance(raw, str):
                assert sizes.pop(event.oid, None) is not None, f"remove of unknown {event.oid}"
            elif raw.new is not UNSET:
                assert event.oid not in sizes, f"new of resting {event.oid}"
                sizes[event.oid] = parse(raw.new.sz)
            else:
                assert raw.update is not UNSET
                assert sizes[event.oid] == parse(raw.update.origSz), f"origSz of {event.oid}"
                sizes[event.oid] = parse(raw.update.newSz)
                checked.updates += 1
        by_tid: dict[int, list[bool]] = {}
        for _user, fill in block.fills:
            by_tid.setdefault(fill.tid, []).append(fill.crossed)
        for tid, crossed in by_tid.items():
            assert sorted(crossed) == [False, True], f"trade {tid}: {crossed}"
        checked.trades += len(by_tid)
        applied = books.apply(block)
        for coin, book in applied.touched.items():
            if book.is_crossed():
                checked.crossed.append((block.height, coin))
        checked.statuses.update(event.status for event in block.statuses)
        checked.blocks += 1
    return checked


# -- the real slice ------------------------------------------------------------------------


def _blocks(lines: dict[Stream, list[bytes]]) -> Iterator[Block]:
    decoded = {s: [decode_line(s, line) for line in lines[s]] for s in Stream}
    for status, diff, fill in zip(*(decoded[s] for s in Stream), strict=True):
        assert isinstance(status, StatusLine)
        assert isinstance(diff, DiffLine)
        assert isinstance(fill, FillLine)
        assert status.block_number == diff.block_number == fill.block_number
        yield Block(
            status.block_number, time_ms(status.block_time), status.events, diff.events, fill.events
        )


@pytest.fixture(scope="module")
def real(mainnet: MainnetSlice) -> Checked:
    height, coins = decode_snapshot(mainnet.snapshot)
    return check_blocks(Books.from_snapshot(height, coins), _blocks(mainnet.lines))


# -- the simulator -----------------------------------------------------------------------------


def _simulate(config: SimConfig, count: int) -> tuple[Books, list[Block]]:
    generator = BlockGenerator(config)
    height, coins = decode_snapshot(generator.snapshot_bytes())
    books = Books.from_snapshot(height, coins)
    renderer = LineRenderer(Layout.BY_BLOCK, random.Random(0))
    blocks: list[Block] = []
    for _ in range(count):
        segments = renderer.render(generator.step())
        lines = {s: [ln for _, data in segments[s] for ln in data.splitlines()] for s in Stream}
        blocks.extend(_blocks(lines))
    return books, blocks


@pytest.fixture(scope="module")
def sim_btc() -> Checked:
    books, blocks = _simulate(SimConfig(node_data="/x", coins=("BTC",), seed=5), 120)
    return check_blocks(books, blocks)


@pytest.fixture(scope="module")
def sim_all() -> Checked:
    books, blocks = _simulate(SimConfig(node_data="/x", scale=0.3, seed=6), 150)
    return check_blocks(books, blocks)


def test_the_real_slice_passes_the_checks(real: Checked) -> None:
    assert real.blocks == 51
    assert real.updates > 0
    assert real.trades == 11
    assert real.crossed == []


@pytest.mark.parametrize("checked", ["sim_btc", "sim_all"])
def test_the_simulator_passes_the_same_checks(checked: str, request: pytest.FixtureRequest) -> None:
    result: Checked = request.getfixturevalue(checked)
    assert result.crossed == []
    assert result.updates > 10
    assert result.trades > 20
    assert result.statuses["triggered"] + result.statuses["filled"] > 0


def test_btc_statuses_in_mainnet_proportions(real: Checked, sim_btc: Checked) -> None:
    # Real BTC: 95.3% badAloPxRejected, canceled/open 1.6% each, perpMarginRejected 1.1%,
    # iocCancelRejected 0.4%, a few filled.
    assert abs(sim_btc.share("badAloPxRejected") - real.share("badAloPxRejected")) < 0.015
    for status in ("canceled", "open", "perpMarginRejected", "iocCancelRejected"):
        ratio = sim_btc.share(status) / real.share(status)
        assert 0.6 < ratio < 1.6, (status, sim_btc.share(status), real.share(status))
    assert 0 < sim_btc.share("filled") < 0.005


def test_most_statuses_are_rejections_across_all_coins(sim_all: Checked) -> None:
    rejected = sum(sim_all.statuses[s] for s in REJECTIONS | {"insufficientSpotBalanceRejected"})
    assert rejected / sum(sim_all.statuses.values()) > 0.5
    assert sim_all.statuses.most_common(1)[0][0] == "badAloPxRejected"


def _keys(value: Any) -> list[str]:
    return list(value) if isinstance(value, dict) else []


def _shape(line: bytes) -> dict[str, list[str]]:
    """Key order of a line, its events, and the objects inside them."""
    obj = json.loads(line)
    shape = {"line": _keys(obj)}
    for event in obj["events"]:
        if isinstance(event, list):  # a fill: [user, fill]
            shape.setdefault("fill", _keys(event[1]))
        elif "order" in event:
            shape.setdefault("status", _keys(event))
            shape.setdefault("order", _keys(event["order"]))
        elif isinstance(event["raw_book_diff"], dict):
            kind = next(iter(event["raw_book_diff"]))
            shape.setdefault(f"diff-{kind}", _keys(event) + _keys(event["raw_book_diff"][kind]))
    return shape


def test_lines_have_the_real_node_shape(mainnet: MainnetSlice) -> None:
    generator = BlockGenerator(SimConfig(node_data="/x", seed=1))
    renderer = LineRenderer(Layout.BY_BLOCK, random.Random(0))
    sim: dict[str, list[str]] = {}
    for _ in range(5):
        for segments in renderer.render(generator.step()).values():
            for _hour, data in segments:
                for line in data.splitlines():
                    for key, keys in _shape(line).items():
                        sim.setdefault(key, keys)
    real: dict[str, list[str]] = {}
    for lines in mainnet.lines.values():
        for line in lines:
            for key, keys in _shape(line).items():
                real.setdefault(key, keys)
    # Optional fill fields (cloid) may or may not be in the first fill seen.
    for shapes in (sim, real):
        shapes["fill"] = [key for key in shapes["fill"] if key != "cloid"]
    assert sim == real
