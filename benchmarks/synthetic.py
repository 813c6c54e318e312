"""Benchmark: synthetic mainnet-scale blocks, end to end from bytes, as a multiple of mainnet.

Mainnet averages ~15k events/s (≈14.5 blocks/s × ≈1,077 status + diff events).
This builds books of ~100k resting orders over ~200 coins and blocks of ~700
statuses (~95% rejections, as on mainnet) + ~400 diffs (+ a few fills),
pre-encoded as the node's by-block lines, then times the book task's whole
job from bytes: decode all three lines, join, apply, L2 top-20 of both sides +
bbo + trades for every touched coin.

It also runs the same lines through a dict-based pipeline (``orjson.loads`` →
dicts, the same book structure, number caches and L2 view caches, orders kept
as dicts) to confirm or refute "msgspec Structs are ~3x faster than dicts for
the whole ingest pipeline, mostly by avoiding GC work", printing events/s and
the garbage collector's collections and time (via ``gc.callbacks``) for each,
and the dict pipeline once more with the collector disabled.

Then ``--rounds`` rounds alternate the two pipelines and print the median ratio,
in wall time and in CPU time (on a shared machine the best-of runs above can
land in different moments of load).

Run: ``python benchmarks/synthetic.py [--blocks N] [--orders N] [--rounds N] [--profile]``
"""

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from synthdata import BlockLines, blocks, make_world, snapshot

from hlbook.book.books import Books
from hlbook.book.l2 import bbo, l2_levels
from hlbook.book.l4 import ASK, BID, CoinBook, Level
from hlbook.book.trades import trades_by_coin
from hlbook.errors import DuplicateOrderError, OrderMismatchError, UnknownOrderError
from hlbook.model import Block
from hlbook.node.formats import (
    Layout,
    Stream,
    decode_line,
    decode_snapshot,
    normalize_side,
    time_ms,
)
from hlbook.node.join import BlockJoiner
from hlbook.numbers import canonical, fmt, parse

MAINNET_EVENTS_PER_S = 15_000


# -- GC accounting ----------------------------------------------------------------------


@dataclass
class GcStats:
    """Collections per generation and total time spent in the collector."""

    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    seconds: float = 0.0
    _started: float = 0.0

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1


CPU_SECONDS: list[float] = []
"""CPU time of each :func:`measured` run, in order (the machine is shared: wall time
includes waiting for a core)."""


def measured(run: Callable[[], int]) -> tuple[float, int, GcStats]:
    """Run ``run`` with GC accounting; return (seconds, events, gc stats)."""
    stats = GcStats()
    gc.collect()
    gc.callbacks.append(stats.callback)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        events = run()
        elapsed = time.perf_counter() - started
        CPU_SECONDS.append(time.process_time() - cpu)
    finally:
        gc.callbacks.remove(stats.callback)
    return elapsed, events, stats


# -- the hlbook pipeline (msgspec Structs) ------------------------------------------------------


def struct_pipeline(books: Books, lines: list[BlockLines]) -> int:
    """hlbook's own path; returns the status + diff events processed."""
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(books.height)
    events = 0
    for block_lines in lines:
        for stream, raw in (
            (Stream.DIFFS, block_lines.diffs),
            (Stream.STATUSES, block_lines.statuses),
            (Stream.FILLS, block_lines.fills),
        ):
            line = decode_line(stream, raw)
            for item in joiner.feed(stream, line):
                assert isinstance(item, Block)
                applied = books.apply(item)
                for book in applied.touched.values():
                    l2_levels(book, BID, 20)
                    l2_levels(book, ASK, 20)
                    bbo(book)
                trades_by_coin(item.fills)
                events += len(item.statuses) + len(item.diffs)
    return events


# -- the same pipeline on dicts ------------------------------------------------------------------


class DictBooks:
    """The same books (CoinBook/Level, running totals, view caches) holding order dicts."""

    def __init__(self, height: int, data: bytes) -> None:
        self.height = height
        self.coins: dict[str, CoinBook] = {}
        self.index: dict[int, dict[str, Any]] = {}
        _, body = orjson.loads(data)
        for coin, (bids, asks) in body:
            book = self.coins[coin] = CoinBook(coin)
            for entries, levels in ((bids, book.bids), (asks, book.asks)):
                for user, order in entries:
                    order["user"] = user
                    order["limitPx"] = canonical(order["limitPx"])
                    order["sz"] = canonical(order["sz"])
                    px = parse(order["limitPx"])
                    level = levels.get(px)
                    if level is None:
                        level = levels[px] = Level(px, order["limitPx"])
                    level.append(order["oid"], parse(order["sz"]))
                    self.index[order["oid"]] = order


def _check_line(stream: Stream, line: dict[str, Any]) -> None:
    """What decode_line validates, on dicts."""
    time_ms(line["block_time"])
    for event in line["events"]:
        if stream is Stream.STATUSES:
            if event["status"] in ("open", "triggered"):
                order = event["order"]
                order["side"] = normalize_side(order["side"])
                parse(order["limitPx"])
                parse(order["sz"])
                time_ms(event["time"])
        elif stream is Stream.DIFFS:
            side = normalize_side(event.get("side"))
            if side is not None:
                event["side"] = side
            parse(event["px"])
            raw = event["raw_book_diff"]
            if raw != "remove":
                if "new" in raw:
                    parse(raw["new"]["sz"])
                else:
                    parse(raw["update"]["origSz"])
                    parse(raw["update"]["newSz"])
        else:
            fill = event[1]
            fill["side"] = normalize_side(fill["side"])
            parse(fill["px"])
            parse(fill["sz"])


def dict_apply(books: DictBooks, statuses: list[Any], diffs: list[Any]) -> dict[str, CoinBook]:
    """Books.apply's plan/commit, on dicts."""
    details: dict[int, Any] = {}
    for event in statuses:
        if event["status"] == "open":
            details.setdefault(event["order"]["oid"], event)
    overlay: dict[int, tuple[dict[str, Any], int] | None] = {}
    ops: list[tuple[int, dict[str, Any], int, Any]] = []
    for event in diffs:
        oid = event["oid"]
        if oid in overlay:
            current = overlay[oid]
        else:
            resting = books.index.get(oid)
            current = None if resting is None else (resting, parse(resting["sz"]))
        px = parse(event["px"])
        raw = event["raw_book_diff"]
        if raw == "remove":
            if current is None:
                raise UnknownOrderError("remove", height=books.height, oid=oid)
            if parse(current[0]["limitPx"]) != px or current[0]["coin"] != event["coin"]:
                raise OrderMismatchError("remove", height=books.height, oid=oid)
            ops.append((2, current[0], px, None))
            overlay[oid] = None
        elif "new" in raw:
            if current is not None:
                raise DuplicateOrderError("new", height=books.height, oid=oid)
            sz = canonical(raw["new"]["sz"])
            status = details.get(oid)
            if status is None:
                order = {
                    "user": event["user"],
                    "coin": event["coin"],
                    "side": event["side"],
                    "limitPx": fmt(px),
                    "sz": sz,
                    "oid": oid,
                    "timestamp": 0,
                    "triggerCondition": "N/A",
                    "isTrigger": False,
                    "triggerPx": "0.0",
                    "children": [],
                    "isPositionTpsl": False,
                    "reduceOnly": False,
                    "orderType": "Limit",
                    "origSz": sz,
                    "tif": None,
                    "cloid": None,
                }
            else:
                order = dict(status["order"], user=status["user"], limitPx=fmt(px), sz=sz)
            ops.append((0, order, px, None))
            overlay[oid] = (order, parse(sz))
        else:
            if current is None:
                raise UnknownOrderError("update", height=books.height, oid=oid)
            update = raw["update"]
            if parse(update["origSz"]) != current[1]:
                raise OrderMismatchError("update", height=books.height, oid=oid)
            new_size = parse(update["newSz"])
            ops.append((1, current[0], px, new_size))
            overlay[oid] = (current[0], new_size)
    touched: dict[str, CoinBook] = {}
    for kind, order, px, arg in ops:
        coin = order["coin"]
        book = books.coins.get(coin)
        if book is None:
            book = books.coins[coin] = CoinBook(coin)
        levels = book.bids if order["side"] == BID else book.asks
        if kind == 0:
            level = levels.get(px)
            if level is None:
                level = levels[px] = Level(px, order["limitPx"])
            level.append(order["oid"], parse(order["sz"]))
            books.index[order["oid"]] = order
        elif kind == 1:
            level = levels[px]
            level.resize(arg - parse(order["sz"]))
            order["sz"] = fmt(arg)
        else:
            level = levels[px]
            level.remove(order["oid"], parse(order["sz"]))
            if not level.oids:
                del levels[px]
            del books.index[order["oid"]]
        touched[coin] = book
    return touched


def dict_trades(fills: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """trades_by_coin on dicts."""
    by_tid: dict[int, list[Any]] = {}
    for user, fill in fills:
        by_tid.setdefault(fill["tid"], []).append((user, fill))
    out: dict[str, list[dict[str, Any]]] = {}
    for group in by_tid.values():
        taker = next((f for _, f in group if f["crossed"]), group[0][1])
        buyer = next((u for u, f in group if f["side"] == "B"), "")
        seller = next((u for u, f in group if f["side"] == "A"), "")
        out.setdefault(taker["coin"], []).append(
            {
                "coin": taker["coin"],
                "side": taker["side"],
                "px": canonical(taker["px"]),
                "sz": canonical(taker["sz"]),
                "hash": taker["hash"],
                "time": taker["time"],
                "tid": taker["tid"],
                "users": [buyer, seller],
            }
        )
    return out


def dict_pipeline(books: DictBooks, lines: list[BlockLines]) -> int:
    """The same work with orjson.loads → dicts (by-block join is trivial here)."""
    events = 0
    for block_lines in lines:
        parsed: dict[Stream, dict[str, Any]] = {}
        for stream, raw in (
            (Stream.DIFFS, block_lines.diffs),
            (Stream.STATUSES, block_lines.statuses),
            (Stream.FILLS, block_lines.fills),
        ):
            line = orjson.loads(raw)
            _check_line(stream, line)
            parsed[stream] = line
        height = parsed[Stream.DIFFS]["block_number"]
        assert height == books.height + 1
        statuses = parsed[Stream.STATUSES]["events"]
        diffs = parsed[Stream.DIFFS]["events"]
        touched = dict_apply(books, statuses, diffs)
        books.height = height
        for book in touched.values():
            l2_levels(book, BID, 20)
            l2_levels(book, ASK, 20)
            bbo(book)
        dict_trades(parsed[Stream.FILLS]["events"])
        events += len(statuses) + len(diffs)
    return events


def phases(books: Books, lines: list[BlockLines]) -> dict[str, float]:
    """Where hlbook's time goes: seconds per block in each step of struct_pipeline."""
    clock = time.perf_counter
    spent = dict.fromkeys(("decode", "join", "apply", "L2+bbo", "trades"), 0.0)
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(books.height)
    for block_lines in lines:
        for stream, raw in (
            (Stream.DIFFS, block_lines.diffs),
            (Stream.STATUSES, block_lines.statuses),
            (Stream.FILLS, block_lines.fills),
        ):
            started = clock()
            line = decode_line(stream, raw)
            decoded = clock()
            out = joiner.feed(stream, line)
            spent["decode"] += decoded - started
            spent["join"] += clock() - decoded
            for item in out:
                assert isinstance(item, Block)
                started = clock()
                applied = books.apply(item)
                applied_at = clock()
                for book in applied.touched.values():
                    l2_levels(book, BID, 20)
                    l2_levels(book, ASK, 20)
                    bbo(book)
                viewed = clock()
                trades_by_coin(item.fills)
                spent["apply"] += applied_at - started
                spent["L2+bbo"] += viewed - applied_at
                spent["trades"] += clock() - viewed
    return {name: seconds / len(lines) for name, seconds in spent.items()}


# -- main ---------------------------------------------------------------------------------------


def _report(name: str, seconds: float, events: int, stats: GcStats, blocks_n: int) -> float:
    rate = events / seconds
    gens = "/".join(str(n) for n in stats.collections)
    print(
        f"{name:<34} {rate:>10,.0f} events/s = {rate / MAINNET_EVENTS_PER_S:5.1f}x mainnet; "
        f"{seconds / blocks_n * 1000:5.2f} ms/block; gc gen0/1/2 {gens}, "
        f"{stats.seconds * 1000:.0f} ms in gc ({stats.seconds / seconds:.0%})"
    )
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--blocks", type=int, default=300, help="blocks to time (default 300)")
    parser.add_argument("--orders", type=int, default=100_000, help="resting orders at start")
    parser.add_argument("--coins", type=int, default=200)
    parser.add_argument("--statuses", type=int, default=700, help="statuses per block")
    parser.add_argument("--diffs", type=int, default=400, help="diffs per block")
    parser.add_argument(
        "--status-per-new",
        type=float,
        default=0.1,
        help="share of new orders with an open status (default 0.1 keeps ~95%% rejections)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2, help="runs per pipeline; best is shown")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating hlbook / dicts runs for the median ratio (default 5)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the hlbook run")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    world = make_world(args.coins, args.seed)
    snap = snapshot(world, args.orders)
    height = world.height
    lines = blocks(
        world,
        args.blocks,
        statuses=args.statuses,
        diffs=args.diffs,
        status_per_new=args.status_per_new,
    )
    n_status = sum(b.n_statuses for b in lines)
    n_diff = sum(b.n_diffs for b in lines)
    n_fill = sum(b.n_fills for b in lines)
    size = sum(len(b.statuses) + len(b.diffs) + len(b.fills) for b in lines)
    print(
        f"synthetic: {args.coins} coins, {args.orders:,} resting orders, {args.blocks} blocks of "
        f"~{n_status // args.blocks} statuses + ~{n_diff // args.blocks} diffs "
        f"(+ ~{n_fill // args.blocks} fills), {size / 1e6:.0f} MB of lines "
        f"(generated in {time.perf_counter() - started:.1f} s)"
    )

    def fresh_books() -> Books:
        found, coins = decode_snapshot(snap)
        return Books.from_snapshot(found, coins)

    books = fresh_books()
    assert books.height == height
    print(f"hlbook books: {len(books):,} orders in {len(books.coins())} coins")
    print(f"best of {args.repeat} runs each, fresh books every run:")
    final: dict[str, int] = {}

    def best(run: Callable[[], tuple[float, int, GcStats, int]]) -> tuple[float, int, GcStats]:
        results = [run() for _ in range(args.repeat)]
        seconds, events, stats, resting = min(results, key=lambda r: r[0])
        final.setdefault("resting", resting)
        assert final["resting"] == resting, "the pipelines disagree"
        return seconds, events, stats

    def run_structs() -> tuple[float, int, GcStats, int]:
        books = fresh_books()
        return (*measured(lambda: struct_pipeline(books, lines)), len(books))

    def run_dicts(collector: bool) -> tuple[float, int, GcStats, int]:
        books = DictBooks(height, snap)
        if not collector:
            gc.disable()
        try:
            return (*measured(lambda: dict_pipeline(books, lines)), len(books.index))
        finally:
            gc.enable()

    struct_rate = _report("hlbook (msgspec Structs)", *best(run_structs), args.blocks)
    dict_rate = _report("orjson dicts, same books", *best(lambda: run_dicts(True)), args.blocks)
    nogc_rate = _report("orjson dicts, gc disabled", *best(lambda: run_dicts(False)), args.blocks)
    split = phases(fresh_books(), lines)
    print(
        "hlbook time per block by step: "
        + ", ".join(f"{name} {seconds * 1000:.2f} ms" for name, seconds in split.items())
    )

    # The ratio on a shared machine: rounds alternating the two pipelines on fresh
    # books, each round's ratio in wall and in CPU time, and their medians.
    wall_ratios: list[float] = []
    cpu_ratios: list[float] = []
    for round_ in range(1, args.rounds + 1):
        del CPU_SECONDS[:]
        struct_s = run_structs()[0]
        dict_s = run_dicts(True)[0]
        struct_cpu, dict_cpu = CPU_SECONDS
        wall_ratios.append(dict_s / struct_s)
        cpu_ratios.append(dict_cpu / struct_cpu)
        print(
            f"round {round_}: hlbook {struct_s / args.blocks * 1000:.2f} ms/block "
            f"(cpu {struct_cpu / args.blocks * 1000:.2f}), dicts {dict_s / args.blocks * 1000:.2f} "
            f"(cpu {dict_cpu / args.blocks * 1000:.2f}): {wall_ratios[-1]:.2f}x wall, "
            f"{cpu_ratios[-1]:.2f}x cpu"
        )
    print(
        f"RATIO Structs / dicts, median of {args.rounds} alternating rounds: "
        f"{statistics.median(wall_ratios):.2f}x wall, {statistics.median(cpu_ratios):.2f}x cpu "
        "(target >= 2.5x)"
    )
    print(f"RATIO hlbook vs mainnet: {struct_rate / MAINNET_EVENTS_PER_S:.1f}x (target >= 10x)")
    print(f"RATIO Structs / dicts: {struct_rate / dict_rate:.2f}x")
    print(f"RATIO Structs / dicts without gc: {struct_rate / nogc_rate:.2f}x")
    share = (nogc_rate - dict_rate) / (struct_rate - dict_rate) if struct_rate > dict_rate else 0
    print(f"share of the Struct advantage explained by gc: {share:.0%}")

    if args.profile:
        books = fresh_books()
        profiler = cProfile.Profile()
        profiler.enable()
        struct_pipeline(books, lines)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
