"""Mid prices: the exact middle of the best bid and the best ask.

Prices are integers scaled by ``10**12`` and have at most 8 decimals, so the
mid of two prices is always exact at that scale. A book missing a side has
no mid. Coins belong to a *dex*: ``""`` is the main one (perps by name, spot
``@N`` and ``BASE/QUOTE``); a HIP-3 builder dex ``xyz`` has the ``xyz:COIN``
books (the official ``allMids`` ``dex`` parameter).
"""

from collections.abc import Iterable

from hlbook.book.books import Books
from hlbook.book.l4 import ASK, BID, CoinBook
from hlbook.numbers import fmt

__all__ = ["dex_of", "mid", "mids"]


def dex_of(coin: str) -> str:
    """The dex a coin is listed on (``""`` for the main one)."""
    return coin.partition(":")[0] if ":" in coin else ""


def mid(book: CoinBook) -> str | None:
    """The book's mid price in the node's spelling, or ``None`` without both sides."""
    bid, ask = book.best(BID), book.best(ASK)
    if bid is None or ask is None:
        return None
    return fmt((bid.px + ask.px) // 2)


def mids(books: Books, dex: str, coins: Iterable[str] | None = None) -> dict[str, str]:
    """``{coin: mid}`` for the coins of ``dex`` (all of them, or only ``coins``)."""
    out: dict[str, str] = {}
    for coin in books.coins() if coins is None else coins:
        if dex_of(coin) != dex:
            continue
        book = books.book(coin)
        value = mid(book) if book is not None else None
        if value is not None:
            out[coin] = value
    return out
