"""How fast can the simulator write blocks? (So load tests know it is not the bottleneck.)

Measures, on one core and in one run, blocks per second and events per second
as a multiple of mainnet (≈14 blocks/s, ≈700 statuses + ≈400 diffs per
block at ``--scale 1``):

* ``generate``: the pure core only (traders + matching engine);
* ``+ encode``: plus rendering every stream's lines (msgspec);
* ``+ write (trio)``: the whole simulator as tests and the demo run it —
  ``run_simulator`` with an unlimited block rate, appending to files in a
  temporary directory, info server up.

Usage: ``python benchmarks/sim_rate.py [--blocks N] [--scale X] [--layout by-block|streaming]``
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

import trio

from hlbook.node.formats import Layout
from hlbook.sim import BlockGenerator, LineRenderer, SimConfig, SimHandle, run_simulator
from hlbook.sim.config import MAINNET_BLOCKS_PER_SECOND

MAINNET_EVENTS_PER_BLOCK = 700 + 400


def _core(config: SimConfig, blocks: int, *, render: bool) -> tuple[float, int]:
    """CPU seconds for ``blocks`` blocks, and the events they hold."""
    generator = BlockGenerator(config)
    renderer = LineRenderer(config.layout, random.Random(0))
    events = 0
    start = time.process_time()
    for _ in range(blocks):
        block = generator.step()
        events += len(block.statuses) + len(block.diffs) + len(block.fills)
        if render:
            renderer.render(block)
    return time.process_time() - start, events


def _full(config: SimConfig) -> tuple[float, float, int, int]:
    """Wall and CPU seconds of a whole simulator run, its events and bytes written."""
    result: dict[str, float | int] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            handle: SimHandle = await nursery.start(run_simulator, config)
            wall, cpu = time.perf_counter(), time.process_time()
            await handle.wait_done()
            result["wall"] = time.perf_counter() - wall
            result["cpu"] = time.process_time() - cpu
            stats = handle.stats()
            result["events"] = stats.statuses + stats.diffs + stats.fills
            result["bytes"] = stats.bytes
            nursery.cancel_scope.cancel()

    trio.run(main)
    return (
        float(result["wall"]),
        float(result["cpu"]),
        int(result["events"]),
        int(result["bytes"]),
    )


def _row(name: str, seconds: float, blocks: int, events: int, extra: str = "") -> None:
    rate = blocks / seconds
    per_second = events / seconds
    print(
        f"  {name:<16} {rate:8.1f} blocks/s = {rate / MAINNET_BLOCKS_PER_SECOND:5.1f}x mainnet   "
        f"{per_second:9.0f} events/s = "
        f"{per_second / (MAINNET_EVENTS_PER_BLOCK * MAINNET_BLOCKS_PER_SECOND):5.1f}x mainnet"
        f"{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=400)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument(
        "--layout", choices=["by-block", "streaming"], action="append", default=None
    )
    args = parser.parse_args()
    layouts = args.layout or ["by-block", "streaming"]
    for name in layouts:
        layout = Layout(name.replace("-", "_"))
        with tempfile.TemporaryDirectory(prefix="hlbook-sim-rate-") as tmp:
            config = SimConfig(
                node_data=Path(tmp),
                layout=layout,
                scale=args.scale,
                blocks=args.blocks,
                blocks_per_second=float("inf"),
                info_port=0,
            )
            cpu, events = _core(config, args.blocks, render=False)
            print(
                f"{name}, scale {args.scale:g}, {args.blocks} blocks, "
                f"{events / args.blocks:.0f} events/block:"
            )
            _row("generate", cpu, args.blocks, events)
            cpu, events = _core(config, args.blocks, render=True)
            _row("+ encode", cpu, args.blocks, events)
            wall, cpu, events, written = _full(config)
            _row(
                "+ write (trio)",
                wall,
                args.blocks,
                events,
                f"   {written / wall / 1e6:6.1f} MB/s, CPU {cpu / wall:4.0%} of one core",
            )


if __name__ == "__main__":
    main()
