"""Benchmark: the real mainnet slice end to end, as a ratio of the block time it covers.

Processes the 51 recorded BTC blocks (``tests/data/by_block.tar.gz``) on top of
the recorded snapshot exactly as the server's book task does: decode every line
of the three streams with :func:`decode_line`, join them into blocks, apply
each block, and compute the L2 top-20 (both sides), the bbo and the trades of
every touched coin. Prints, measured in one run:

* processing time vs. the block time the slice spans ("x real time");
* processing time vs. ``orjson.loads`` of the same bytes (decoding alone).

Run: ``python benchmarks/mainnet_slice.py [--repeat N] [--profile]``
"""

import argparse
import cProfile
import gc
import gzip
import pstats
import statistics
import sys
import tarfile
import time
from pathlib import Path

import orjson

from hlbook.book.books import Books
from hlbook.book.l2 import bbo, l2_levels
from hlbook.book.l4 import ASK, BID
from hlbook.book.trades import trades_by_coin
from hlbook.model import Block
from hlbook.node.formats import Layout, Stream, decode_line, decode_snapshot, time_ms
from hlbook.node.join import BlockJoiner

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
ORDER = (Stream.DIFFS, Stream.STATUSES, Stream.FILLS)


def load() -> tuple[bytes, dict[Stream, list[bytes]]]:
    """The snapshot bytes and each stream's by-block lines."""
    snapshot = gzip.decompress((DATA / "snapshot.json.gz").read_bytes())
    lines: dict[Stream, list[bytes]] = {}
    with tarfile.open(DATA / "by_block.tar.gz") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is None:
                continue
            for stream in Stream:
                if f"node_{stream.value}_by_block/" in member.name:
                    lines[stream] = handle.read().splitlines()
    return snapshot, lines


def books_from(snapshot: bytes) -> Books:
    height, coins = decode_snapshot(snapshot)
    return Books.from_snapshot(height, coins)


def process(books: Books, lines: dict[Stream, list[bytes]]) -> tuple[int, int]:
    """The book task's work for the slice; returns (blocks, events)."""
    joiner = BlockJoiner(Layout.BY_BLOCK)
    joiner.release(books.height)
    blocks = events = 0
    for index in range(len(lines[Stream.DIFFS])):
        for stream in ORDER:
            line = decode_line(stream, lines[stream][index])
            events += len(line.events)
            for item in joiner.feed(stream, line):
                assert isinstance(item, Block), item
                applied = books.apply(item)
                for book in applied.touched.values():
                    l2_levels(book, BID, 20)
                    l2_levels(book, ASK, 20)
                    bbo(book)
                trades_by_coin(item.fills)
                blocks += 1
    return blocks, events


def orjson_only(lines: dict[Stream, list[bytes]]) -> None:
    for stream_lines in lines.values():
        for raw in stream_lines:
            orjson.loads(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7, help="runs; the median is reported")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    args = parser.parse_args(argv)

    snapshot, lines = load()
    size = sum(len(raw) for stream_lines in lines.values() for raw in stream_lines)
    first = orjson.loads(lines[Stream.DIFFS][0])
    last = orjson.loads(lines[Stream.DIFFS][-1])
    # Block time covered: from the snapshot's block to the last block, i.e. one
    # block interval per block (the first interval is estimated from the mean).
    count = len(lines[Stream.DIFFS])
    span_ms = time_ms(last["block_time"]) - time_ms(first["block_time"])
    covered_s = span_ms / (count - 1) * count / 1000

    load_started = time.perf_counter()
    books_from(snapshot)
    load_s = time.perf_counter() - load_started

    runs: list[float] = []
    json_runs: list[float] = []
    gc_counts: list[int] = []
    blocks = events = 0
    for _ in range(args.repeat):
        books = books_from(snapshot)
        gc.collect()
        before = sum(s["collections"] for s in gc.get_stats())
        started = time.perf_counter()
        blocks, events = process(books, lines)
        runs.append(time.perf_counter() - started)
        gc_counts.append(sum(s["collections"] for s in gc.get_stats()) - before)
        del books
        # Interleaved with the hlbook runs so that both see the same machine load.
        started = time.perf_counter()
        orjson_only(lines)
        json_runs.append(time.perf_counter() - started)

    hlbook_s = statistics.median(runs)
    orjson_s = statistics.median(json_runs)
    print(f"mainnet slice: {blocks} blocks, {events} events, {size / 1e6:.1f} MB of lines")
    print(f"block time covered: {covered_s:.2f} s (blocks {first['block_number']}..)")
    print(f"snapshot load (51,351 orders, not in the timings): {load_s * 1000:.0f} ms")
    print(
        f"hlbook decode+join+apply+L2 top-20+bbo+trades: {hlbook_s * 1000:.1f} ms "
        f"(median of {args.repeat}; best {min(runs) * 1000:.1f} ms; "
        f"{statistics.median(gc_counts):.0f} gc collections per run)"
    )
    print(f"orjson.loads of the same bytes: {orjson_s * 1000:.1f} ms")
    print(f"RATIO x real time: {covered_s / hlbook_s:.1f}x (target >= 30x)")
    print(f"RATIO hlbook / orjson.loads: {hlbook_s / orjson_s:.2f} (hlbook takes this many times")
    print("      as long as orjson.loads alone on the same bytes)")
    print(f"events/s: {events / hlbook_s:,.0f} ({events / hlbook_s / 15000:.1f}x mainnet's 15k/s)")

    if args.profile:
        books = books_from(snapshot)
        profiler = cProfile.Profile()
        profiler.enable()
        process(books, lines)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
