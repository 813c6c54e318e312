"""What the simulator simulates: its configuration, its coins and their trader mix.

Rates are per block at ``scale`` 1.0 and were chosen so that the default coin
set writes about what mainnet writes (≈700 status and ≈400 diff events per
block), with ``BTC`` shaped like the real BTC slice in ``tests/data`` (95% of
its statuses ``badAloPxRejected``, open and canceled ≈1.6% each,
``perpMarginRejected`` ≈1.1%, ``iocCancelRejected`` ≈0.4%, a few fills). The
extra diffs with no status come from spot coins' protocol liquidity (HIP-2
"Hyperliquidity", owned by ``0xffff…ffff``), which the node writes without
status lines.
"""

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import attrs

from hlbook.model import market_of
from hlbook.node.formats import Layout

__all__ = [
    "DEFAULT_COINS",
    "KNOWN_COINS",
    "MAINNET_BLOCKS_PER_SECOND",
    "CoinSpec",
    "Profile",
    "SimConfig",
    "coin_spec",
]

MAINNET_BLOCKS_PER_SECOND = 14.0
"""Mainnet's average block rate, the default pace."""


@attrs.frozen
class Profile:
    """How traders behave on one coin: mean actions per block at scale 1.0.

    Each ``*_rate`` is the mean number of such actions per block (Poisson).
    Resting orders are canceled at a rate that keeps the book near ``depth``
    orders: each resting order is canceled with probability
    ``makers / depth`` per block.
    """

    depth: int
    """Resting orders the book settles around (scaled by ``scale``, at least 24)."""
    makers: float
    """Orders placed away from the price that rest (``open`` + ``new``)."""
    alo_rejects: float
    """ALO orders priced through the book: ``badAloPxRejected``."""
    modifies: float = 0.0
    """Cancel/replace of a resting order (``canceled`` + ``open``, ``remove`` + ``new``)."""
    takers: float = 0.0
    """IOC orders that cross (``open``, fills, then ``filled`` or ``canceled``)."""
    ioc_misses: float = 0.0
    """IOC orders priced away from the book: ``iocCancelRejected``."""
    gtc_takers: float = 0.0
    """GTC orders that cross and rest whatever is left."""
    margin_rejects: float = 0.0
    """Orders refused for margin (perps) or balance (spot)."""
    other_rejects: float = 0.0
    """Rarer refusals: ``minTradeNtlRejected``, ``reduceOnlyCanceled`` of a resting order."""
    triggers: float = 0.0
    """Trigger orders placed (``open`` with ``isTrigger``); they trigger later or are canceled."""
    twaps: float = 0.0
    """TWAP slices: fills with no status line."""
    protocol_refreshes: float = 0.0
    """Protocol ladder orders re-placed (no status lines); 0 means no ladder."""
    protocol_levels: int = 0
    """Ladder orders per side."""
    gtc_share: float = 0.15
    """Share of resting makers placed GTC rather than ALO."""
    near_ticks: float = 8.0
    """Mean distance in ticks from the price of most new orders."""
    far_ticks: float = 150.0
    """Mean distance in ticks of the 30% of new orders placed far out."""
    volatility: float = 1.5
    """Standard deviation of the price's random walk, in ticks per block."""


@attrs.frozen
class CoinSpec:
    """One coin: its name, exact price tick and size lot, start price and trader mix."""

    name: str
    px: str
    """Start price (a multiple of ``tick``)."""
    tick: str
    lot: str
    profile: Profile

    @property
    def market(self) -> str:
        """``perp``, ``spot`` or ``hip3``."""
        return market_of(self.name)


_BTC = Profile(
    depth=3000,
    makers=6.6,
    alo_rejects=390.0,
    modifies=0.3,
    takers=0.25,
    ioc_misses=1.7,
    gtc_takers=0.05,
    margin_rejects=4.5,
    other_rejects=0.05,
    triggers=0.15,
    twaps=0.05,
    near_ticks=6.0,
    far_ticks=400.0,
    volatility=2.0,
)
_MAJOR = Profile(
    depth=2000,
    makers=32.0,
    alo_rejects=60.0,
    modifies=6.0,
    takers=1.0,
    ioc_misses=1.5,
    gtc_takers=0.4,
    margin_rejects=2.5,
    other_rejects=0.1,
    triggers=0.5,
    twaps=0.1,
    far_ticks=200.0,
)
_ALT = Profile(
    depth=1000,
    makers=16.0,
    alo_rejects=18.0,
    modifies=4.0,
    takers=0.6,
    ioc_misses=0.6,
    gtc_takers=0.2,
    margin_rejects=1.0,
    other_rejects=0.05,
    triggers=0.3,
    twaps=0.05,
)
_SPOT = Profile(
    depth=600,
    makers=8.0,
    alo_rejects=8.0,
    modifies=2.0,
    takers=0.4,
    ioc_misses=0.4,
    gtc_takers=0.1,
    margin_rejects=0.6,
    other_rejects=0.02,
    twaps=0.02,
)
_SPOT_LADDER = attrs.evolve(
    _SPOT, depth=300, makers=4.0, protocol_refreshes=55.0, protocol_levels=60
)
_HIP3 = Profile(
    depth=400,
    makers=6.0,
    alo_rejects=5.0,
    modifies=1.0,
    takers=0.3,
    ioc_misses=0.3,
    gtc_takers=0.1,
    margin_rejects=0.5,
    other_rejects=0.02,
    triggers=0.1,
)

KNOWN_COINS: dict[str, CoinSpec] = {
    spec.name: spec
    for spec in (
        CoinSpec("BTC", "81300.0", "1.0", "0.00001", _BTC),
        CoinSpec("ETH", "2300.0", "0.1", "0.0001", _MAJOR),
        CoinSpec("SOL", "150.0", "0.01", "0.01", _ALT),
        CoinSpec("PURR/USDC", "0.2", "0.00001", "1.0", _SPOT_LADDER),
        CoinSpec("@1", "12.0", "0.0001", "0.01", _SPOT_LADDER),
        CoinSpec("@107", "40.0", "0.001", "0.01", _SPOT),
        CoinSpec("xyz:XYZ100", "25000.0", "1.0", "0.0001", _HIP3),
    )
}
"""Coins with hand-picked ticks, lots and trader mixes."""

DEFAULT_COINS: tuple[str, ...] = tuple(KNOWN_COINS)
"""Two perps and more, ``@N`` spot, ``PURR/USDC`` and a HIP-3 coin."""


def coin_spec(name: str) -> CoinSpec:
    """The spec of ``name``: a known coin, or a generic one of the right market."""
    known = KNOWN_COINS.get(name)
    if known is not None:
        return known
    profile = {"spot": _SPOT, "hip3": _HIP3}.get(market_of(name), _ALT)
    return CoinSpec(name, "100.0", "0.01", "0.01", profile)


def _coins(value: Iterable[str]) -> tuple[str, ...]:
    coins = tuple(value)
    if not coins:
        raise ValueError("at least one coin is needed")
    if len(set(coins)) != len(coins):
        raise ValueError(f"duplicate coins in {coins}")
    return coins


def _positive(_instance: object, attribute: "attrs.Attribute[float]", value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@attrs.frozen
class SimConfig:
    """Everything that decides what the simulator writes and how fast.

    The output is a function of ``seed``, ``coins``, ``scale``, ``start_time``,
    ``start_height`` and ``blocks_per_second`` (which spaces block times): the
    same configuration writes the same bytes, however fast it runs.
    """

    node_data: Path = attrs.field(converter=Path)
    """Root of the node's output (``~/hl/data`` on a real node)."""
    seed: int = 0
    layout: Layout = Layout.BY_BLOCK
    blocks_per_second: float = attrs.field(default=MAINNET_BLOCKS_PER_SECOND, validator=_positive)
    """Pace of block writing; ``math.inf`` writes as fast as possible (block times
    stay 1/14 s apart)."""
    scale: float = attrs.field(default=1.0, validator=_positive)
    """Multiplies every trader rate (and the resting depth): 1.0 is mainnet-sized blocks."""
    coins: tuple[str, ...] = attrs.field(default=DEFAULT_COINS, converter=_coins)
    blocks: int | None = None
    """Stop writing after this many blocks (the node goes quiet; the info server stays up)."""
    duration: float | None = None
    """Stop writing after this many seconds."""
    info_host: str = "127.0.0.1"
    info_port: int = attrs.field(
        default=3001, validator=[attrs.validators.ge(0), attrs.validators.le(65535)]
    )
    """Port of the node's info server; 0 picks a free one."""
    fallback_port: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.ge(0), attrs.validators.le(65535)]),
    )
    """Port of the fallback info server (a stand-in for the public API that also answers
    ``metaAndAssetCtxs`` and ``spotMetaAndAssetCtxs``); ``None`` starts none, 0 picks one."""
    partial_writes: bool = False
    """Write each stream's bytes in pieces cut mid-line, with a pause in between."""
    diff_ahead: int = 0
    """Blocks the diff stream runs ahead of the status and fill streams."""
    start_time: datetime = attrs.field(
        default=datetime(2026, 5, 5, 17, 39, 13, tzinfo=UTC), converter=_utc
    )
    """Block time of the first block (UTC)."""
    start_height: int = 985_148_182
    """Height of the first block written; the initial books are at ``start_height - 1``."""
    record_history: int = 0
    """Keep the exact books of the last N heights (for tests)."""
    record_fills: bool = False
    """Keep every user's fills (for tests; the named users' are always kept)."""

    def __attrs_post_init__(self) -> None:
        if self.blocks is not None and self.blocks < 0:
            raise ValueError("blocks must not be negative")
        if self.duration is not None and self.duration < 0:
            raise ValueError("duration must not be negative")
        if self.diff_ahead < 0 or self.record_history < 0:
            raise ValueError("diff_ahead and record_history must not be negative")
        for coin in self.coins:
            digits = coin[1:]
            if coin.startswith("@") and not (
                digits.isascii() and digits.isdigit() and digits == str(int(digits))
            ):
                raise ValueError(f"a spot pair is @N with N its index, not {coin!r}")
            if coin == "@0":
                raise ValueError("spot pair @0 is PURR/USDC: name it PURR/USDC")

    @property
    def block_interval(self) -> float:
        """Simulated seconds between block times."""
        rate = self.blocks_per_second
        return 1.0 / (MAINNET_BLOCKS_PER_SECOND if math.isinf(rate) else rate)

    def coin_specs(self) -> list[CoinSpec]:
        """The spec of every configured coin, in order."""
        return [coin_spec(name) for name in self.coins]
