"""Simulated traders: who does what on each coin, block after block.

Each coin has a latent fair price doing a random walk in ticks, with bursts
(higher volatility, a drift and more aggressive trading) and a weak pull
toward the book's mid so that the two never drift apart. Traders act around
it: market makers rest ALO/GTC orders near it and cancel or modify them;
spammers send ALO orders through the book (the bulk of mainnet's
``badAloPxRejected``); takers send IOC orders leaning toward the fair price;
trigger orders wait for the fair price to reach them; TWAP slices trade
without status lines; spot coins with protocol liquidity keep a ladder of
orders that is re-placed all the time. Counts per block are Poisson with the
rates of the coin's :class:`~hlbook.sim.config.Profile`, times ``scale``.

Everything comes from one ``random.Random``, so a seed fixes every block.
"""

import heapq
import math
import random
from collections.abc import Callable

from hlbook.node.formats import Order
from hlbook.numbers import SCALE, fmt, parse
from hlbook.sim.book import ASK, BID, Resting, SimBook
from hlbook.sim.config import CoinSpec
from hlbook.sim.exchange import Exchange

__all__ = ["TRIGGER_TYPES", "Market", "Traders", "trigger_order"]

_TABLE = 512  # entries in each precomputed random table (distances, sizes)
_MIN_DEPTH = 24
_TRIGGER_HAZARD = 0.004  # per block: a pending trigger order is canceled
_MAX_TRIGGERS = 400  # pending trigger orders per coin
TRIGGER_TYPES = ("Stop Market", "Stop Limit", "Take Profit Market", "Take Profit Limit")
_BURST_START = 0.002  # per block
_BURST_BLOCKS = 120
_BURST_VOLATILITY = 5.0
_BURST_HEAT = 2.5  # aggressive flow multiplier during a burst
_PULL_TO_MID = 0.05
_LADDER_SPACING = 0.003  # protocol ladder: 0.3% between levels


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (normal approximation for large means)."""
    if mean <= 0.0:
        return 0
    if mean >= 30.0:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit = math.exp(-mean)
    count = -1
    product = 1.0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


def _addresses(rng: random.Random, count: int) -> list[str]:
    return [f"0x{rng.getrandbits(160):040x}" for _ in range(count)]


class Market:
    """One coin's traders: its fair price, tables, pending triggers and ladder.

    Pending trigger orders are in :attr:`triggers` (random traders') and
    :attr:`own_triggers` (the named users', which random traders never cancel);
    both fire the same way.
    """

    def __init__(self, spec: CoinSpec, book: SimBook, rng: random.Random, scale: float) -> None:
        profile = spec.profile
        self.spec = spec
        self.coin = spec.name
        self.book = book
        self.tick = parse(spec.tick)
        self.lot = parse(spec.lot)
        self.fair = parse(spec.px) / self.tick
        self.anchor = self.fair
        self.volatility = profile.volatility
        self.burst = 0
        self.drift = 0.0
        self.depth = max(_MIN_DEPTH, round(profile.depth * scale))
        # Each resting order is canceled with this probability per block, which
        # settles the book near ``depth`` orders whatever the scale.
        self.hazard = profile.makers * scale / self.depth
        self.margin_status = (
            "insufficientSpotBalanceRejected" if spec.market == "spot" else "perpMarginRejected"
        )
        self.gtc_share = profile.gtc_share
        near, far = profile.near_ticks, profile.far_ticks
        self.distances = [
            1 + int(rng.expovariate(1.0 / (near if rng.random() < 0.7 else far)))
            for _ in range(_TABLE)
        ]
        self.slips = [int(rng.expovariate(0.5)) for _ in range(_TABLE)]
        price = parse(spec.px) / SCALE
        lot = self.lot / SCALE
        self.sizes = [self._lots(rng, price, lot, 6.0) for _ in range(_TABLE)]
        self.small_sizes = [self._lots(rng, price, lot, 4.0) for _ in range(_TABLE)]
        self.above: list[tuple[int, int]] = []  # (trigger tick, oid): fire when fair >= tick
        self.below: list[tuple[int, int]] = []  # (-trigger tick, oid): fire when fair <= tick
        self.triggers: dict[int, tuple[str, Order]] = {}
        self.own_triggers: dict[int, tuple[str, Order]] = {}
        self.trigger_version = 0  # changes whenever a trigger order is added or removed
        self.ladder_levels = profile.protocol_levels
        self.ladder: dict[tuple[str, int], Resting] = {}

    @staticmethod
    def _lots(rng: random.Random, price: float, lot: float, log_notional: float) -> int:
        """Lots for a notional drawn log-normally around ``exp(log_notional)`` USD."""
        notional = math.exp(rng.gauss(log_notional, 1.3))
        return max(1, round(notional / price / lot))

    def center(self) -> int:
        """The fair price in whole ticks."""
        return round(self.fair)

    def add_trigger(self, user: str, order: Order, trigger: int, *, above: bool, own: bool) -> None:
        """Make ``order`` pending until the fair price reaches ``trigger`` (in ticks)."""
        (self.own_triggers if own else self.triggers)[order.oid] = (user, order)
        if above:
            heapq.heappush(self.above, (trigger, order.oid))
        else:
            heapq.heappush(self.below, (-trigger, order.oid))
        self.trigger_version += 1

    def pop_trigger(self, oid: int) -> tuple[str, Order] | None:
        """Take a pending trigger order out (it fired or was canceled); ``None`` if not pending."""
        entry = self.triggers.pop(oid, None) or self.own_triggers.pop(oid, None)
        if entry is not None:
            self.trigger_version += 1
            self._prune_heaps()
        return entry

    def pending_triggers(self) -> list[tuple[str, Order]]:
        """Every pending trigger order as ``(user, order)``, oldest first."""
        return sorted(
            [*self.triggers.values(), *self.own_triggers.values()], key=lambda e: e[1].oid
        )

    def _prune_heaps(self) -> None:
        # The heaps drop removed entries lazily when they surface; entries far from
        # the price might never surface, so rebuild the heaps once they are mostly stale.
        pending = len(self.triggers) + len(self.own_triggers)
        if len(self.above) + len(self.below) > 4 * pending + 64:
            live = self.triggers.keys() | self.own_triggers.keys()
            self.above = [entry for entry in self.above if entry[1] in live]
            self.below = [entry for entry in self.below if entry[1] in live]
            heapq.heapify(self.above)
            heapq.heapify(self.below)

    def mid(self) -> float | None:
        """The book's mid in ticks, or ``None`` if a side is empty."""
        bid, ask = self.book.best_bid(), self.book.best_ask()
        if bid is None or ask is None:
            return None
        return (bid + ask) / (2 * self.tick)

    def move(self, rng: random.Random) -> None:
        """One block of the fair price's random walk."""
        if self.burst:
            self.burst -= 1
            step = rng.gauss(self.drift, self.volatility * _BURST_VOLATILITY)
        else:
            if rng.random() < _BURST_START:
                self.burst = _BURST_BLOCKS
                self.drift = rng.choice((-1.0, 1.0)) * self.volatility
            step = rng.gauss(0.0, self.volatility)
        mid = self.mid()
        pull = 0.0 if mid is None else (mid - self.fair) * _PULL_TO_MID
        # A very weak pull to the start price keeps long runs in a sane range.
        home = (self.anchor - self.fair) * 1e-4
        self.fair = max(self.fair + step + pull + home, 10.0 * (1 + self.ladder_levels))

    @property
    def heat(self) -> float:
        """Multiplier of aggressive flow: higher during bursts."""
        return _BURST_HEAT if self.burst else 1.0


def _plain(value: int) -> str:
    """A price as trigger conditions show it: ``"60000"``, ``"0.2"`` (no trailing ``.0``)."""
    return fmt(value).removesuffix(".0")


def trigger_order(
    exchange: Exchange,
    market: Market,
    side: str,
    kind: str,
    distance: int,
    sz: int,
    *,
    reduce_only: bool,
    cloid: str | None,
) -> tuple[Order, int, bool] | None:
    """A new trigger order of ``kind`` waiting ``distance`` ticks from the fair price.

    A buy stop waits above the price, a buy take-profit below it (and the
    reverse for sells). Returns ``(order, trigger tick, above)``, or ``None``
    when the prices would not be positive.
    """
    stop = kind.startswith("Stop")
    above = stop == (side == BID)
    center = market.center()
    trigger = center + distance if above else center - distance
    if trigger <= 1:
        return None
    if kind.endswith("Market"):
        # Market triggers carry a 10% slippage limit; they trade at the market when fired.
        limit = round(trigger * (1.1 if side == BID else 0.9))
    else:
        limit = trigger + (2 if side == BID else -2)
    if limit <= 0:
        return None
    tick = market.tick
    # The node writes the condition's price without a trailing ".0": "Price below 60000".
    condition = f"Price {'above' if above else 'below'} {_plain(trigger * tick)}"
    order = exchange.new_order(
        market.coin,
        side,
        limit * tick,
        sz,
        tif=None,
        reduce_only=reduce_only,
        cloid=cloid,
        order_type=kind,
        trigger_px=trigger * tick,
        trigger_condition=condition,
    )
    return order, trigger, above


class Traders:
    """Every coin's traders, acting on an :class:`Exchange` one block at a time."""

    def __init__(
        self, exchange: Exchange, specs: list[CoinSpec], rng: random.Random, scale: float
    ) -> None:
        self.exchange = exchange
        self.rng = rng
        self.scale = scale
        self.markets = [Market(s, exchange.books[s.name], rng, scale) for s in specs]
        self.spammers = _addresses(rng, 16)
        self.makers = _addresses(rng, 400)
        self.takers = _addresses(rng, 2000)
        self.twap_users = [
            (user, rng.randrange(1_000_000, 2_000_000)) for user in _addresses(rng, 8)
        ]

    # -- setup ------------------------------------------------------------------------

    def populate(self) -> None:
        """Fill the books to their usual depth (the state before the first written block)."""
        for market in self.markets:
            for _ in range(market.depth):
                self._make(market)
            for _ in range(2 * market.ladder_levels):
                self._refresh_ladder(market)

    # -- one block -----------------------------------------------------------------------

    def step(self) -> None:
        """Everything traders do in one block, in a shuffled order across coins."""
        rng = self.rng
        scale = self.scale
        actions: list[tuple[Callable[[Market], None], Market]] = []
        for market in self.markets:
            market.move(rng)
            self._fire_triggers(market)
            profile = market.spec.profile
            heat = market.heat
            rates: tuple[tuple[Callable[[Market], None], float], ...] = (
                (self._spam, profile.alo_rejects),
                (self._make, profile.makers),
                (self._modify, profile.modifies),
                (self._take, profile.takers * heat),
                (self._miss, profile.ioc_misses),
                (self._gtc_take, profile.gtc_takers * heat),
                (self._margin_reject, profile.margin_rejects),
                (self._other_reject, profile.other_rejects),
                (self._place_trigger, profile.triggers),
                (self._twap, profile.twaps * heat),
                (self._refresh_ladder, profile.protocol_refreshes),
            )
            for action, rate in rates:
                actions.extend((action, market) for _ in range(_poisson(rng, rate * scale)))
            cancels = _poisson(rng, market.hazard * market.book.cancellable_count())
            actions.extend((self._cancel, market) for _ in range(cancels))
            pending = _poisson(rng, _TRIGGER_HAZARD * len(market.triggers))
            actions.extend((self._cancel_trigger, market) for _ in range(pending))
        rng.shuffle(actions)
        for action, target in actions:
            action(target)

    # -- actions ---------------------------------------------------------------------------

    def _pick(self, table: list[int]) -> int:
        return table[int(self.rng.random() * _TABLE)]

    def _cloid(self) -> str | None:
        rng = self.rng
        return f"0x{rng.getrandbits(128):032x}" if rng.random() < 0.9 else None

    def _side(self) -> str:
        return BID if self.rng.random() < 0.5 else ASK

    def _away(self, market: Market, side: str, ticks: int) -> int:
        """The price ``ticks`` from the fair price on the passive side (0 if not positive)."""
        center = market.center()
        level = center - ticks if side == BID else center + ticks
        return max(level, 0) * market.tick

    def _make(self, market: Market) -> None:
        """A maker rests an order near the fair price (ALO, or GTC that may trade)."""
        rng = self.rng
        side = self._side()
        px = self._away(market, side, self._pick(market.distances))
        if not px:
            return
        sz = self._pick(market.sizes) * market.lot
        tif = "Gtc" if rng.random() < market.gtc_share else "Alo"
        exchange = self.exchange
        order = exchange.new_order(
            market.coin, side, px, sz, tif=tif, reduce_only=rng.random() < 0.03, cloid=self._cloid()
        )
        exchange.submit(self.makers[int(rng.random() * len(self.makers))], order, px, sz)

    def _spam(self, market: Market) -> None:
        """An ALO order priced through the book: rejected with ``badAloPxRejected``.

        The most common event on mainnet by far, so this path is kept lean: it
        computes a price that certainly crosses and writes the rejection directly.
        """
        random_ = self.rng.random
        book = market.book
        through = market.distances[int(random_() * _TABLE)] * market.tick
        if random_() < 0.5:
            side = BID
            ask = book.best_ask()
            if ask is None:
                return
            px = ask + through
        else:
            side = ASK
            bid = book.best_bid()
            if bid is None or bid <= market.tick:
                return
            px = max(bid - through, market.tick)
        sz = market.small_sizes[int(random_() * _TABLE)] * market.lot
        # A few spammers send most of them, as on mainnet.
        user = self.spammers[int(random_() ** 2 * len(self.spammers))]
        exchange = self.exchange
        order = exchange.new_order(market.coin, side, px, sz, tif="Alo", cloid=self._cloid())
        exchange.status(user, order, "badAloPxRejected")

    def _cancel(self, market: Market) -> None:
        rest = market.book.pick(self.rng)
        if rest is not None:
            self.exchange.cancel(rest)

    def _modify(self, market: Market) -> None:
        """Cancel/replace: mostly a new price; sometimes a smaller size in the same place."""
        rng = self.rng
        rest = market.book.pick(rng)
        if rest is None:
            return
        if rng.random() < 0.3 and rest.sz > market.lot:
            sz = max(market.lot, rest.sz - self._pick(market.small_sizes) * market.lot)
            self.exchange.modify(rest, rest.px, sz, keep_place=True)
            return
        px = self._away(market, rest.side, self._pick(market.distances))
        if px:
            sz = self._pick(market.sizes) * market.lot
            self.exchange.modify(rest, px, sz, keep_place=False)

    def _aggressive(self, market: Market, side: str) -> int | None:
        """A limit price a few ticks through the best opposite price, or ``None``."""
        book = market.book
        slip = self._pick(market.slips) * market.tick
        if side == BID:
            ask = book.best_ask()
            return None if ask is None else ask + slip
        bid = book.best_bid()
        return None if bid is None else max(bid - slip, market.tick)

    def _taker_side(self, market: Market) -> str:
        """Takers lean toward the fair price: they buy when the book is below it."""
        mid = market.mid()
        lean = 0.5
        if mid is not None:
            if market.fair > mid + 1:
                lean = 0.8
            elif market.fair < mid - 1:
                lean = 0.2
        return BID if self.rng.random() < lean else ASK

    def _take(self, market: Market, tif: str = "Ioc") -> None:
        """An order that crosses: IOC (or GTC, resting what is left)."""
        rng = self.rng
        side = self._taker_side(market)
        px = self._aggressive(market, side)
        if px is None:
            return
        sz = self._pick(market.small_sizes) * market.lot
        order = self.exchange.new_order(
            market.coin, side, px, sz, tif=tif, reduce_only=rng.random() < 0.2, cloid=self._cloid()
        )
        self.exchange.submit(self.takers[int(rng.random() * len(self.takers))], order, px, sz)

    def _gtc_take(self, market: Market) -> None:
        self._take(market, "Gtc")

    def _miss(self, market: Market) -> None:
        """An IOC order priced away from the book: ``iocCancelRejected``."""
        rng = self.rng
        side = self._side()
        px = self._away(market, side, self._pick(market.distances))
        if not px or market.book.crosses(side, px):
            return
        sz = self._pick(market.small_sizes) * market.lot
        order = self.exchange.new_order(market.coin, side, px, sz, tif="Ioc", cloid=self._cloid())
        self.exchange.submit(self.takers[int(rng.random() * len(self.takers))], order, px, sz)

    def _margin_reject(self, market: Market) -> None:
        """An order refused for margin (perps) or balance (spot); it never reaches the book."""
        rng = self.rng
        side = self._side()
        px = self._aggressive(market, side) or self._away(market, side, 1)
        sz = self._pick(market.sizes) * market.lot
        tif = "Ioc" if rng.random() < 0.95 else "Alo"
        order = self.exchange.new_order(market.coin, side, px, sz, tif=tif, cloid=self._cloid())
        user = self.takers[int(rng.random() * len(self.takers))]
        self.exchange.status(user, order, market.margin_status)

    def _other_reject(self, market: Market) -> None:
        """Rarer outcomes: a too-small order, or a reduce-only order canceled off the book."""
        rng = self.rng
        if rng.random() < 0.5:
            for _ in range(4):
                rest = market.book.pick(rng)
                if rest is not None and rest.order.reduceOnly:
                    self.exchange.cancel(rest, "reduceOnlyCanceled")
                    return
        side = self._side()
        px = self._away(market, side, 1)
        order = self.exchange.new_order(
            market.coin, side, px, market.lot, tif="Gtc", reduce_only=True, cloid=self._cloid()
        )
        self.exchange.status(self.takers[0], order, "minTradeNtlRejected")

    def _place_trigger(self, market: Market) -> None:
        """A stop or take-profit order; it rests nowhere until the fair price reaches it."""
        rng = self.rng
        if len(market.triggers) >= _MAX_TRIGGERS:
            return
        side = self._side()
        kind = TRIGGER_TYPES[int(rng.random() * 4)]
        distance = 1 + self._pick(market.distances) // 2
        sz = self._pick(market.sizes) * market.lot
        built = trigger_order(
            self.exchange,
            market,
            side,
            kind,
            distance,
            sz,
            reduce_only=rng.random() < 0.5,
            cloid=self._cloid(),
        )
        if built is None:
            return
        order, trigger, above = built
        user = self.takers[int(rng.random() * len(self.takers))]
        self.exchange.status(user, order, "open", self.exchange.tx_hash())
        market.add_trigger(user, order, trigger, above=above, own=False)

    def _cancel_trigger(self, market: Market) -> None:
        if not market.triggers:
            return
        oids = list(market.triggers)
        oid = oids[int(self.rng.random() * len(oids))]
        entry = market.pop_trigger(oid)
        assert entry is not None
        user, order = entry
        self.exchange.status(user, order, "canceled")

    def _fire_triggers(self, market: Market) -> None:
        """Trigger every pending order the fair price has reached."""
        center = market.center()
        fired: list[int] = []
        above, below = market.above, market.below
        while above and above[0][0] <= center:
            fired.append(heapq.heappop(above)[1])
        while below and -below[0][0] >= center:
            fired.append(heapq.heappop(below)[1])
        for oid in sorted(fired):
            entry = market.pop_trigger(oid)
            if entry is None:
                continue  # canceled earlier
            user, order = entry
            limit = parse(order.limitPx)
            px = limit
            if order.orderType.endswith("Market"):
                # Fired market orders cross by a few ticks, within their slippage limit.
                aggressive = self._aggressive(market, order.side)
                if aggressive is not None:
                    px = min(aggressive, limit) if order.side == BID else max(aggressive, limit)
            self.exchange.trigger(user, order, px)

    def _twap(self, market: Market) -> None:
        rng = self.rng
        side = self._taker_side(market)
        px = self._aggressive(market, side)
        if px is None:
            return
        user, twap_id = self.twap_users[int(rng.random() * len(self.twap_users))]
        sz = self._pick(market.small_sizes) * market.lot
        self.exchange.twap(user, market.coin, side, px, sz, twap_id)

    def _refresh_ladder(self, market: Market) -> None:
        """Re-place one order of the protocol's ladder at its level around the fair price."""
        levels = market.ladder_levels
        if not levels:
            return
        rng = self.rng
        side = self._side()
        level = int(rng.random() * levels)
        key = (side, level)
        exchange = self.exchange
        old = market.ladder.pop(key, None)
        if old is not None and old.oid in market.book.orders:
            exchange.protocol_remove(old)
        spacing = max(1, round(market.fair * _LADDER_SPACING))
        px = self._away(market, side, spacing * (level + 1))
        if not px:
            return
        sz = self._pick(market.sizes) * market.lot * 4
        rest = exchange.protocol_place(market.coin, side, px, sz)
        if rest is not None:
            market.ladder[key] = rest
