"""Benchmark: the relay wire format — bytes per block and CPU per block, by compression.

For the real mainnet slice (``tests/data``, 51 blocks) and for mainnet-sized
synthetic blocks (``benchmarks/synthdata.py``: ~700 statuses + ~400 diffs per
block), measured in one run:

* bytes per block on the stream (the frame) vs. the node's three files for
  the same blocks (the ratio "x smaller");
* encode (``encode_block``: JSON lines + compression) and decode
  (``decode_block``: decompression + ``decode_line`` validation) µs per block,
  medians of ``--rounds`` rounds, and as a ratio of zlib level 6 (the stdlib
  default) in the same run;

and for a 440k-order synthetic snapshot (``--snapshot-orders``): frame size and
compression/decompression seconds per codec.

zstd is the standard library's ``compression.zstd`` on Python 3.14+ and
``backports.zstd`` before (same libzstd). ``lzma`` levels are shown for size
only where they would be too slow per block.

Run: ``python benchmarks/relay_codec.py [--rounds N] [--synthetic N] [--snapshot-orders N]``
(``--quick`` for a smoke run).
"""

import argparse
import functools
import gzip
import lzma
import statistics
import sys
import tarfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import synthdata
from server_common import command_line, summary_header

from hlbook.model import Block
from hlbook.node.formats import DiffLine, FillLine, StatusLine, Stream, decode_line, time_ms
from hlbook.relay.codec import (
    Codec,
    decode_block,
    decode_snapshot_frame,
    encode_block,
    encode_snapshot_frame,
)

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
ORDER = (Stream.STATUSES, Stream.DIFFS, Stream.FILLS)


def mainnet() -> tuple[list[Block], int]:
    """The slice's blocks and the node's bytes for them (three files, newline included)."""
    lines: dict[Stream, list[bytes]] = {}
    with tarfile.open(DATA / "by_block.tar.gz") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is None:
                continue
            for stream in Stream:
                if f"node_{stream.value}_by_block/" in member.name:
                    lines[stream] = handle.read().splitlines()
    return _blocks(lines), sum(len(x) + 1 for v in lines.values() for x in v)


def synthetic(count: int) -> tuple[list[Block], int]:
    """``count`` mainnet-sized synthetic blocks and their node bytes."""
    world = synthdata.make_world(400, seed=3)
    synthdata.snapshot(world, 100_000)
    made = synthdata.blocks(world, count)
    lines = {
        Stream.STATUSES: [b.statuses for b in made],
        Stream.DIFFS: [b.diffs for b in made],
        Stream.FILLS: [b.fills for b in made],
    }
    return _blocks(lines), sum(len(x) + 1 for v in lines.values() for x in v)


def _blocks(lines: dict[Stream, list[bytes]]) -> list[Block]:
    out = []
    for index in range(len(lines[Stream.DIFFS])):
        statuses, diffs, fills = (decode_line(s, lines[s][index]) for s in ORDER)
        assert isinstance(statuses, StatusLine)
        assert isinstance(diffs, DiffLine)
        assert isinstance(fills, FillLine)
        out.append(
            Block(
                diffs.block_number,
                time_ms(diffs.block_time),
                statuses.events,
                diffs.events,
                fills.events,
            )
        )
    return out


def _encode_all(blocks: list[Block], codec: Codec, level: int) -> None:
    for b in blocks:
        encode_block(b, codec=codec, level=level)


def _decode_all(frames: list[bytes]) -> None:
    for f in frames:
        decode_block(f)


def _median_us(fn: Callable[[], object], n: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(times)


CHOICES: list[tuple[str, Codec, int]] = [
    ("zlib 1", Codec.ZLIB, 1),
    ("zlib 6", Codec.ZLIB, 6),
    ("zlib 9", Codec.ZLIB, 9),
    ("zstd 1", Codec.ZSTD, 1),
    ("zstd 3", Codec.ZSTD, 3),
    ("zstd 6", Codec.ZSTD, 6),
    ("zstd 9", Codec.ZSTD, 9),
    ("none", Codec.NONE, 0),
]


def table(name: str, blocks: list[Block], node_bytes: int, rounds: int) -> list[str]:
    """Print and return one row per codec choice."""
    n = len(blocks)
    print(
        f"\n{name}: {n} blocks, node files {node_bytes / n / 1e3:.1f} KB/block, "
        f"{sum(len(b.statuses) + len(b.diffs) + len(b.fills) for b in blocks) / n:.0f} events/block"
    )
    print(
        f"  {'codec':<8} {'bytes/block':>12} {'x smaller':>10} {'encode µs':>10} "
        f"{'vs zlib6':>9} {'decode µs':>10} {'vs zlib6':>9}"
    )
    rows: list[tuple[str, float, float, float]] = []
    for label, codec, level in CHOICES:
        frames = [encode_block(b, codec=codec, level=level) for b in blocks]
        size = sum(map(len, frames)) / n
        enc = _median_us(functools.partial(_encode_all, blocks, codec, level), n, rounds)
        dec = _median_us(functools.partial(_decode_all, frames), n, rounds)
        rows.append((label, size, enc, dec))
    base = next(r for r in rows if r[0] == "zlib 6")
    lines = []
    for label, size, enc, dec in rows:
        line = (
            f"  {label:<8} {size:12.0f} {node_bytes / n / size:9.1f}x {enc:10.0f} "
            f"{enc / base[2]:8.2f}x {dec:10.0f} {dec / base[3]:8.2f}x"
        )
        print(line)
        lines.append(f"{name} {line.strip()}")
    body = [b"\n".join(f[12:] for f in [encode_block(b, codec=Codec.NONE) for b in blocks])]
    for preset in (0, 6):
        size = len(lzma.compress(body[0], preset=preset)) / n
        print(f"  lzma {preset} (whole slice at once, size only): {size:.0f} B/block")
    return lines


def snapshot_table(orders: int, rounds: int) -> list[str]:
    """Compression of a synthetic snapshot with ``orders`` resting orders."""
    world = synthdata.make_world(400, seed=5)
    data = synthdata.snapshot(world, orders)
    height = world.height
    print(f"\nsnapshot: {orders} orders, {len(data) / 1e6:.1f} MB fileSnapshot JSON")
    print(f"  {'codec':<8} {'MB':>8} {'x smaller':>10} {'compress s':>11} {'decompress s':>13}")
    lines = []
    for label, codec, level in [
        ("zstd 1", Codec.ZSTD, 1),
        ("zstd 3", Codec.ZSTD, 3),
        ("zlib 1", Codec.ZLIB, 1),
        ("zlib 6", Codec.ZLIB, 6),
    ]:
        frame = encode_snapshot_frame(height, data, codec=codec, level=level)
        comp = _median_us(
            functools.partial(encode_snapshot_frame, height, data, codec=codec, level=level),
            1,
            rounds,
        )
        decomp = _median_us(functools.partial(decode_snapshot_frame, frame), 1, rounds)
        line = (
            f"  {label:<8} {len(frame) / 1e6:8.1f} {len(data) / len(frame):9.1f}x "
            f"{comp / 1e6:11.2f} {decomp / 1e6:13.2f}"
        )
        print(line)
        lines.append(f"snapshot {line.strip()}")
    gz = gzip.compress(data, 6)
    print(f"  (gzip 6 of the same bytes: {len(gz) / 1e6:.1f} MB; zstd {zstd.zstd_version})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--synthetic", type=int, default=60, help="synthetic blocks")
    parser.add_argument("--snapshot-orders", type=int, default=440_000)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.synthetic, args.snapshot_orders = 1, 5, 5_000
    print(f"zlib {zlib.ZLIB_RUNTIME_VERSION}, zstd {zstd.zstd_version}, {args.rounds} rounds")
    blocks, node_bytes = mainnet()
    summary = table("mainnet slice", blocks, node_bytes, args.rounds)
    blocks, node_bytes = synthetic(args.synthetic)
    summary += table("synthetic mainnet-sized", blocks, node_bytes, args.rounds)
    summary += snapshot_table(args.snapshot_orders, max(1, min(args.rounds, 3)))
    print()
    print(summary_header("relay_codec"))
    print(command_line("relay_codec.py"))
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
