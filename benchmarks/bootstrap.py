"""Benchmark: bootstrap time (snapshot bytes → books) as a ratio to ``orjson.loads`` alone.

Builds the synthetic mainnet-sized snapshot (default 440k resting orders over
630 coins, ~158 MB, as ``benchmarks/memory.py``), then alternates, for
``--rounds`` rounds on the same bytes in this one process: ``orjson.loads``
of the bytes (the plain JSON parse, building dicts nobody uses) and
``load_books`` (what the server runs on a snapshot: decoding, checking, the
books and their indexes, with progress in the log). Each round's ratio and the
median are printed, in wall time and in CPU time (the machine is shared: CPU
time does not count waiting for a core).

Run: ``python benchmarks/bootstrap.py [--rounds N] [--orders N] [--coins N]``
"""

import argparse
import gc
import logging
import statistics
import sys
import time

import orjson
from synthdata import make_world, snapshot

from hlbook.node.snapshot import load_books


def _timed(run: object) -> tuple[float, float]:
    assert callable(run)
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del result
    gc.collect()
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=440_000)
    parser.add_argument("--coins", type=int, default=630)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  log: %(message)s", stream=sys.stdout)

    data = snapshot(make_world(args.coins, args.seed), args.orders, cloid_share=0.8)
    size = len(data) / 1e6
    print(f"synthetic snapshot: {args.orders:,} orders, {args.coins} coins, {size:.0f} MB")
    walls: list[float] = []
    cpus: list[float] = []
    for round_ in range(1, args.rounds + 1):
        base_wall, base_cpu = _timed(lambda: orjson.loads(data))
        wall, cpu = _timed(lambda: load_books(data))
        walls.append(wall / base_wall)
        cpus.append(cpu / base_cpu)
        print(
            f"round {round_}: orjson.loads {base_wall:.2f} s (cpu {base_cpu:.2f} s), "
            f"load_books {wall:.2f} s (cpu {cpu:.2f} s): {walls[-1]:.2f}x wall, {cpus[-1]:.2f}x cpu"
        )
    print(
        f"RATIO bootstrap / orjson.loads, median of {args.rounds}: "
        f"{statistics.median(walls):.2f}x wall, {statistics.median(cpus):.2f}x cpu (target <= 0.6x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
