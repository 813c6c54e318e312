"""hlbook: exact per-order Hyperliquid order books from a node's files, over WebSocket.

The public API:

* :func:`serve` and :class:`Config` — run the server inside your own Trio
  program (``handle = await nursery.start(hlbook.serve, config)``), getting a
  :class:`ServerHandle` (port, health, books, in-process :class:`Feed`);
* :class:`Books`, :class:`CoinBook`, :class:`BlockJoiner` and the node formats —
  the pure engine, usable without Trio;
* the typed errors.
"""

import logging

from hlbook.app import ServerHandle, serve
from hlbook.book.books import Applied, Books
from hlbook.book.compare import Comparison, Difference, compare
from hlbook.book.l2 import bbo, l2_levels
from hlbook.book.l4 import CoinBook, Level
from hlbook.book.trades import Trade, trades_by_coin
from hlbook.config import Config
from hlbook.errors import (
    BlockOrderError,
    DivergenceError,
    DuplicateOrderError,
    HlbookError,
    NodeFormatError,
    OrderMismatchError,
    SnapshotError,
    StartupError,
    UnknownOrderError,
)
from hlbook.feed import BookUpdate, Feed, FeedOverflowError
from hlbook.model import Block, CoinFilter
from hlbook.node.formats import Layout, Order, Stream, decode_line, decode_snapshot
from hlbook.node.join import BlockJoiner, Gap

__version__ = "0.1.0"

# A library leaves logging to the program (the logging HOWTO): without a configuration
# of its own, the program sees no hlbook records on stderr. ``hlbook serve`` configures it.
logging.getLogger("hlbook").addHandler(logging.NullHandler())

__all__ = [
    "Applied",
    "Block",
    "BlockJoiner",
    "BlockOrderError",
    "BookUpdate",
    "Books",
    "CoinBook",
    "CoinFilter",
    "Comparison",
    "Config",
    "Difference",
    "DivergenceError",
    "DuplicateOrderError",
    "Feed",
    "FeedOverflowError",
    "Gap",
    "HlbookError",
    "Layout",
    "Level",
    "NodeFormatError",
    "Order",
    "OrderMismatchError",
    "ServerHandle",
    "SnapshotError",
    "StartupError",
    "Stream",
    "Trade",
    "UnknownOrderError",
    "__version__",
    "bbo",
    "compare",
    "decode_line",
    "decode_snapshot",
    "l2_levels",
    "serve",
    "trades_by_coin",
]
