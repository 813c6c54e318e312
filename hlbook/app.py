"""``hlbook.serve``: the whole server in one nursery, startable from any Trio program.

::

    async with trio.open_nursery() as nursery:
        handle = await nursery.start(hlbook.serve, hlbook.Config(node_data=..., port=0))
        print(handle.url)             # clients can connect now
        await handle.wait_ready()     # books loaded from the first snapshot
        async with handle.feed() as updates:
            async for update in updates:
                ...

The library never calls ``trio.run``, installs signal handlers or configures
logging; cancel the nursery to stop it.
"""

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs
import httpx
import trio

from hlbook.book.books import Books
from hlbook.book.views import Ladders
from hlbook.channels import Registry, Shared
from hlbook.config import Config
from hlbook.errors import HistoryError, StartupError
from hlbook.feed import Feed, FeedSink
from hlbook.history.queries import HistoryQueries
from hlbook.history.recorder import HistoryRecorder
from hlbook.history.store import HistoryStore
from hlbook.info import InfoRegistry
from hlbook.info.allmids import AllMidsInfo
from hlbook.info.coins import CoinsInfo
from hlbook.info.history import HistoryInfo
from hlbook.info.l2book import L2BookInfo
from hlbook.info.orders import OrdersInfo
from hlbook.info.proxy import InfoUpstream, NodeInfo, Refused
from hlbook.listen import (
    HeldListener,
    certificate_watch,
    check_certificate_now,
    load_tokens,
    open_listeners,
    tls_context,
    watch_certificate,
)
from hlbook.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hlbook.metrics import Metrics
from hlbook.relay.client import open_nats
from hlbook.relay.publisher import Publisher
from hlbook.server.access import AccessPolicy
from hlbook.server.fanout import Hub
from hlbook.server.routes import Response, Routes
from hlbook.server.slots import Kind
from hlbook.server.tls import CertificateWatch
from hlbook.shell.connection import Server, ServerLimits
from hlbook.shell.follow import RelayPath
from hlbook.shell.ingest import DataPath
from hlbook.shell.publish import (
    PublishSink,
    connection_health,
    names_of,
    nats_options,
    stream_settings,
)
from hlbook.shell.writer import Flusher, FlushSink
from hlbook.stages import BlockSink, Sinks
from hlbook.supervisor import Status
from hlbook.web import load_page

__all__ = ["ServerHandle", "serve"]

history_log = logging.getLogger("hlbook.history")
publish_log = logging.getLogger("hlbook.publish")  # as hlbook.shell.publish logs


class ServerHandle:
    """What :func:`serve` hands back once clients can connect."""

    def __init__(
        self,
        config: Config,
        host: str,
        port: int,
        data_path: "DataPath | RelayPath",
        hub: Hub,
        feeds: set[Feed],
        server: Server,
        history: HistoryStore,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        """The bound port, HTTP and WebSocket (useful with ``Config(port=0)``)."""
        self._data_path = data_path
        self._hub = hub
        self._feeds = feeds
        self._server = server
        self.history = history
        """The history store (fills, trades, candles, finished orders)."""
        self.worker: int | None = None
        """This process's index under ``hlbook serve --workers N`` (``None`` alone); when
        set, health reports it as ``worker``."""
        self.publishing: PublishSink | None = None
        """``--publish``: the sink publishing blocks and snapshots to NATS."""

    @property
    def relay(self) -> RelayPath | None:
        """``--source``: the relay's data path (``None`` for a primary)."""
        path = self._data_path
        return path if isinstance(path, RelayPath) else None

    @property
    def url(self) -> str:
        """``ws://host:port/ws`` (``wss://`` with TLS)."""
        scheme = "wss" if self.config.tls_cert else "ws"
        return f"{scheme}://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS): the base URL for ``POST /info``
        (what SDKs call ``base_url``)."""
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def books(self) -> Books | None:
        """The live books (``None`` until the first snapshot is loaded).

        ``books.height`` is the last block whose diffs are applied and
        ``books.details_height`` the last whose statuses are (see
        :meth:`~hlbook.book.books.Books.details_ready`)."""
        return self._data_path.books

    @property
    def routes(self) -> Routes:
        """The HTTP routes (``routes.extra`` adds or replaces a GET route)."""
        return self._server.routes

    @property
    def hub(self) -> Hub:
        """Subscriptions and fan-out counters."""
        return self._hub

    @property
    def stopped(self) -> bool:
        """True once :func:`serve` has returned (health says ``stopped``)."""
        return self._data_path.stopped

    async def wait_ready(self) -> None:
        """Return once books are loaded and blocks are being applied.

        Raises :class:`trio.ClosedResourceError` if the server stops first (so do
        the other waits)."""
        await self._data_path.wait_ready()

    async def wait_for_height(self, height: int) -> None:
        """Return once the books have applied block ``height``'s diffs (or a later block's)."""
        await self._data_path.wait_for_height(height)

    async def wait_for_details(self, height: int) -> None:
        """Return once block ``height``'s statuses are attached to the books (or later)."""
        await self._data_path.wait_for_details(height)

    def feed(self, max_buffer: int = 1000) -> Feed:
        """A new in-process feed of per-block updates (see :mod:`hlbook.feed`); one made
        after the server stopped ends at once."""
        feed = Feed(self._feeds, max_buffer)
        if self.stopped:
            feed.close()
        return feed

    def health(self, *, public: bool = False) -> dict[str, Any]:
        """Whether the feed is live, its height and lag, clients served, and counters.

        ``public=True`` is what remote clients get (``/health``, the WebSocket
        ``health`` method): counters, but no file paths, URLs or error texts, which
        stay in the logs (and the in-process handle).
        """
        path, books = self._data_path, self._data_path.books
        server, hub = self._server, self._hub
        stats = server.stats
        now = time.time()
        block_time = books.time if books is not None and books.time else None
        status = path.status
        health: dict[str, Any] = {
            "status": "stopped" if path.stopped else status.value,
            "live": status is Status.LIVE and not path.stopped,
            "uptime_s": round(time.monotonic() - path.started_at, 3),
            "height": books.height if books is not None else None,
            "details_height": books.details_height if books is not None else None,
            "block_time": block_time,
            "lag_ms": int(now * 1000) - block_time if block_time else None,
            "last_block_age_s": (
                round(now - path.last_block_wall, 3) if path.last_block_wall else None
            ),
            "coins": len(books.coins()) if books is not None else 0,
            "orders": len(books) if books is not None else 0,
            "clients": len(server.active),
            "subscriptions": hub.subscription_count,
            "queued_messages": server.queued(),
            "connections": {
                "accepted": stats.accepted,
                "rejected": stats.rejected + server.slots.refused,
                "websockets": stats.websockets,
                "compressed_websockets": stats.compressed_websockets,
                "http_requests": stats.http_requests,
                "closed_idle": stats.closed_idle,
                "protocol_errors": stats.protocol_errors,
                "client_errors": stats.client_errors,
                "denied": stats.denied,
                "tls_failures": stats.tls_failures,
                "messages_sent": stats.messages_sent,
                "bytes_sent": stats.bytes_sent,
                "recent_lag_disconnects": list(hub.recent_disconnects),
            },
            "fanout": _asdict(hub.stats),
            "pipeline": _asdict(path.stats),
            "joiner": path.joiner_stats(),
            "history": _history_health(self.history),
        }
        if self.worker is not None:
            health["worker"] = self.worker
        publishing = self.publishing
        if publishing is not None:
            health["publish"] = publishing.health()
            health["publish"]["nats"] = connection_health(publishing.publisher.connection)
            if public:
                health["publish"].pop("last_error", None)
                health["publish"]["nats"].pop("last_error", None)
        if isinstance(path, RelayPath):
            health["relay"] = path.relay_health(public=public)
        if public:
            health["pipeline"].pop("last_error", None)
            health["history"].pop("last_error", None)
            health["history"].pop("path", None)
            return health
        health["detail"] = path.detail
        health["layout"] = path.layout.value if path.layout else None
        health["streams"] = {
            stream.value: _asdict(tailer.stats) for stream, tailer in path.tailers.items()
        }
        return health

    def client_stats(self) -> list[dict[str, Any]]:
        """Per-client counters: queued, sent, conflated, resnapshots, lag disconnects."""
        return [
            {
                "id": client.id,
                "subscriptions": len(client.subscriptions),
                "queued": len(client),
                "queued_bytes": client.queued_bytes,
                "compressed": client.deflater is not None,
                **_asdict(client.stats),
            }
            for client in self._server.active
        ]


def _asdict(value: Any) -> dict[str, Any]:
    result: dict[str, Any] = attrs.asdict(value)
    return result


def _history_health(store: HistoryStore) -> dict[str, Any]:
    stats = _asdict(store.statistics())
    stats["in_memory"] = store.path is None
    return stats


async def serve(
    config: Config,
    *,
    listeners: Sequence[trio.SocketListener | HeldListener] | None = None,
    task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run hlbook until cancelled. Use as ``handle = await nursery.start(serve, config)``.

    ``task_status.started`` is called with a :class:`ServerHandle` once the port
    accepts connections (HTTP and WebSocket); books load in the background
    (:meth:`ServerHandle.wait_ready`). ``listeners``: serve these instead of
    opening ``config.host``/``config.port`` (a worker of ``--workers N`` brings
    sockets that share the port, held until its books are ready after a
    restart); they are closed when ``serve`` returns.
    """
    # Checked and opened before the nursery, so that a bad certificate, an unusable
    # history file or a taken port is a plain StartupError raised by
    # ``nursery.start(serve, ...)``, not one wrapped in a group.
    access = AccessPolicy(
        tokens=load_tokens(config.tokens),
        allow_origins=config.allow_origins,
        public_health=config.public_health,
    )
    ssl_context = tls_context(config.tls_cert, config.tls_key)
    # An expired or not yet valid certificate is served with a warning, not refused: the
    # operator may be replacing it, and the rest of the server is still of use.
    certificate = certificate_watch(config.tls_cert)
    if certificate is not None:
        check_certificate_now(certificate)
    store, recorder = await _open_history(config)
    try:
        if listeners is None:
            listeners = await open_listeners(config.host, config.port, "hlbook")
        await _serve(
            config, access, ssl_context, certificate, store, recorder, listeners, task_status
        )
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)


async def _open_history(config: Config) -> tuple[HistoryStore, HistoryRecorder]:
    path = config.history_path

    def open_both() -> tuple[HistoryStore, HistoryRecorder]:
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryError(str(path), f"cannot create {path.parent}: {exc}") from None
        store = HistoryStore(path, retention_ms=config.history_retention_ms)
        try:
            return store, HistoryRecorder(store)
        except BaseException:
            store.close()
            raise

    try:
        opened = await trio.to_thread.run_sync(open_both)
    except HistoryError as exc:
        raise StartupError(f"history: {exc}") from None
    if path is None:
        history_log.info("history: in memory only (a bounded window, lost at exit)")
    else:
        # Which of the two: a new file where one was expected is history lost, not resumed.
        history_log.info("history: %s (retention %s)", opened[0].opened, config.history_retention)
    return opened


async def _serve(
    config: Config,
    access: AccessPolicy,
    ssl_context: Any,
    certificate: CertificateWatch | None,
    store: HistoryStore,
    recorder: HistoryRecorder,
    listeners: Sequence[trio.SocketListener | HeldListener],
    task_status: trio.TaskStatus[ServerHandle],
) -> None:
    ladders = Ladders()
    hub = Hub(Registry(Shared(ladders=ladders, history=store, recorder=recorder)))
    feeds: set[Feed] = set()
    handle_box: list[ServerHandle] = []
    try:
        async with (
            httpx.AsyncClient(
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=8)
            ) as http,
            _publishing(config) as publishing,
            trio.open_nursery() as nursery,
        ):
            # The recorder first: the candle channel publishes what it just built. The
            # fan-out's messages are written to the sockets right after it, before the
            # in-process feeds and NATS publishing take their share of the step.
            flusher = Flusher()
            sinks: list[BlockSink] = [recorder, hub, FlushSink(flusher), FeedSink(feeds)]
            if publishing is not None:
                sinks.append(publishing)
            data_path: DataPath | RelayPath
            if config.source:
                source = nats_options(config, config.source)
                source.check_files()
                data_path = RelayPath(config, Sinks(*sinks), source, names_of(config))
            else:
                data_path = DataPath(config, Sinks(*sinks))
            metrics = Metrics(lambda: _metrics_state(handle_box[0]))
            data_path.supervisor.stage_timer = metrics.observe_stage
            info = _info_registry(config, http, data_path, ladders, store, metrics)
            server = Server(
                hub,
                info,
                books=lambda: data_path.books,
                ready=lambda: data_path.ready,
                health=lambda: handle_box[0].health(public=True),
                limits=_limits(config),
                access=access,
                ssl_context=ssl_context,
                page=load_page().respond,
                flusher=flusher,
            )
            server.routes.observe = metrics.observe_http
            server.routes.extra["/metrics"] = lambda _request: _scrape(metrics)
            await nursery.start(trio.serve_listeners, server.handle_stream, list(listeners))
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(server.flusher.run)
            if ssl_context is not None:
                nursery.start_soon(server.report_tls_failures)
            if certificate is not None:
                nursery.start_soon(watch_certificate, certificate)
            handle = ServerHandle(config, config.host, port, data_path, hub, feeds, server, store)
            handle.publishing = publishing
            handle_box.append(handle)
            nursery.start_soon(data_path.run)
            task_status.started(handle)
    finally:
        # Consumers iterating a feed elsewhere see it end rather than wait forever, and
        # tasks waiting on the handle are woken (their waits raise).
        for feed in list(feeds):
            feed.close()
        if handle_box:
            handle_box[0]._data_path.stop()


@contextlib.asynccontextmanager
async def _publishing(config: Config) -> AsyncIterator[PublishSink | None]:
    """``--publish``: connect to NATS (in the background) and publish; else ``None``."""
    if not config.publish:
        yield None
        return
    options = nats_options(config, config.publish)
    options.check_files()
    if config.publish_max_age < 2 * config.publish_snapshot_every:
        publish_log.warning(
            "--publish-max-age %g s is under twice --publish-snapshot-every %g s: a relay"
            " that starts late may find the blocks after the newest snapshot expired",
            config.publish_max_age,
            config.publish_snapshot_every,
        )
    async with (
        open_nats(options) as connection,
        trio.open_nursery() as nursery,
    ):
        publisher = Publisher(
            connection,
            names_of(config),
            settings=stream_settings(config),
            max_blocks=config.publish_buffer,
            early_diffs=config.publish_early_diffs,
        )
        await nursery.start(publisher.run)
        sink = PublishSink(publisher, config.publish_snapshot_every)
        await nursery.start(sink.run)
        try:
            yield sink
        finally:
            nursery.cancel_scope.cancel()


async def _scrape(metrics: Metrics) -> Response:
    return Response(200, metrics.scrape(), content_type=METRICS_CONTENT_TYPE)


def _metrics_state(handle: ServerHandle) -> dict[str, Any]:
    """What the metrics collector reads at each scrape."""
    server = handle._server
    return {
        "health": handle.health(public=True),
        "statuses": [status.value for status in Status],
        "channels": {name: _asdict(stats) for name, stats in handle.hub.channel_stats.items()},
        "connection_kinds": {kind.value: server.slots.count(kind) for kind in Kind},
        "sent": server.sent_totals(),
        "queue_depths": [len(client) for client in server.active],
        "history": _history_health(handle.history),
    }


def _limits(config: Config) -> ServerLimits:
    return ServerLimits(
        max_connections=config.max_connections,
        max_per_address=config.max_connections_per_ip,
        max_half_open=config.max_half_open,
        handshake_timeout=config.handshake_timeout,
        http_idle_timeout=config.http_idle_timeout,
        max_body=config.max_message_size,
        max_message_size=config.max_message_size,
        idle_timeout=config.idle_timeout,
        max_subscriptions=config.max_subscriptions,
        queue_messages=config.client_queue_messages,
        queue_bytes=config.client_queue_bytes,
        compression_level=config.compression_level,
    )


def _info_registry(
    config: Config,
    http: httpx.AsyncClient,
    data_path: "DataPath | RelayPath",
    ladders: Ladders,
    store: HistoryStore,
    metrics: Metrics,
) -> InfoRegistry:
    books: Callable[[], Books | None] = lambda: data_path.books  # noqa: E731
    node = InfoUpstream(
        http,
        config.info_url,
        "the node's info server",  # clients see this: the URL stays in the logs
        timeout=config.info_timeout,
        observe=metrics.upstream_observer("node"),
    )
    fallback = None
    if config.fallback_info_url:
        fallback = InfoUpstream(
            http,
            config.fallback_info_url,
            "the fallback info server",
            timeout=config.info_timeout,
            observe=metrics.upstream_observer("fallback"),
        )
    queries = HistoryQueries(store)
    handlers = [
        L2BookInfo(books, ladders),
        AllMidsInfo(books),
        OrdersInfo(books, data_path.wait_for_details, queries),
        HistoryInfo(queries),
        CoinsInfo(books),
        Refused(),
    ]
    return InfoRegistry(handlers, NodeInfo(node, fallback))
