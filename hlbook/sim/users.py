"""Named users: a few fixed addresses with known habits, for tests to follow.

Among the thousands of random addresses the simulated traders use, three
users always trade the same way (their actions are drawn from their own
random source, so a seed fixes them too):

* :data:`TRIGGER_USER` places stop and take-profit orders close to the price,
  which trigger within a few blocks (``triggered``, then fills or a resting
  GTC order), and a few far from it, which stay pending: it has untriggered
  trigger orders most of the time, and cancels some of them (``canceled``).
* :data:`REJECTED_USER` sends orders that are refused, of every kind in
  :data:`REJECTION_KINDS`: it never rests an order and never trades.
* :data:`FILLS_USER` makes and takes liquidity all the time: many fills (as
  maker and as taker), about a dozen orders resting near the price and a few
  far from it at any time, ``cloid`` on every other order, cancels and
  modifies.

Only their owners cancel these users' orders: random traders never pick them.
A taker order never trades with a resting order of the same user: the resting
order is canceled instead (``selfTradeCanceled``, the exchange's self-trade
prevention); :data:`FILLS_USER` prices its taker orders so that this does not
happen, :data:`TRIGGER_USER`'s triggered orders can meet its own leftovers.
Their rates do not depend on the simulator's ``scale``. They act on perps,
spot and HIP-3 coins alike (:data:`TRIGGER_USER` on perps and HIP-3 only).
"""

import random

from hlbook.node.formats import Order
from hlbook.numbers import SCALE
from hlbook.sim.book import ASK, BID, Resting
from hlbook.sim.exchange import Exchange
from hlbook.sim.traders import TRIGGER_TYPES, Market, trigger_order

__all__ = [
    "FILLS_USER",
    "NAMED_USERS",
    "REJECTED_USER",
    "REJECTION_KINDS",
    "TRIGGER_USER",
    "NamedUsers",
]

TRIGGER_USER = "0x1000000000000000000000000000000000000001"
"""Places trigger orders that trigger (and some that wait)."""

REJECTED_USER = "0x2000000000000000000000000000000000000002"
"""Gets rejections of several kinds; never rests or trades."""

FILLS_USER = "0x3000000000000000000000000000000000000003"
"""Many fills, some resting orders at any time, cloids on some orders."""

NAMED_USERS = (TRIGGER_USER, REJECTED_USER, FILLS_USER)

REJECTION_KINDS = (
    "badAloPxRejected",
    "iocCancelRejected",
    "perpMarginRejected",
    "insufficientSpotBalanceRejected",
    "minTradeNtlRejected",
    "reduceOnlyRejected",
    "tickRejected",
)
"""The statuses :data:`REJECTED_USER` gets (``perpMarginRejected`` and
``reduceOnlyRejected`` on perps, ``insufficientSpotBalanceRejected`` on spot)."""

# Per block, whatever the scale.
_REJECT_RATE = 0.5
_TRIGGER_RATE = 0.3
_MAKE_RATE = 0.6
_TAKE_RATE = 0.5
_MODIFY_RATE = 0.1

_TRIGGER_FAR_SHARE = 0.25  # of trigger orders placed far from the price: they wait
_TRIGGER_FAR = 0.05  # 5% from the price
_TRIGGER_PENDING = 8  # more pending than this: the oldest is canceled
_TRIGGER_RESTING = 4  # triggered orders left resting: more than this, the oldest is canceled
_NEAR_RESTING = 12  # FILLS_USER's orders near the price: more, the oldest is canceled
_ANCHORS = 3  # FILLS_USER's orders far from the price, always resting
_ANCHOR_DISTANCE = 0.1  # 10% from the price
_MIN_NOTIONAL = 10 * SCALE  # orders under $10 are rejected (minTradeNtlRejected)


class NamedUsers:
    """The named users' actions on an :class:`Exchange`, one block at a time.

    The exchange must have been created with :data:`NAMED_USERS` as its
    managed users.
    """

    def __init__(self, exchange: Exchange, markets: list[Market], rng: random.Random) -> None:
        self.exchange = exchange
        self.markets = markets
        self.rng = rng
        self.trigger_markets = [m for m in markets if m.spec.market != "spot"] or markets
        self.pending: dict[int, Market] = {}  # TRIGGER_USER's untriggered orders
        self.anchors: dict[int, Resting] = {}  # FILLS_USER's far orders, by oid
        self._orders = 0  # FILLS_USER's orders so far: every other one has a cloid

    # -- setup ---------------------------------------------------------------------------

    def populate(self) -> None:
        """Their orders before the first written block: resting orders and pending triggers."""
        self._keep_anchors()
        for _ in range(_NEAR_RESTING // 2):
            self._make()
        for _ in range(2):
            self._place_trigger(far=True)

    # -- one block --------------------------------------------------------------------------

    def step(self) -> None:
        """Everything the named users do in one block (after the other traders)."""
        rng = self.rng
        if rng.random() < _REJECT_RATE:
            self._reject()
        if rng.random() < _TRIGGER_RATE:
            self._place_trigger(far=rng.random() < _TRIGGER_FAR_SHARE)
        self._tidy_triggers()
        if rng.random() < _MAKE_RATE:
            self._make()
        if rng.random() < _TAKE_RATE:
            self._take()
        if rng.random() < _MODIFY_RATE:
            self._modify()
        self._tidy_fills_user()

    # -- REJECTED_USER -------------------------------------------------------------------------

    def _reject(self) -> None:
        rng = self.rng
        market = self.markets[int(rng.random() * len(self.markets))]
        spot = market.spec.market == "spot"
        kinds = [
            k
            for k in REJECTION_KINDS
            if not (spot and k in ("perpMarginRejected", "reduceOnlyRejected"))
            and not (not spot and k == "insufficientSpotBalanceRejected")
        ]
        kind = kinds[int(rng.random() * len(kinds))]
        book = market.book
        exchange = self.exchange
        side = BID if rng.random() < 0.5 else ASK
        tick = market.tick
        center = market.center()
        near = 1 + int(rng.random() * 5)
        passive = (center - near if side == BID else center + near) * tick
        sz = market.sizes[int(rng.random() * len(market.sizes))] * market.lot
        if kind == "badAloPxRejected":
            # An ALO order priced through the book: the exchange refuses it.
            opposite = book.best_ask() if side == BID else book.best_bid()
            if opposite is None:
                return
            px = opposite + near * tick if side == BID else opposite - near * tick
            if px <= 0:
                return
            exchange.submit(REJECTED_USER, self._order(market, side, px, sz, "Alo"), px, sz)
        elif kind == "iocCancelRejected":
            # An IOC order that cannot trade at all: the exchange refuses it.
            if passive <= 0 or book.crosses(side, passive):
                return
            order = self._order(market, side, passive, sz, "Ioc")
            exchange.submit(REJECTED_USER, order, passive, sz)
        elif passive > 0:
            if kind == "minTradeNtlRejected":
                sz = market.lot
                if passive * sz // SCALE >= _MIN_NOTIONAL:
                    return
            elif kind == "tickRejected":
                passive += tick // 2  # between two ticks
            reduce_only = kind == "reduceOnlyRejected"  # it has no position to reduce
            order = self._order(market, side, passive, sz, "Gtc", reduce_only=reduce_only)
            exchange.status(REJECTED_USER, order, kind)

    def _order(
        self, market: Market, side: str, px: int, sz: int, tif: str, *, reduce_only: bool = False
    ) -> Order:
        return self.exchange.new_order(
            market.coin, side, px, sz, tif=tif, reduce_only=reduce_only, cloid=self._cloid(0.5)
        )

    # -- TRIGGER_USER -----------------------------------------------------------------------------

    def _place_trigger(self, *, far: bool) -> None:
        rng = self.rng
        market = self.trigger_markets[int(rng.random() * len(self.trigger_markets))]
        side = BID if rng.random() < 0.5 else ASK
        kind = TRIGGER_TYPES[int(rng.random() * len(TRIGGER_TYPES))]
        if far:
            distance = max(2, round(market.center() * _TRIGGER_FAR))
        else:
            distance = 1 + int(rng.random() * 4)  # the price moves a tick or two per block
        sz = market.sizes[int(rng.random() * len(market.sizes))] * market.lot
        built = trigger_order(
            self.exchange,
            market,
            side,
            kind,
            distance,
            sz,
            reduce_only=False,
            cloid=self._cloid(0.5),
        )
        if built is None:
            return
        order, trigger, above = built
        exchange = self.exchange
        exchange.status(TRIGGER_USER, order, "open", exchange.tx_hash())
        market.add_trigger(TRIGGER_USER, order, trigger, above=above, own=True)
        self.pending[order.oid] = market

    def _tidy_triggers(self) -> None:
        """Forget fired triggers; cancel the oldest pending ones and triggered leftovers."""
        for oid, market in list(self.pending.items()):
            if oid not in market.own_triggers:
                del self.pending[oid]  # it fired
        while len(self.pending) > _TRIGGER_PENDING:
            oid = next(iter(self.pending))
            entry = self.pending.pop(oid).pop_trigger(oid)
            assert entry is not None
            self.exchange.status(TRIGGER_USER, entry[1], "canceled")
        resting = self.exchange.resting_of[TRIGGER_USER]
        while len(resting) > _TRIGGER_RESTING:
            self.exchange.cancel(next(iter(resting.values())))

    # -- FILLS_USER -----------------------------------------------------------------------------

    def _cloid(self, share: float) -> str | None:
        rng = self.rng
        return f"0x{rng.getrandbits(128):032x}" if rng.random() < share else None

    def _fills_cloid(self) -> str | None:
        self._orders += 1
        return f"0x{self.rng.getrandbits(128):032x}" if self._orders % 2 else None

    def _market(self) -> Market:
        return self.markets[int(self.rng.random() * len(self.markets))]

    def _make(self) -> None:
        """A resting order a few ticks from the price, where takers will hit it."""
        rng = self.rng
        market = self._market()
        side = BID if rng.random() < 0.5 else ASK
        ticks = 1 + int(rng.random() * 6)
        level = market.center() - ticks if side == BID else market.center() + ticks
        px = level * market.tick
        if level <= 0 or market.book.crosses(side, px):
            return
        sz = market.sizes[int(rng.random() * len(market.sizes))] * market.lot
        tif = "Alo" if rng.random() < 0.7 else "Gtc"
        order = self.exchange.new_order(
            market.coin, side, px, sz, tif=tif, cloid=self._fills_cloid()
        )
        self.exchange.submit(FILLS_USER, order, px, sz)

    def _take(self) -> None:
        """An order that trades against the book, never against its own orders."""
        rng = self.rng
        market = self._market()
        book = market.book
        tick = market.tick
        side = BID if rng.random() < 0.5 else ASK
        opposite = book.best_ask() if side == BID else book.best_bid()
        if opposite is None:
            return
        slip = int(rng.random() * 4) * tick
        own = [
            r.px
            for r in self.exchange.resting_of[FILLS_USER].values()
            if r.order.coin == market.coin and r.side != side
        ]
        if side == BID:
            limit = opposite + slip
            if own:
                limit = min(limit, min(own) - tick)  # stop short of its own asks
        else:
            limit = max(opposite - slip, tick)
            if own:
                limit = max(limit, max(own) + tick)
        if not book.crosses(side, limit):
            return
        sz = market.small_sizes[int(rng.random() * len(market.small_sizes))] * market.lot
        tif = "Ioc" if rng.random() < 0.8 else "Gtc"
        order = self.exchange.new_order(
            market.coin, side, limit, sz, tif=tif, cloid=self._fills_cloid()
        )
        self.exchange.submit(FILLS_USER, order, limit, sz)

    def _near(self) -> list[Resting]:
        return [
            r for r in self.exchange.resting_of[FILLS_USER].values() if r.oid not in self.anchors
        ]

    def _modify(self) -> None:
        near = self._near()
        if not near:
            return
        rng = self.rng
        rest = near[int(rng.random() * len(near))]
        market = next(m for m in self.markets if m.coin == rest.order.coin)
        ticks = 1 + int(rng.random() * 6)
        level = market.center() - ticks if rest.side == BID else market.center() + ticks
        if level > 0:
            sz = market.sizes[int(rng.random() * len(market.sizes))] * market.lot
            self.exchange.modify(rest, level * market.tick, sz, keep_place=False)

    def _tidy_fills_user(self) -> None:
        near = self._near()
        for rest in near[: max(0, len(near) - _NEAR_RESTING)]:
            self.exchange.cancel(rest)  # oldest first
        self._keep_anchors()

    def _keep_anchors(self) -> None:
        """Keep a few orders far from the price, so that some always rest."""
        resting = self.exchange.resting_of[FILLS_USER]
        for oid in [oid for oid in self.anchors if oid not in resting]:
            del self.anchors[oid]  # filled after all: replace it
        for index in range(len(self.anchors), _ANCHORS):
            market = self.markets[index % len(self.markets)]
            side = BID if index % 2 == 0 else ASK
            offset = max(1, round(market.center() * _ANCHOR_DISTANCE))
            level = market.center() - offset if side == BID else market.center() + offset
            px = level * market.tick
            if level <= 0 or market.book.crosses(side, px):
                continue
            sz = market.sizes[int(self.rng.random() * len(market.sizes))] * market.lot
            order = self.exchange.new_order(
                market.coin, side, px, sz, tif="Alo", cloid=self._fills_cloid()
            )
            rest = self.exchange.submit(FILLS_USER, order, px, sz)
            if rest is not None:
                self.anchors[rest.oid] = rest
