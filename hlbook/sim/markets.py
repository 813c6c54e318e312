"""What the simulated exchange lists: perps, spot pairs and tokens, HIP-3 dexes.

Derived from the simulated coins only, so that the metadata a client loads
(``meta``, ``spotMeta``, ``perpDexs``) names exactly the coins whose books
the simulator writes, with ``szDecimals`` equal to the decimals of each
coin's size lot:

* perps (``BTC``) form the first perp dex's universe, in configuration order;
  a coin's asset id is its position there (as the official SDK computes it);
* ``@N`` is the spot pair of index ``N``; ``PURR/USDC`` is the pair of index
  0 (the only pair named by its tokens, as on mainnet); another ``BASE/QUOTE``
  name gets the next free index. Every pair's quote is USDC (token 0) except
  for ``BASE/QUOTE`` names, and each base token is listed once, so the token
  list has no gaps (clients index it by position);
* ``dex:COIN`` belongs to the HIP-3 dex ``dex``; the dexes are listed by
  ``perpDexs`` in order of their first coin, and each has its own ``meta``.

Spot pair indices have gaps (``@1``, ``@107``): mainnet's have none, and a
client that looks up a pair's asset context by its index rather than by its
position or its ``coin`` (ccxt does) finds none for ``@107``.
"""

import hashlib
from typing import Any

import attrs

from hlbook.numbers import SCALE, fmt, parse
from hlbook.sim.config import CoinSpec

__all__ = ["Markets", "PerpAsset", "SpotPair", "SpotToken", "sz_decimals"]

_USDC_ID = "0x6d1e7cde53ba9467b783cb7c530ce054"  # mainnet's token ids of USDC and PURR
_PURR_ID = "0xc1fb593aeffbeb02f85e0308e9956a90"
_SPOT_NAMES = {1: "HFUN", 107: "HYPE"}  # the base tokens of mainnet's @1 and @107
_MAX_LEVERAGE = {"BTC": 40, "ETH": 25, "SOL": 20}
_DEFAULT_LEVERAGE = 10
_HIP3_LEVERAGE = 20
_TOTAL_SUPPLY = 1_000_000_000 * SCALE
_CIRCULATING_SUPPLY = 800_000_000 * SCALE
_OI_CAP = "1000000000.0"


def sz_decimals(lot: str) -> int:
    """Size decimals of a lot that is a power of ten: ``"0.001"`` → 3, ``"1.0"`` → 0."""
    value = parse(lot)
    decimals = 0
    unit = SCALE
    while unit > value and unit % 10 == 0:
        unit //= 10
        decimals += 1
    if unit != value:
        raise ValueError(f"a size lot must be a power of ten no larger than 1, not {lot!r}")
    return decimals


def _token_id(name: str) -> str:
    return "0x" + hashlib.sha256(f"hlbook-sim-token:{name}".encode()).hexdigest()[:32]


def _address(label: str) -> str:
    return "0x" + hashlib.sha256(f"hlbook-sim:{label}".encode()).hexdigest()[:40]


@attrs.frozen
class PerpAsset:
    """A perp of the first dex (``dex == ""``) or of a HIP-3 dex."""

    name: str
    dex: str
    index: int
    """Position in its dex's universe."""
    sz_decimals: int
    max_leverage: int

    def info(self) -> dict[str, Any]:
        """Its entry in ``meta``'s ``universe``."""
        return {
            "szDecimals": self.sz_decimals,
            "name": self.name,
            "maxLeverage": self.max_leverage,
            "marginTableId": self.max_leverage,
        }


@attrs.frozen
class SpotToken:
    """A spot token: USDC (index 0) and the base of every pair."""

    name: str
    index: int
    sz_decimals: int
    wei_decimals: int
    token_id: str
    canonical: bool

    def info(self) -> dict[str, Any]:
        """Its entry in ``spotMeta``'s ``tokens``."""
        return {
            "name": self.name,
            "szDecimals": self.sz_decimals,
            "weiDecimals": self.wei_decimals,
            "index": self.index,
            "tokenId": self.token_id,
            "isCanonical": self.canonical,
            "evmContract": None,
            "fullName": None,
            "deployerTradingFeeShare": "0.0",
        }


@attrs.frozen
class SpotPair:
    """A spot pair: ``@N`` or ``PURR/USDC``."""

    name: str
    index: int
    base: int
    quote: int
    canonical: bool

    def info(self) -> dict[str, Any]:
        """Its entry in ``spotMeta``'s ``universe``."""
        return {
            "tokens": [self.base, self.quote],
            "name": self.name,
            "index": self.index,
            "isCanonical": self.canonical,
        }


class Markets:
    """The listing of a set of simulated coins."""

    def __init__(self, specs: list[CoinSpec]) -> None:
        self.dexes: list[str] = []
        """HIP-3 dex names, in order of their first coin."""
        self._perps: dict[str, list[PerpAsset]] = {"": []}
        self.perp_by_coin: dict[str, PerpAsset] = {}
        spot: list[CoinSpec] = []
        for spec in specs:
            if spec.market == "spot":
                spot.append(spec)
                continue
            dex = spec.name.split(":", 1)[0] if spec.market == "hip3" else ""
            if dex not in self._perps:
                self.dexes.append(dex)
                self._perps[dex] = []
            universe = self._perps[dex]
            leverage = _HIP3_LEVERAGE if dex else _MAX_LEVERAGE.get(spec.name, _DEFAULT_LEVERAGE)
            asset = PerpAsset(spec.name, dex, len(universe), sz_decimals(spec.lot), leverage)
            universe.append(asset)
            self.perp_by_coin[spec.name] = asset
        self.tokens: list[SpotToken] = [SpotToken("USDC", 0, 8, 8, _USDC_ID, True)]
        self.pairs: list[SpotPair] = self._spot_pairs(spot)
        """Spot pairs by index."""
        self.pair_by_coin = {pair.name: pair for pair in self.pairs}

    def _token(self, name: str, decimals: int) -> int:
        for token in self.tokens:
            if token.name == name:
                return token.index
        if name == "PURR":
            token = SpotToken(name, len(self.tokens), decimals, 5, _PURR_ID, True)
        else:
            wei = max(8, decimals)
            token = SpotToken(name, len(self.tokens), decimals, wei, _token_id(name), False)
        self.tokens.append(token)
        return token.index

    def _spot_pairs(self, specs: list[CoinSpec]) -> list[SpotPair]:
        indexed = {int(s.name[1:]): s for s in specs if s.name.startswith("@")}
        named = [s for s in specs if not s.name.startswith("@")]
        if 0 in indexed:
            raise ValueError("spot pair @0 is PURR/USDC: name it PURR/USDC")
        free = max(indexed, default=0) + 1
        placed: list[tuple[int, CoinSpec]] = []
        for spec in named:
            if spec.name == "PURR/USDC":
                placed.append((0, spec))
            else:
                placed.append((free, spec))
                free += 1
        placed.extend(indexed.items())
        pairs: list[SpotPair] = []
        for index, spec in sorted(placed, key=lambda entry: entry[0]):
            decimals = sz_decimals(spec.lot)
            if spec.name.startswith("@"):
                base = self._token(_SPOT_NAMES.get(index, f"TOKEN{index}"), decimals)
                quote = 0
            else:
                base_name, quote_name = spec.name.split("/", 1)
                base = self._token(base_name, decimals)
                quote = self._token(quote_name, 8)
            canonical = not spec.name.startswith("@")
            pairs.append(SpotPair(spec.name, index, base, quote, canonical))
        return pairs

    # -- lookups ------------------------------------------------------------------------------

    def has_dex(self, dex: str) -> bool:
        """True for ``""`` (the first perp dex) and every HIP-3 dex listed."""
        return dex in self._perps

    def perps(self, dex: str = "") -> list[PerpAsset]:
        """The universe of ``dex`` (``""``: the first perp dex); ``KeyError`` if unknown."""
        return self._perps[dex]

    def dex_coins(self, dex: str) -> set[str]:
        """Coins whose orders ``openOrders`` with this ``dex`` lists: its perps, and for
        the first dex the spot pairs too."""
        coins = {asset.name for asset in self._perps[dex]}
        if not dex:
            coins.update(pair.name for pair in self.pairs)
        return coins

    def base_token(self, pair: SpotPair) -> SpotToken:
        """The token a pair's sizes are counted in."""
        return self.tokens[pair.base]

    def sz_decimals_of(self, coin: str) -> int:
        """``szDecimals`` of any listed coin."""
        perp = self.perp_by_coin.get(coin)
        if perp is not None:
            return perp.sz_decimals
        return self.base_token(self.pair_by_coin[coin]).sz_decimals

    # -- the info answers ---------------------------------------------------------------------

    def meta(self, dex: str = "") -> dict[str, Any]:
        """The ``meta`` answer of ``dex``."""
        universe = self._perps[dex]
        leverages = sorted({asset.max_leverage for asset in universe})
        return {
            "universe": [asset.info() for asset in universe],
            "marginTables": [
                [
                    leverage,
                    {
                        "description": "",
                        "marginTiers": [{"lowerBound": "0.0", "maxLeverage": leverage}],
                    },
                ]
                for leverage in leverages
            ],
            "collateralToken": 0,
        }

    def spot_meta(self) -> dict[str, Any]:
        """The ``spotMeta`` answer."""
        return {
            "universe": [pair.info() for pair in self.pairs],
            "tokens": [token.info() for token in self.tokens],
        }

    def perp_dexs(self) -> list[dict[str, Any] | None]:
        """The ``perpDexs`` answer: ``null`` for the first dex, then each HIP-3 dex."""
        out: list[dict[str, Any] | None] = [None]
        for dex in self.dexes:
            names = [asset.name for asset in self._perps[dex]]
            out.append(
                {
                    "name": dex,
                    "fullName": f"{dex.upper()} (simulated)",
                    "deployer": _address(f"deployer:{dex}"),
                    "oracleUpdater": _address(f"oracle:{dex}"),
                    "feeRecipient": None,
                    "assetToStreamingOiCap": [[name, _OI_CAP] for name in names],
                    "subDeployers": [],
                    "deployerFeeScale": "1.0",
                    "lastDeployerFeeScaleChangeTime": "1970-01-01T00:00:00",
                    "assetToFundingMultiplier": [],
                    "assetToFundingInterestRate": [],
                }
            )
        return out

    def supply(self) -> tuple[str, str]:
        """``(totalSupply, circulatingSupply)`` of every simulated spot token."""
        return fmt(_TOTAL_SUPPLY), fmt(_CIRCULATING_SUPPLY)
