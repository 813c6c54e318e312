"""``GET /metrics``: Prometheus text exposition through ``prometheus-client``.

Most figures are counters hlbook keeps anyway (the data path's, the fan-out's,
the connection layer's, the history store's); a :class:`Collector` turns them
into metric families when Prometheus scrapes, so the feed does no per-message
work for metrics. Event metrics that need a distribution — HTTP requests by
info type and status, node-proxy latency, book-task time per block and stage —
are ``prometheus_client`` counters and histograms observed once per request or
per block. Each server has its own registry (several servers may run in one
process, e.g. in tests).

Names start with ``hlbook_``; the README lists them with what to alert on.
"""

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from hlbook.stages import Stage

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_QUEUE_BUCKETS = (0, 1, 4, 16, 64, 256, 1024, 4096, 16384)
_MAX_KINDS = 200
"""Distinct ``type`` label values of ``hlbook_info_requests_total``; later ones are "other"."""
_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0)

# health()["pipeline"] counters exported as hlbook_<name>_total.
_PIPELINE_COUNTERS = {
    "blocks_applied": "Blocks applied to the books",
    "bootstraps": "Books loaded from a snapshot (start-up and every resync)",
    "divergences": "Blocks that did not fit the books (each a resync)",
    "gaps": "Missing or incomplete blocks (each a resync)",
    "bad_lines": "Node lines that could not be read",
    "late_events": "Status and fill events read after their block was complete (dropped)",
    "validations": "Comparisons with a fresh node snapshot",
    "validation_mismatches": "Comparisons that found differences",
    "coins_repaired": "Coins repaired from a node snapshot",
    "snapshots_unfit": "Node snapshots that did not fit the node's own later blocks",
    "stale_periods": "Times the feed went stale",
}


class Metrics:
    """One server's registry: its collector and its event metrics."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(state))
        self.info_requests = Counter(
            "hlbook_info_requests",
            "POST /info requests by info type and HTTP status",
            ["type", "status"],
            registry=self.registry,
        )
        self.proxy_seconds = Histogram(
            "hlbook_info_upstream_seconds",
            "Time the node's (or fallback's) info server took to answer, by outcome",
            ["upstream", "outcome"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "hlbook_book_task_seconds",
            "Book-task time per block and stage (apply and publish)",
            ["stage"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        # One child per stage, looked up once: observed four times a block.
        self._stage_children = {stage: self.stage_seconds.labels(stage.value) for stage in Stage}
        self._kinds: dict[str, str] = {}

    def observe_stage(self, stage: Stage, seconds: float) -> None:
        """The book task spent ``seconds`` on ``stage`` of one block (see
        :attr:`hlbook.supervisor.Supervisor.stage_timer`)."""
        self._stage_children[stage].observe(seconds)

    def observe_http(self, kind: str, status: int) -> None:
        """One ``POST /info`` answered."""
        # Bounded label values: types nobody knows share one label. The type is the
        # client's string, so only the first _MAX_KINDS are remembered: remembering every
        # later one as "other" would grow with each new string a client sends.
        label = self._kinds.get(kind)
        if label is None:
            if len(self._kinds) < _MAX_KINDS:
                label = self._kinds[kind] = kind
            else:
                label = "other"
        self.info_requests.labels(label, str(status)).inc()

    def upstream_observer(self, name: str) -> Callable[[str, float], None]:
        """What an info upstream calls after each request (outcome, seconds)."""

        def observe(outcome: str, seconds: float) -> None:
            self.proxy_seconds.labels(name, outcome).observe(seconds)

        return observe

    def scrape(self) -> bytes:
        """The text exposition of everything now."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Metric families built at scrape time from the server's own counters."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        health = state["health"]
        status = GaugeMetricFamily(
            "hlbook_status", "1 for the feed's current status", labels=["status"]
        )
        for name in state["statuses"]:
            status.add_metric([name], 1.0 if health["status"] == name else 0.0)
        yield status
        yield _gauge("hlbook_height", "Last block whose diffs are applied", health["height"])
        yield _gauge(
            "hlbook_details_height",
            "Last block whose statuses are attached",
            health.get("details_height", health["height"]),
        )
        block_time = health.get("block_time")
        lag = time.time() - block_time / 1000 if block_time else None
        yield _gauge("hlbook_block_lag_seconds", "Now minus the last applied block's time", lag)
        yield _gauge("hlbook_resting_orders", "Orders resting in the books", health["orders"])
        yield _gauge("hlbook_coins", "Coins with a book", health["coins"])
        pipeline = health.get("pipeline", {})
        for name, text in _PIPELINE_COUNTERS.items():
            if name in pipeline:
                yield _counter(f"hlbook_{name}", text, pipeline[name])
        if "book_seconds" in pipeline:
            yield _counter(
                "hlbook_book_task_cpu_seconds",
                "Time the book task spent joining, applying and publishing",
                pipeline["book_seconds"],
            )
        yield from _channels(state["channels"])
        yield from _connections(health, state)
        yield from _history(state.get("history"))
        yield from _nats(health.get("publish"), health.get("relay"))


def _gauge(name: str, text: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text)
    if value is not None:
        family.add_metric([], float(value))
    return family


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=float(value))


def _channels(channels: dict[str, Any]) -> Iterator[Metric]:
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "subscriptions": GaugeMetricFamily(
            "hlbook_subscriptions", "Distinct subscriptions with a subscriber", labels=["channel"]
        ),
        "messages_built": CounterMetricFamily(
            "hlbook_messages_built", "Messages built (once per view, shared)", labels=["channel"]
        ),
        "messages_queued": CounterMetricFamily(
            "hlbook_messages_queued",
            "Messages offered to client queues (one per subscriber)",
            labels=["channel"],
        ),
        "bytes_queued": CounterMetricFamily(
            "hlbook_message_bytes_queued",
            "Payload bytes offered to client queues",
            labels=["channel"],
        ),
        "resnapshots": CounterMetricFamily(
            "hlbook_resnapshots", "Backlogs replaced by a fresh first message", labels=["channel"]
        ),
        "lag_disconnects": CounterMetricFamily(
            "hlbook_lag_disconnects", "Clients disconnected for lagging (1008)", labels=["channel"]
        ),
    }
    for channel, stats in channels.items():
        for field, family in families.items():
            family.add_metric([channel], float(stats[field]))
    yield from families.values()


def _connections(health: dict[str, Any], state: dict[str, Any]) -> Iterator[Metric]:
    by_kind = GaugeMetricFamily(
        "hlbook_connections", "Open connections by what they are doing", labels=["kind"]
    )
    for kind, count in state["connection_kinds"].items():
        by_kind.add_metric([kind], float(count))
    yield by_kind
    connections = health["connections"]
    for name, text in (
        ("accepted", "Connections accepted"),
        ("rejected", "Connections refused (server full, too many from one address, bad path)"),
        ("websockets", "WebSocket sessions started"),
        ("compressed_websockets", "WebSocket sessions with permessage-deflate"),
        ("http_requests", "HTTP requests"),
        ("closed_idle", "WebSocket clients closed for idleness"),
        ("protocol_errors", "Client protocol errors"),
        ("client_errors", "Errors serving a client (bugs; logged)"),
        ("denied", "Requests refused by the access policy (401/403)"),
        ("tls_failures", "TLS handshakes that failed or stalled"),
        ("messages_sent", "Messages written to clients"),
        ("bytes_sent", "Bytes written to clients (compressed where they were)"),
    ):
        if name in connections:
            yield _counter(f"hlbook_{name}", text, connections[name])
    sent = state["sent"]
    yield _counter(
        "hlbook_compressed_messages",
        "Messages sent compressed (permessage-deflate)",
        sent["compressed"],
    )
    yield _counter(
        "hlbook_conflations", "Views replaced by a newer one before sending", sent["conflated"]
    )
    depth = GaugeHistogramMetricFamily(
        "hlbook_client_queue_depth", "Messages waiting per connected client"
    )
    depths = state["queue_depths"]
    buckets = []
    for bound in _QUEUE_BUCKETS:
        buckets.append((str(bound), float(sum(1 for d in depths if d <= bound))))
    buckets.append(("+Inf", float(len(depths))))
    depth.add_metric([], buckets, gsum_value=float(sum(depths)))
    yield depth


_PUBLISH_COUNTERS = {
    "published": "Blocks acknowledged by JetStream (--publish)",
    "duplicates": "Blocks JetStream acknowledged as duplicates (another primary was first)",
    "dropped": "Blocks dropped because NATS was too slow or down (relays re-bootstrap)",
    "gaps": "Runs of dropped blocks",
    "retries": "Publish attempts retried",
    "snapshots": "Book snapshots stored in the object store",
    "diffs_published": "Early diffs (each block's diffs ahead of it) sent to NATS",
    "diffs_dropped": "Early diffs not sent (buffer full or a gap open; their block carries them)",
}
_RELAY_COUNTERS = {
    "delivered": "Blocks received from the stream (--source)",
    "bootstraps": "Snapshots the relay bootstrapped from",
    "gaps": "Gaps in the stream (each a re-bootstrap)",
    "skipped": "Duplicate or redelivered block messages skipped",
    "diffs_delivered": "Early diffs received (l2Book and bbo published before the block)",
}


def _nats(publish: dict[str, Any] | None, relay: dict[str, Any] | None) -> Iterator[Metric]:
    if publish is not None:
        for name, text in _PUBLISH_COUNTERS.items():
            yield _counter(f"hlbook_publish_{name}", text, publish.get(name, 0))
        yield _gauge(
            "hlbook_publish_buffered_blocks",
            "Blocks waiting to be acknowledged by JetStream",
            publish.get("buffered", 0),
        )
        nats = publish.get("nats", {})
        yield _gauge(
            "hlbook_publish_connected",
            "1 while connected to NATS",
            float(bool(nats.get("connected"))),
        )
    if relay is not None:
        for name, text in _RELAY_COUNTERS.items():
            yield _counter(f"hlbook_relay_{name}", text, relay.get(name, 0))
        yield _gauge(
            "hlbook_relay_connected",
            "1 while connected to NATS",
            float(bool(relay.get("connected"))),
        )
        yield _gauge(
            "hlbook_relay_stream_seq",
            "Stream sequence of the last block received",
            relay.get("stream_seq"),
        )


def _history(history: dict[str, Any] | None) -> Iterator[Metric]:
    if history is None:
        return
    for name, text in (
        ("rows_written", "History rows written"),
        ("rows_dropped", "History rows dropped (disk too slow or failing; a recorded gap)"),
        ("write_failures", "History writes that failed"),
        ("gaps", "Gaps in the history"),
        ("files_lost", "History files found deleted, moved away or replaced while running"),
    ):
        if name in history:
            yield _counter(f"hlbook_history_{name}", text, history[name])
    if "pending_rows" in history:
        yield _gauge(
            "hlbook_history_pending_rows",
            "History rows waiting to be written",
            history["pending_rows"],
        )
