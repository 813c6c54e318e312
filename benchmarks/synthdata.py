"""Synthetic mainnet-shaped node data for the benchmarks (deterministic with a seed).

A world of coins (perps ``C<n>``, spot ``@<n>``, HIP-3 ``xyz:C<n>``) with
skewed activity, resting books near a mid price, and blocks of statuses,
diffs and fills that are consistent with the books (every remove/update names
a resting order, every new a fresh oid), pre-encoded as the node's by-block
lines. Fields and sizes mirror the recorded mainnet slice.
"""

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from hlbook.numbers import SCALE, fmt

BASE_MS = 1778002753024
REJECTIONS = ["badAloPxRejected"] * 95 + ["perpMarginRejected"] * 3 + ["iocCancelRejected"] * 2


def node_time(ms: int) -> str:
    """Node-style time (naive UTC, nanoseconds)."""
    import datetime

    stamp = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}084407"


@dataclass
class Coin:
    """One coin: name, tick (scaled) and mid price in ticks."""

    name: str
    tick: int
    mid: int
    weight: float


@dataclass
class Resting:
    """A resting order the generator knows about."""

    oid: int
    coin: Coin
    side: str
    px: int
    sz: int
    user: str


@dataclass
class World:
    """Coins, users and the resting orders, with O(1) random picks and removals."""

    rng: random.Random
    coins: list[Coin]
    users: list[str]
    resting: list[Resting] = field(default_factory=list)
    where: dict[int, int] = field(default_factory=dict)
    next_oid: int = 412_000_000_000
    height: int = 985_000_000

    def add(self, order: Resting) -> None:
        self.where[order.oid] = len(self.resting)
        self.resting.append(order)

    def pop_random(self) -> Resting:
        index = self.rng.randrange(len(self.resting))
        order = self.resting[index]
        last = self.resting.pop()
        if last is not order:
            self.resting[index] = last
            self.where[last.oid] = index
        del self.where[order.oid]
        return order

    def fresh_oid(self) -> int:
        self.next_oid += self.rng.randint(1, 50)
        return self.next_oid

    def pick_coin(self) -> Coin:
        return self.rng.choices(self.coins, cum_weights=self._cum)[0]

    def __post_init__(self) -> None:
        total = 0.0
        self._cum: list[float] = []
        for coin in self.coins:
            total += coin.weight
            self._cum.append(total)


def make_world(n_coins: int, seed: int = 1) -> World:
    """``n_coins`` coins with Zipf-like activity weights and 5,000 users."""
    rng = random.Random(seed)
    coins: list[Coin] = []
    for rank in range(n_coins):
        if rank % 20 == 19:
            name = f"xyz:C{rank}"
        elif rank % 5 == 4:
            name = f"@{rank}"
        else:
            name = f"C{rank}"
        mid_price = 10 ** rng.uniform(-2, 5)
        exponent = len(str(int(mid_price * SCALE))) - 5  # 5 significant figures
        tick = 10**exponent
        coins.append(Coin(name, tick, int(mid_price * SCALE) // tick, 1 / (rank + 1) ** 0.8))
    users = [f"0x{rng.getrandbits(160):040x}" for _ in range(5000)]
    return World(rng, coins, users)


_SIZE_UNIT = 10_000_000  # 0.00001 scaled by 10**12
_SIZE_RNG = random.Random(7)
_POPULAR_SIZES = [_SIZE_RNG.randint(1, 200_000) * _SIZE_UNIT for _ in range(3000)]


def _size(rng: random.Random) -> int:
    # On mainnet sizes repeat (BTC: 7,972 distinct sizes among 51,351 orders).
    if rng.random() < 0.85:
        return rng.choice(_POPULAR_SIZES)
    return rng.randint(1, 200_000) * _SIZE_UNIT


def _place(world: World, coin: Coin) -> Resting:
    rng = world.rng
    side = rng.choice("AB")
    depth = int(rng.expovariate(1 / 30)) + 1
    ticks = coin.mid + depth if side == "A" else coin.mid - depth
    return Resting(
        world.fresh_oid(), coin, side, ticks * coin.tick, _size(rng), rng.choice(world.users)
    )


def order_json(order: Resting, *, timestamp: int, cloid: bool, tif: str = "Alo") -> dict[str, Any]:
    """The node's order object for ``order``."""
    sz = fmt(order.sz)
    return {
        "coin": order.coin.name,
        "side": order.side,
        "limitPx": fmt(order.px),
        "sz": sz,
        "oid": order.oid,
        "timestamp": timestamp,
        "triggerCondition": "N/A",
        "isTrigger": False,
        "triggerPx": "0.0",
        "children": [],
        "isPositionTpsl": False,
        "reduceOnly": False,
        "orderType": "Limit",
        "origSz": sz,
        "tif": tif,
        "cloid": f"0x{world_cloid(order.oid):032x}" if cloid else None,
    }


def world_cloid(oid: int) -> int:
    return (oid * 0x9E3779B97F4A7C15) & ((1 << 128) - 1)


def snapshot(world: World, n_orders: int, *, cloid_share: float = 0.8) -> bytes:
    """Place ``n_orders`` resting orders and return the node's ``fileSnapshot`` bytes."""
    rng = world.rng
    for _ in range(n_orders):
        world.add(_place(world, world.pick_coin()))
    by_coin: dict[str, tuple[list[Resting], list[Resting]]] = {
        c.name: ([], []) for c in world.coins
    }
    for order in world.resting:
        by_coin[order.coin.name][0 if order.side == "B" else 1].append(order)
    body = []
    for coin in world.coins:
        bids, asks = by_coin[coin.name]
        bids.sort(key=lambda o: -o.px)
        asks.sort(key=lambda o: o.px)
        sides = [
            [
                [o.user, order_json(o, timestamp=BASE_MS - 1000, cloid=rng.random() < cloid_share)]
                for o in orders
            ]
            for orders in (bids, asks)
        ]
        body.append([coin.name, sides])
    return orjson.dumps([world.height, body])


@dataclass
class BlockLines:
    """One block's three by-block lines and its event counts."""

    height: int
    statuses: bytes
    diffs: bytes
    fills: bytes
    n_statuses: int
    n_diffs: int
    n_fills: int


def blocks(
    world: World,
    count: int,
    *,
    statuses: int = 700,
    diffs: int = 400,
    status_per_new: float = 0.1,
    cloid_share: float = 0.8,
) -> list[BlockLines]:
    """``count`` consecutive blocks after the world's height.

    About half the diffs are ``new`` and half ``remove``, with ~2% ``update``
    (partial fills, each with a buyer and a seller fill). ``status_per_new``
    of the new orders get an ``open`` status (the rest rest with defaults, like
    orders of protocol addresses); removes get ``canceled`` statuses while the
    status budget allows; every remaining status is a rejection (95%
    ``badAloPxRejected``), so the mix stays ~95% rejections as on mainnet.
    """
    rng = world.rng
    out: list[BlockLines] = []
    tid = 316_059_956_208_702
    for _ in range(count):
        world.height += 1
        ms = BASE_MS + (world.height - 985_000_000) * 70
        when = node_time(ms)
        n_update = max(1, diffs // 50)
        n_remove = (diffs - n_update) // 2
        n_new = diffs - n_update - n_remove
        status_events: list[Any] = []
        diff_events: list[Any] = []
        fill_events: list[Any] = []
        # updates and removes name orders resting at the start of the block
        updated = [world.pop_random() for _ in range(n_update)]
        removed = [world.pop_random() for _ in range(n_remove)]
        placed = [_place(world, world.pick_coin()) for _ in range(n_new)]
        ops: list[tuple[str, Resting]] = [("remove", o) for o in removed] + [
            ("new", o) for o in placed
        ]
        rng.shuffle(ops)
        for order in updated:
            new_sz = max(order.sz // 2, 10**7)
            diff_events.append(
                _diff(order, {"update": {"origSz": fmt(order.sz), "newSz": fmt(new_sz)}})
            )
            traded = order.sz - new_sz
            for user, side, crossed in (
                (order.user, order.side, False),
                (rng.choice(world.users), "B" if order.side == "A" else "A", True),
            ):
                fill_events.append(_fill(order, user, side, crossed, traded, tid, ms))
            tid += 1
            order.sz = new_sz
            world.add(order)
        for kind, order in ops:
            if kind == "new":
                diff_events.append(_diff(order, {"new": {"sz": fmt(order.sz)}}))
                if rng.random() < status_per_new:
                    status_events.append(
                        _status(order, "open", when, ms, rng.random() < cloid_share)
                    )
                world.add(order)
            else:
                diff_events.append(_diff(order, "remove"))
                if len(status_events) < statuses * 0.05:
                    status_events.append(_status(order, "canceled", when, ms, False))
        while len(status_events) < statuses:
            coin = world.pick_coin()
            ghost = _place(world, coin)
            status_events.append(
                _status(ghost, rng.choice(REJECTIONS), when, ms, rng.random() < cloid_share)
            )
        rng.shuffle(status_events)
        out.append(
            BlockLines(
                world.height,
                _line(world.height, when, status_events),
                _line(world.height, when, diff_events),
                _line(world.height, when, fill_events),
                len(status_events),
                len(diff_events),
                len(fill_events),
            )
        )
    return out


def _line(height: int, when: str, events: list[Any]) -> bytes:
    return orjson.dumps(
        {"local_time": when, "block_time": when, "block_number": height, "events": events}
    )


def _diff(order: Resting, raw: Any) -> dict[str, Any]:
    return {
        "user": order.user,
        "oid": order.oid,
        "coin": order.coin.name,
        "side": order.side,
        "px": fmt(order.px),
        "raw_book_diff": raw,
    }


def _status(order: Resting, status: str, when: str, ms: int, cloid: bool) -> dict[str, Any]:
    return {
        "time": when,
        "user": order.user,
        "hash": None,
        "builder": None,
        "status": status,
        "order": order_json(order, timestamp=ms, cloid=cloid),
    }


def _fill(
    order: Resting, user: str, side: str, crossed: bool, size: int, tid: int, ms: int
) -> list[Any]:
    return [
        user,
        {
            "coin": order.coin.name,
            "px": fmt(order.px),
            "sz": fmt(size),
            "side": side,
            "time": ms,
            "startPosition": "0.0",
            "dir": "Open Long" if side == "B" else "Open Short",
            "closedPnl": "0.0",
            "hash": "0x" + "0" * 64,
            "oid": order.oid if not crossed else order.oid + 1,
            "crossed": crossed,
            "fee": "0.01",
            "tid": tid,
            "feeToken": "USDC",
            "twapId": None,
        },
    ]
