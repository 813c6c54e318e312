"""Benchmark: how long legitimate work holds a worker's Trio loop, vs. the heartbeat timeout.

``hlbook serve --workers N`` kills a worker whose Trio loop leaves the
supervisor's pings unanswered for ``HEARTBEAT_TIMEOUT`` seconds (a frozen or
hung worker). The heaviest legitimate work must stay far below that. A ticker
task wakes every 50 ms on a Trio loop and records the longest gap between its
wake-ups while, in turn: nothing else runs (the baseline, the same run);
``load_books`` builds books from the synthetic mainnet-sized snapshot (440k
orders, 630 coins, ~158 MB) in a thread, as a bootstrap does;
``decode_snapshot_file`` decodes it in a thread, as a validation does; and a full
``gc.collect()`` runs on the loop with those books alive. Prints each stall in
seconds and as a share of the timeout, medians of ``--rounds`` rounds.

Run: ``python benchmarks/worker_stall.py [--rounds N] [--orders N] [--quick]``
"""

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from synthdata import make_world, snapshot

from hlbook.node.snapshot import decode_snapshot_file, load_books
from hlbook.workers import HEARTBEAT_TIMEOUT

_TICK = 0.05


async def _longest_gap(work: Callable[[], Any], *, in_thread: bool) -> float:
    """The longest gap between the ticker's wake-ups while ``work`` runs."""
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await trio.sleep(_TICK)
            now = time.perf_counter()
            gaps.append(now - last - _TICK)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(3 * _TICK)
        if in_thread:
            result = await trio.to_thread.run_sync(work)
        else:
            result = work()
            await trio.sleep(0)
        await trio.sleep(3 * _TICK)
        done = True
    del result
    return max(gaps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=440_000)
    parser.add_argument("--coins", type=int, default=630)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a small snapshot, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.orders, args.coins, args.rounds = 20_000, 50, 1

    data = snapshot(make_world(args.coins, 1), args.orders, cloid_share=0.8)
    print(
        f"synthetic snapshot: {args.orders:,} orders, {args.coins} coins, {len(data) / 1e6:.0f} MB"
    )
    books = load_books(data)  # alive during the collections, as in a serving worker
    works: dict[str, tuple[Callable[[], Any], bool]] = {
        "idle (baseline)": (lambda: time.sleep(1.0), True),
        "load_books in a thread": (lambda: load_books(data), True),
        "decode_snapshot_file in a thread": (lambda: decode_snapshot_file(data), True),
        "gc.collect() on the loop": (gc.collect, False),
    }
    stalls: dict[str, list[float]] = {name: [] for name in works}
    for round_ in range(1, args.rounds + 1):
        for name, (work, in_thread) in works.items():
            stall = trio.run(partial(_longest_gap, work, in_thread=in_thread))
            stalls[name].append(stall)
            print(f"round {round_}: {name}: the loop held {stall * 1000:.0f} ms at most")
    del books
    print("===== SUMMARY worker_stall =====")
    baseline = statistics.median(stalls["idle (baseline)"])
    for name, values in stalls.items():
        stall = statistics.median(values)
        print(
            f"{name}: longest loop stall {stall * 1000:.0f} ms (median of {args.rounds};"
            f" {stall / max(baseline, 1e-4):.0f}x the idle loop's), "
            f"{stall / HEARTBEAT_TIMEOUT:.1%} of the {HEARTBEAT_TIMEOUT:.0f} s heartbeat timeout"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
