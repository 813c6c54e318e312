"""Server configuration: one frozen value, built by the CLI or by embedding code."""

from pathlib import Path
from typing import Literal

import attrs

from hlbook.model import MARKETS, CoinFilter
from hlbook.node.formats import Layout

__all__ = ["Config"]

Ingest = Literal["auto", "by-block", "streaming"]


@attrs.frozen(kw_only=True)
class Config:
    """Everything ``hlbook serve`` can be told. Defaults match the CLI's."""

    node_data: Path = attrs.field(default=Path("~/hl/data"), converter=Path)
    """The node's data root (``--node-data``)."""
    info_url: str = "http://127.0.0.1:3001/info"
    """The node's info server, for ``fileSnapshot`` (``--info-url``)."""
    snapshot_path: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    """Where the node writes snapshots for hlbook; default ``<node_data>/hlbook_snapshot.json``."""
    snapshot_file: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    """Bootstrap from this snapshot file instead of asking the node (replays)."""
    ingest: Ingest = "auto"
    """Which layout to read; ``auto`` picks the one the node is writing."""
    from_start: bool = False
    """Read every existing hourly file from the oldest (replays) instead of from the end."""
    host: str = "127.0.0.1"
    port: int = attrs.field(
        default=8000, validator=[attrs.validators.ge(0), attrs.validators.le(65535)]
    )
    """WebSocket port; 0 picks a free one (see ``ServerHandle.port``)."""
    coins: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    """Only these coins (empty: all)."""
    markets: frozenset[str] = attrs.field(default=frozenset(MARKETS), converter=frozenset)
    """Only these markets: ``perp``, ``spot``, ``hip3``."""
    validate_every: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    """Seconds between consistency checks against a fresh node snapshot; 0 disables."""
    stale_after: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    """Seconds without a new block before the feed is reported stale."""
    idle_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    """Close a client that sent nothing for this long."""
    max_connections: int = attrs.field(default=1000, validator=attrs.validators.gt(0))
    max_subscriptions: int = attrs.field(default=1000, validator=attrs.validators.gt(0))
    """Per connection."""
    max_message_size: int = attrs.field(default=64 * 1024, validator=attrs.validators.gt(0))
    """Largest client message accepted, in bytes (larger: close code 1009; HTTP bodies: 413)."""
    compression_level: int = attrs.field(
        default=1, validator=[attrs.validators.ge(0), attrs.validators.le(9)]
    )
    """permessage-deflate level for clients that offer it; 0 disables compression."""
    handshake_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    """Seconds a connection has to send a complete request (head and body, or the
    WebSocket upgrade) once it opened or started one."""
    http_idle_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    """Seconds an idle keep-alive HTTP connection is kept open."""
    max_half_open: int = attrs.field(default=256, validator=attrs.validators.gt(0))
    """Connections that have not sent their first request yet; beyond it the oldest is dropped."""
    fallback_info_url: str | None = None
    """Where info types neither hlbook nor the node answer are passed on (e.g. the public
    API's ``https://api.hyperliquid.xyz/info``); unset: refused with a reason."""
    tokens: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Access tokens (``--token``; ``@FILE`` reads one from a file): when any is set, every
    request must carry one (``Authorization: Bearer T`` or ``?token=T``)."""
    public_health: bool = False
    """``/health`` and ``/metrics`` answer without a token."""
    allow_origins: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Browser origins allowed besides the server's own (empty: any)."""
    max_connections_per_ip: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    """Connections one client address may hold (beyond: HTTP 429)."""
    tls_cert: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    """PEM certificate (chain): serve ``https://`` and ``wss://`` on the port."""
    tls_key: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    """PEM private key for ``tls_cert``."""
    info_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    """Seconds to wait for the node's (or the fallback's) answer to a passed-on info request."""
    client_queue_messages: int = attrs.field(default=4096, validator=attrs.validators.gt(0))
    """Lossless (trades, l4Book) messages a client may have queued before the lag policy."""
    client_queue_bytes: int = attrs.field(
        default=64 * 1024 * 1024, validator=attrs.validators.gt(0)
    )
    stream_quiet_after: float = attrs.field(default=0.3, validator=attrs.validators.gt(0))
    """Streaming layout: a stream silent this long no longer holds a block back."""
    snapshot_timeout: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    retry_max: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    """Longest wait between attempts to reach the info server."""

    def __attrs_post_init__(self) -> None:
        CoinFilter(self.coins, self.markets)  # validates the market names
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")

    @property
    def coin_filter(self) -> CoinFilter:
        """The ``--coins``/``--markets`` filter."""
        return CoinFilter(self.coins, self.markets)

    @property
    def snapshot_out(self) -> Path:
        """Where the node is asked to write snapshots."""
        if self.snapshot_path is not None:
            return self.snapshot_path.expanduser().absolute()
        return (self.node_data.expanduser() / "hlbook_snapshot.json").absolute()

    @property
    def layout(self) -> Layout | None:
        """The forced layout, or ``None`` for auto-detection."""
        if self.ingest == "auto":
            return None
        return Layout.BY_BLOCK if self.ingest == "by-block" else Layout.STREAMING
