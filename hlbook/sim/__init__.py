"""A simulated Hyperliquid node for tests, the demo and benchmarks.

A price-time matching engine over several coins, driven by simulated traders,
writes the node's three streams (order statuses, raw book diffs, fills) in
either layout with hourly rotation, and answers on a real HTTP port what a
node's info server answers (``fileSnapshot`` with the exact books of the last
block it wrote, ``meta``, ``spotMeta``, ``perpDexs``, ``exchangeStatus``,
``openOrders``, ``frontendOpenOrders``); optionally a second server plays the
public API for ``metaAndAssetCtxs`` and ``spotMetaAndAssetCtxs``.

* :class:`SimConfig` — what to simulate and how fast;
* ``handle = await nursery.start(run_simulator, config)`` — run it under Trio;
  :class:`SimHandle` inspects the books, the users' orders and fills, waits
  for heights and injects faults;
* :class:`BlockGenerator` — the pure, synchronous, deterministic core (one
  call, one block) for tests and benchmarks that need no files;
* :data:`TRIGGER_USER`, :data:`REJECTED_USER`, :data:`FILLS_USER` — named
  users with known habits (:mod:`hlbook.sim.users`).

``hlbook simulate`` (:mod:`hlbook.sim.cli`) runs it from the command line.
"""

from hlbook.sim.config import DEFAULT_COINS, KNOWN_COINS, CoinSpec, Profile, SimConfig
from hlbook.sim.exchange import PROTOCOL_USER, BlockEvents
from hlbook.sim.generator import BlockGenerator
from hlbook.sim.info import InfoError
from hlbook.sim.markets import Markets
from hlbook.sim.render import LineRenderer
from hlbook.sim.run import SimHandle, SimStats, run_simulator
from hlbook.sim.users import (
    FILLS_USER,
    NAMED_USERS,
    REJECTED_USER,
    REJECTION_KINDS,
    TRIGGER_USER,
)

__all__ = [
    "DEFAULT_COINS",
    "FILLS_USER",
    "KNOWN_COINS",
    "NAMED_USERS",
    "PROTOCOL_USER",
    "REJECTED_USER",
    "REJECTION_KINDS",
    "TRIGGER_USER",
    "BlockEvents",
    "BlockGenerator",
    "CoinSpec",
    "InfoError",
    "LineRenderer",
    "Markets",
    "Profile",
    "SimConfig",
    "SimHandle",
    "SimStats",
    "run_simulator",
]
