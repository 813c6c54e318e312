"""A simulated Hyperliquid node for tests, the demo and benchmarks.

A price-time matching engine over several coins, driven by simulated traders,
writes the node's three streams (order statuses, raw book diffs, fills) in
either layout with hourly rotation, and answers ``fileSnapshot`` requests on
a real HTTP port with the exact books of the last block it wrote.

* :class:`SimConfig` — what to simulate and how fast;
* ``handle = await nursery.start(run_simulator, config)`` — run it under Trio;
  :class:`SimHandle` inspects the books, waits for heights and injects faults;
* :class:`BlockGenerator` — the pure, synchronous, deterministic core (one
  call, one block) for tests and benchmarks that need no files.

``hlbook simulate`` (:mod:`hlbook.sim.cli`) runs it from the command line.
"""

from hlbook.sim.config import DEFAULT_COINS, KNOWN_COINS, CoinSpec, Profile, SimConfig
from hlbook.sim.exchange import PROTOCOL_USER, BlockEvents
from hlbook.sim.generator import BlockGenerator
from hlbook.sim.render import LineRenderer
from hlbook.sim.run import SimHandle, SimStats, run_simulator

__all__ = [
    "DEFAULT_COINS",
    "KNOWN_COINS",
    "PROTOCOL_USER",
    "BlockEvents",
    "BlockGenerator",
    "CoinSpec",
    "LineRenderer",
    "Profile",
    "SimConfig",
    "SimHandle",
    "SimStats",
    "run_simulator",
]
