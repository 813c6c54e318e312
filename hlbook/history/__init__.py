"""The history store: fills, finished order statuses, trades and candles, kept in SQLite.

* :class:`HistoryStore` — the database (a file, or ``None`` for a bounded
  in-memory window) and its writer thread; never awaited by the book task,
  bounded when the disk is slow, retention-limited, schema-checked at open;
* :class:`HistoryRecorder` — the :class:`~hlbook.stages.BlockSink` that feeds
  it and keeps the current candles;
* :class:`HistoryQueries` — async handlers for ``userFills``,
  ``userFillsByTime``, ``candleSnapshot`` and finished ``orderStatus``;
* :class:`CandleBuilder` and :class:`Candle` — candles from trades (sans I/O);
* request parsing, the official limits and shapes.
"""

from hlbook.history.candles import INTERVALS, Candle, CandleBuilder, candle_close, candle_open
from hlbook.history.queries import Answer, HistoryQueries
from hlbook.history.recorder import HistoryRecorder
from hlbook.history.requests import (
    CANDLES_LIMIT,
    FILLS_LIMIT,
    CandleSnapshotRequest,
    HistoryRequestError,
    OrderStatusRequest,
    UserFillsByTimeRequest,
    UserFillsRequest,
    parse_candle_snapshot,
    parse_duration,
    parse_order_status,
    parse_user_fills,
    parse_user_fills_by_time,
)
from hlbook.history.rows import FinishedOrder
from hlbook.history.store import (
    DEFAULT_RETENTION_MS,
    FILLS,
    STATUSES,
    FillsAnswer,
    FillsBatch,
    Gap,
    HistoryStats,
    HistoryStore,
    PendingView,
    StatusesBatch,
)
from hlbook.history.wire import (
    aggregate_by_time,
    fill_wire,
    is_recorded,
    is_rejection,
    order_status_wire,
    order_wire,
    unknown_oid,
)

__all__ = [
    "CANDLES_LIMIT",
    "DEFAULT_RETENTION_MS",
    "FILLS",
    "FILLS_LIMIT",
    "INTERVALS",
    "STATUSES",
    "Answer",
    "Candle",
    "CandleBuilder",
    "CandleSnapshotRequest",
    "FillsAnswer",
    "FillsBatch",
    "FinishedOrder",
    "Gap",
    "HistoryQueries",
    "HistoryRecorder",
    "HistoryRequestError",
    "HistoryStats",
    "HistoryStore",
    "OrderStatusRequest",
    "PendingView",
    "StatusesBatch",
    "UserFillsByTimeRequest",
    "UserFillsRequest",
    "aggregate_by_time",
    "candle_close",
    "candle_open",
    "fill_wire",
    "is_recorded",
    "is_rejection",
    "order_status_wire",
    "order_wire",
    "parse_candle_snapshot",
    "parse_duration",
    "parse_order_status",
    "parse_user_fills",
    "parse_user_fills_by_time",
    "unknown_oid",
]
