"""``GET /metrics``: Prometheus text that ``prometheus_client``'s parser reads, whose counters
move as the feed and the clients do."""

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from server_support import send, sim_and_server, subscribe
from trio_websocket import open_websocket_url

from hlbook.node.formats import Stream

pytestmark = pytest.mark.slow


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    # One family per name: Prometheus rejects a scrape that repeats one.
    helps = [line.split()[2] for line in response.text.splitlines() if line.startswith("# HELP")]
    assert len(helps) == len(set(helps)), sorted(n for n in helps if helps.count(n) > 1)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_follow_the_feed_and_the_clients(tmp_path: Path) -> None:
    async with (
        sim_and_server(tmp_path, sim={"scale": 0.3}, client_queue_messages=5) as (handle, node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        first = await scrape(client)
        async with open_websocket_url(handle.url) as ws:
            await send(ws, subscribe("BTC", "l2Book"))
            await ws.get_message()
            await handle.wait_for_height(node.height + 5)
            await client.post("/info", json={"type": "l2Book", "coin": "BTC"})
            await client.post("/info", json={"type": "nope"})
            health_before = handle.health()
            samples = await scrape(client)
            health = handle.health()
        assert value(samples, "hlbook_status", status="live") == 1.0
        assert value(samples, "hlbook_status", status="stale") == 0.0
        applied = value(samples, "hlbook_blocks_applied_total")
        assert applied > value(first, "hlbook_blocks_applied_total")
        # The scrape and health read the same counters (blocks may land in between).
        assert health_before["pipeline"]["blocks_applied"] <= applied
        assert applied <= health["pipeline"]["blocks_applied"]
        assert value(samples, "hlbook_subscriptions", channel="l2Book") == 1.0
        assert value(samples, "hlbook_messages_queued_total", channel="l2Book") > 0
        assert value(samples, "hlbook_info_requests_total", type="l2Book", status="200") == 1.0
        assert value(samples, "hlbook_connections", kind="websocket") == 1.0
        assert value(samples, "hlbook_client_queue_depth_gcount") == 1.0
        assert value(samples, "hlbook_height") == pytest.approx(health["height"], abs=2)
        assert value(samples, "hlbook_block_lag_seconds") >= 0
        # The book task's time per block, stage by stage: each stage of each block counted.
        for stage in ("diffs", "statuses", "fills", "block"):
            count = value(samples, "hlbook_book_task_seconds_count", stage=stage)
            assert count >= applied - value(first, "hlbook_blocks_applied_total"), stage
            assert value(samples, "hlbook_book_task_seconds_sum", stage=stage) > 0, stage
        # A client that never reads its trades is disconnected for lag: counted per channel.
        raw = trio.socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await raw.connect(("127.0.0.1", handle.port))
        sock = trio.SocketStream(raw)
        await sock.send_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        for coin in node.coins():
            for kind in ("trades", "l4Book"):  # l4Book's volume fills the socket's buffers
                text = (
                    f'{{"method":"subscribe","subscription":{{"type":"{kind}","coin":"{coin}"}}}}'
                )
                payload = text.encode()
                await sock.send_all(bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
        with trio.fail_after(30):
            while True:
                now = await scrape(client)
                lagged = [
                    value(now, "hlbook_lag_disconnects_total", channel=name)
                    for name in ("trades", "l4Book")
                ]
                if sum(lagged) >= 1:
                    break
                await trio.sleep(0.2)
        await sock.aclose()
        # A skipped block is a gap and a resync: both counters move.
        before = await scrape(client)
        node.skip_block(Stream.DIFFS)
        with trio.fail_after(30):
            while True:
                now = await scrape(client)
                if value(now, "hlbook_bootstraps_total") > value(before, "hlbook_bootstraps_total"):
                    break
                await trio.sleep(0.2)
        assert value(now, "hlbook_gaps_total") > value(before, "hlbook_gaps_total")


async def test_metrics_need_the_token_unless_public(tmp_path: Path) -> None:
    async with (
        sim_and_server(tmp_path, tokens=("t",)) as (handle, _node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        assert (await client.get("/metrics")).status_code == 401
        ok = await client.get("/metrics", headers={"authorization": "Bearer t"})
        assert ok.status_code == 200
    settings: dict[str, Any] = {"tokens": ("t",), "public_health": True}
    async with (
        sim_and_server(tmp_path / "open", **settings) as (handle, _node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        assert (await client.get("/metrics")).status_code == 200
