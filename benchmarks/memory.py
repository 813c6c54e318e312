"""Benchmark: memory per resting order after loading a snapshot.

Measures the process's resident set size (``/proc/self/statm``) before and
after ``Books.load`` (what the server runs on a snapshot) for

* a synthetic mainnet-sized snapshot (default 440k resting orders over 630
  coins, mainnet-like fields, a cloid on 80% of the orders), and
* the real recorded BTC snapshot in ``tests/data`` (51,351 orders),

each in a fresh process (generation happens in yet another one, so that its
garbage cannot hide the books' cost). The growth divided by the order count
is reported right after loading and again after ``gc.collect()`` and glibc's
``malloc_trim(0)``, which makes fragmentation (freed but unreturned memory)
visible. A per-object breakdown of the synthetic books follows.

Run: ``python benchmarks/memory.py [--orders N] [--coins N] [--cloid-share F]``
"""

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synthdata import make_world, snapshot

from hlbook import numbers
from hlbook.book.books import Books
from hlbook.book.resting import Resting

PAGE = os.sysconf("SC_PAGE_SIZE")
REAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "snapshot.json.gz"


def rss() -> int:
    """Resident set size in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def settle() -> None:
    """Collect garbage and return freed heap memory to the OS (glibc)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


def breakdown(books: Books) -> list[tuple[str, float]]:
    """Approximate bytes per resting order by kind of object."""
    count = max(len(books), 1)
    sample: Resting | None = None
    levels = level_bytes = 0
    cloids = children = 0
    shapes: set[int] = set()
    for coin in books.coins():
        book = books.book(coin)
        assert book is not None
        for side in (book.bids, book.asks):
            for level in side.values():
                levels += 1
                # Level object, its oid list, its total; the SortedDict's slot and key.
                level_bytes += sys.getsizeof(level) + sys.getsizeof(level.oids) + 32 + 8 + 32
                for record in map(book.index.__getitem__, level.oids):
                    shapes.add(id(record.shape))
                    if record.shape.children is not None:
                        children += sys.getsizeof(record.shape.children)
                    if record.cloid is not None:
                        cloids += sys.getsizeof(record.cloid)
                        sample = sample or record
    assert sample is not None
    cached = len(numbers._parse_cache) + len(numbers._fmt_cache)
    return [
        ("Resting record (8 fields, not GC-tracked)", sys.getsizeof(sample)),
        ("cloid (an int when 0x + 32 hex digits)", cloids / count),
        ("oid int", sys.getsizeof(2**40)),
        ("oid index dict entry", sys.getsizeof(books._orders) / count),
        (f"levels ({count / levels:.1f} orders per level)", level_bytes / count),
        (f"shapes ({len(shapes):,}) and TP/SL children bytes", children / count),
        (f"number caches ({cached:,} entries, ~90 B each)", cached * 90 / count),
    ]


def measure(kind: str, path: str) -> None:
    """Load one snapshot in this (fresh) process and print the figures."""
    data = (
        gzip.decompress(Path(path).read_bytes())
        if path.endswith(".gz")
        else Path(path).read_bytes()
    )
    settle()
    base = rss()
    started = time.perf_counter()
    books = Books.load(data)
    load_s = time.perf_counter() - started
    after_load = rss()
    settle()
    after_trim = rss()
    count = len(books)
    print(
        f"{kind}: {count:,} orders in {len(books.coins())} coins, {len(data) / 1e6:.0f} MB, "
        f"loaded in {load_s:.1f} s"
    )
    print(f"  RSS growth right after loading: {(after_load - base) / 1e6:.0f} MB")
    print(f"  RSS growth after gc.collect() + malloc_trim(0): {(after_trim - base) / 1e6:.0f} MB")
    print(f"  RATIO bytes/order right after loading: {(after_load - base) / count:.0f}")
    print(
        f"  RATIO bytes/order after gc + malloc_trim: {(after_trim - base) / count:.0f} "
        "(target < 400)"
    )
    if kind == "synthetic":
        print("  one resting order, by kind of object (approximate):")
        total = 0.0
        for name, size in breakdown(books):
            total += size
            print(f"    {size:>5.0f} B  {name}")
        print(f"    {total:>5.0f} B  total")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=440_000)
    parser.add_argument("--coins", type=int, default=630)
    parser.add_argument("--cloid-share", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not os.path.exists("/proc/self/statm"):
        print("needs /proc/self/statm (Linux)")
        return 1
    if args.write:
        world = make_world(args.coins, args.seed)
        Path(args.write).write_bytes(snapshot(world, args.orders, cloid_share=args.cloid_share))
        return 0
    if args.measure:
        measure(*args.measure)
        return 0

    me = [sys.executable, __file__]
    options = ["--orders", str(args.orders), "--coins", str(args.coins)]
    options += ["--cloid-share", str(args.cloid_share), "--seed", str(args.seed)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "snapshot.json")
        subprocess.run([*me, *options, "--write", path], check=True)
        subprocess.run([*me, "--measure", "synthetic", path], check=True)
    subprocess.run([*me, "--measure", "mainnet BTC", str(REAL)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
