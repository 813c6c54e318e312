"""The running simulator: real files, a real HTTP info server, faults, cancellation."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing
from node_replay import NodeReplay

from hlbook.book.books import Books
from hlbook.book.compare import compare
from hlbook.node.files import hourly_files
from hlbook.node.formats import Layout, Stream, decode_snapshot, iter_snapshot
from hlbook.sim import SimConfig, SimHandle, run_simulator

BEFORE_MIDNIGHT = datetime(2026, 5, 5, 23, 59, 58, tzinfo=UTC)


def _config(tmp_path: Path, **changes: Any) -> SimConfig:
    settings: dict[str, Any] = {
        "node_data": tmp_path / "node",
        "scale": 0.1,
        "info_port": 0,
        "record_history": 200,
        "seed": 1,
    }
    settings.update(changes)
    return SimConfig(**settings)


async def _http(
    port: int, body: bytes, *, method: bytes = b"POST", target: bytes = b"/info"
) -> tuple[int, Any]:
    """One HTTP/1.1 request; the status and the decoded JSON body (text if refused)."""
    return (await _http_many(port, [(method, target, body)]))[0]


async def _http_many(
    port: int, requests: list[tuple[bytes, bytes, bytes]], *, content_type: bool = True
) -> list[tuple[int, Any]]:
    """Several requests on one keep-alive connection: answers are JSON, refusals text."""
    answers = []
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        for method, target, body in requests:
            headers = [("host", "127.0.0.1"), ("content-length", str(len(body)))]
            if content_type:
                headers.append(("content-type", "application/json"))
            data = conn.send(h11.Request(method=method, target=target, headers=headers))
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            status, chunks, kind = 0, [], b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    kind = dict(event.headers)[b"content-type"]
                elif isinstance(event, h11.Data):
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
            raw = b"".join(chunks)
            if status == 200:
                assert kind == b"application/json"
                answers.append((status, json.loads(raw)))
            else:
                assert kind == b"text/plain; charset=utf-8"
                answers.append((status, raw.decode()))
            conn.start_next_cycle()
    return answers


def _snapshot_request(out: Path, **changes: Any) -> bytes:
    request: dict[str, Any] = {
        "type": "fileSnapshot",
        "request": {"type": "l4Snapshots", "includeUsers": True, "includeTriggerOrders": False},
        "outPath": str(out),
        "includeHeightInOutput": True,
    }
    request.update(changes)
    return json.dumps(request).encode()


async def _snapshot(handle: SimHandle, out: Path) -> tuple[int, bytes]:
    status, answer = await _http(handle.info_port, _snapshot_request(out))
    assert status == 200, answer
    data = out.read_bytes()
    height, _ = iter_snapshot(data)
    assert answer["height"] == height
    return height, data


class _Checker:
    """Replays the files and checks hlbook's books against the simulator after every block."""

    def __init__(self, handle: SimHandle) -> None:
        self.handle = handle
        self.replay = NodeReplay(handle.node_data, handle.layout)
        self.checked = 0
        self.snapshots: dict[int, bytes] = {}
        self.partial_tails = 0
        self.diffs_ahead = 0

    def after_each(self, books: Books) -> None:
        for coin in self.handle.coins():
            assert books.coin_orders(coin) == self.handle.coin_orders_at(books.height, coin), (
                books.height,
                coin,
            )
        served = self.snapshots.get(books.height)
        if served is not None:
            result = compare(books, decode_snapshot(served)[1])
            assert result.matches, result.summary()
        self.checked += 1

    def poll(self) -> None:
        self.replay.poll(trio.current_time(), self.after_each)
        followers = self.replay.followers
        self.partial_tails += any(f.partial for f in followers.values())
        heights = {s: self.replay.joiner.stats().watermarks[s.value] for s in Stream}
        self.diffs_ahead += heights[Stream.DIFFS] > heights[Stream.STATUSES] >= 0

    async def bootstrap(self, out: Path) -> int:
        height, data = await _snapshot(self.handle, out)
        assert data == self.handle.snapshot_at(height)
        self.snapshots[height] = data
        self.replay.bootstrap(data, self.after_each)
        return height


async def test_by_block_files_rebuild_the_books_at_every_height(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = _config(tmp_path, blocks=40, start_time=BEFORE_MIDNIGHT)
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, config)
        assert handle.info_url == f"http://127.0.0.1:{handle.info_port}/info"
        assert all(handle.stream_dir(s).is_dir() for s in Stream)
        checker = _Checker(handle)
        await checker.bootstrap(tmp_path / "first.json")
        while not handle.done:
            await handle.wait_for_height(handle.height + 1)
            checker.poll()
            if handle.height % 10 == 0:
                height, data = await _snapshot(handle, tmp_path / f"at-{handle.height}.json")
                assert data == handle.snapshot_at(height)
                checker.snapshots[height] = data
        checker.poll()
        assert checker.replay.height == handle.height == config.start_height + 39
        assert not (checker.replay.gaps)
        assert not (checker.replay.divergences)
        assert not (checker.replay.malformed)
        assert checker.checked >= 30
        nursery.cancel_scope.cancel()
    for stream in Stream:
        # Rotation at midnight by the simulated clock: a new day, hour 0 (not "00").
        names = [f"{p.parent.name}/{p.name}" for p in hourly_files(handle.stream_dir(stream))]
        assert names == ["20260505/23", "20260506/0"]


async def test_streaming_with_partial_writes_and_diffs_ahead(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = _config(
        tmp_path,
        layout=Layout.STREAMING,
        partial_writes=True,
        diff_ahead=1,
        blocks=60,
        start_time=BEFORE_MIDNIGHT,
    )
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, config)
        checker = _Checker(handle)
        # Read first, then ask for a snapshot: the first streaming block seen may be partial.
        await handle.wait_for_height(config.start_height + 2)
        checker.poll()
        height = await checker.bootstrap(tmp_path / "first.json")
        assert height >= config.start_height + 2
        while not handle.done:
            # Poll several times per block, so that half-written lines are seen.
            await trio.sleep(config.block_interval / 5)
            checker.poll()
        await handle.wait_idle()
        await trio.sleep(1.0)  # every stream is quiet: the last block is complete
        checker.poll()
        assert checker.replay.height == handle.height == config.start_height + 59
        assert not (checker.replay.gaps)
        assert not (checker.replay.divergences)
        assert not (checker.replay.malformed)
        assert checker.checked >= 50
        assert checker.partial_tails > 0
        assert checker.diffs_ahead > 0
        nursery.cancel_scope.cancel()
    days = {p.parent.name for s in Stream for p in hourly_files(handle.stream_dir(s))}
    assert days == {"20260505", "20260506"}


async def test_a_snapshot_asked_mid_block_waits_for_the_block(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # No record_history: the handle still shows the written state, not the generated one.
    config = _config(
        tmp_path, partial_writes=True, diff_ahead=2, blocks_per_second=4.0, record_history=0
    )
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, config)
        await handle.wait_for_height(config.start_height + 3)
        await trio.sleep(0.05)  # mid-way: lines of the next blocks are partly written
        written, generated = handle.height, handle.generated_height
        assert generated > written
        coins = handle.coins()
        assert all(handle.coin_orders(c) == handle.coin_orders_at(written, c) for c in coins)
        assert any(handle.coin_orders(c) != handle.coin_orders_at(generated, c) for c in coins)
        expected = handle.snapshot_at(generated)
        # Answered once the blocks in flight are written, at their height, not before.
        height, data = await _snapshot(handle, tmp_path / "mid.json")
        assert height == generated
        assert data == expected
        nursery.cancel_scope.cancel()


async def test_pause_and_resume(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, _config(tmp_path))
        await handle.wait_for_height(handle.start_height + 5)
        handle.pause()
        height = await handle.wait_idle()
        sizes = {s: handle.current_file(s).stat().st_size for s in Stream}  # type: ignore[union-attr]
        await trio.sleep(10)
        assert handle.height == height
        assert sizes == {s: handle.current_file(s).stat().st_size for s in Stream}  # type: ignore[union-attr]
        # A quiet node still answers snapshots, at the height it stopped.
        assert (await _snapshot(handle, tmp_path / "quiet.json"))[0] == height
        handle.resume()
        await handle.wait_for_height(height + 3)
        handle.stop()


async def test_blocks_budget_then_quiet_but_serving(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = _config(tmp_path, blocks=5)
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, config)
        await handle.wait_done()
        await trio.sleep(5)
        assert handle.height == config.start_height + 4
        assert (await _snapshot(handle, tmp_path / "s.json"))[0] == handle.height
        stats = handle.stats()
        assert stats.blocks == 5
        assert stats.statuses > 0
        assert stats.bytes > 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("stream", "reason"),
    [(None, "blocks missing on every stream"), (Stream.DIFFS, "raw_book_diffs skipped it")],
)
async def test_a_skipped_block_is_a_gap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, stream: Stream | None, reason: str
) -> None:
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, _config(tmp_path))
        checker = _Checker(handle)
        await checker.bootstrap(tmp_path / "a.json")
        await handle.wait_for_height(handle.start_height + 3)
        handle.skip_block(stream)
        await handle.wait_for_height(handle.height + 3)
        checker.poll()
        assert len(handle.skipped) == 1
        skipped = handle.skipped[0][0]
        assert [(g.after, g.before) for g in checker.replay.gaps] == [(skipped - 1, skipped + 1)]
        assert reason in checker.replay.gaps[0].reason
        assert checker.replay.stalled
        # A fresh snapshot repairs it: the books follow the files again.
        height = await checker.bootstrap(tmp_path / "b.json")
        await handle.wait_for_height(height + 3)
        checker.poll()
        assert checker.replay.height == handle.height
        assert not checker.replay.stalled
        nursery.cancel_scope.cancel()


async def test_a_corrupt_line_is_reported_and_nothing_else_changes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, _config(tmp_path))
        checker = _Checker(handle)
        await checker.bootstrap(tmp_path / "a.json")
        handle.corrupt_next_line(Stream.STATUSES)
        await handle.wait_for_height(handle.height + 4)
        checker.poll()
        assert [e.stream for e in checker.replay.malformed] == ["order_statuses"]
        assert checker.replay.height == handle.height
        assert not checker.replay.gaps
        nursery.cancel_scope.cancel()


async def test_a_disagreeing_snapshot(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, _config(tmp_path))
        checker = _Checker(handle)
        await checker.bootstrap(tmp_path / "a.json")
        handle.pause()
        await handle.wait_idle()
        checker.poll()
        books = checker.replay.books
        assert books is not None
        assert books.height == handle.height
        handle.disagree_next_snapshot()
        for name, expected in (("bad.json", 1), ("good.json", 0)):
            height, data = await _snapshot(handle, tmp_path / name)
            assert height == books.height
            result = compare(books, decode_snapshot(data)[1])
            assert result.differences == expected, result.summary()
        assert [
            d.kind
            for d in compare(books, decode_snapshot((tmp_path / "bad.json").read_bytes())[1]).first
        ] == ["size"]
        nursery.cancel_scope.cancel()


async def test_info_server_refusals_are_a_nodes(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, _config(tmp_path, blocks=2))
        port = handle.info_port
        out = tmp_path / "x.json"
        parse, data = "Failed to parse the request body as JSON", "Failed to deserialize the JSON"
        bad_requests = [
            (b"GET", b"/info", b"", 405, "POST"),
            (b"POST", b"/other", b"{}", 404, "/other"),
            (b"POST", b"/info", b"{not json", 400, parse),
            (b"POST", b"/info", b"[1, 2]", 422, data),
            (b"POST", b"/info", b"{}", 422, "missing field `type`"),
            (b"POST", b"/info", b'{"type": 7}', 422, data),
            (b"POST", b"/info", b'{"type":"metaAndAssetCtxs"}', 422, "unknown variant"),
            (b"POST", b"/info", b'{"type":"openOrders"}', 422, "missing field `user`"),
            (b"POST", b"/info", b'{"type":"openOrders","user":"0x12"}', 422, "invalid address"),
            (b"POST", b"/info", b'{"type":"meta","dex":"nope"}', 422, "unknown perp dex"),
            (b"POST", b"/info", b'{"type":"meta","dex":3}', 422, "expected a string"),
            (b"POST", b"/info", _snapshot_request(out, request={"type": "l2Book"}), 422, data),
            (
                b"POST",
                b"/info",
                _snapshot_request(
                    out,
                    request={
                        "type": "l4Snapshots",
                        "includeUsers": True,
                        "includeTriggerOrders": True,
                    },
                ),
                422,
                "includeTriggerOrders",
            ),
            (b"POST", b"/info", _snapshot_request(Path("relative.json")), 422, "absolute"),
            (b"POST", b"/info", _snapshot_request(tmp_path / "missing" / "x.json"), 500, "missing"),
        ]
        for method, target, body, expected, text in bad_requests:
            status, answer = await _http(port, body, method=method, target=target)
            assert status == expected, (method, target, body, answer)
            assert text in answer, (body, answer)
        assert not out.exists()
        # Without "Content-Type: application/json" a node refuses the body whatever it is.
        [(status, answer)] = await _http_many(
            port, [(b"POST", b"/info", b'{"type":"meta"}')], content_type=False
        )
        assert (status, answer) == (415, "Expected request with `Content-Type: application/json`")
        # Keep-alive: several requests on one connection; a height-less snapshot too.
        answers = await _http_many(
            port,
            [
                (b"POST", b"/info", _snapshot_request(out, includeHeightInOutput=False)),
                (b"POST", b"/info", b'{"type":"spotMetaAndAssetCtxs"}'),
                (b"POST", b"/info", b'{"type":"meta"}'),
                (b"POST", b"/info", _snapshot_request(tmp_path / "y.json")),
            ],
        )
        assert [status for status, _ in answers] == [200, 422, 200, 200]
        height = answers[0][1]["height"]
        assert iter_snapshot(out.read_bytes(), height)[0] == height
        with pytest.raises(Exception, match="height"):
            iter_snapshot(out.read_bytes())
        counts = handle.info_requests()
        assert counts["node", "fileSnapshot"] == 6  # 3 refused, 1 failed, 2 written
        assert counts["node", "spotMetaAndAssetCtxs"] == 1
        nursery.cancel_scope.cancel()


async def test_info_server_survives_garbage_and_huge_requests(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, _config(tmp_path, blocks=1))
        for raw, expected in (
            (b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
            (
                b"POST /info HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n"
                + b" " * 100_000,
                b"HTTP/1.1 413 Request Entity Too Large",
            ),
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", handle.info_port)
            async with stream:
                await stream.send_all(raw)
                answer = b""
                while chunk := await stream.receive_some(65536):
                    answer += chunk  # the server answers, then hangs up
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(expected), head
            assert b"content-type: text/plain" in head.lower()
            assert body.strip()
        # Still serving.
        assert (await _snapshot(handle, tmp_path / "ok.json"))[0] >= handle.start_height - 1
        nursery.cancel_scope.cancel()


def _open_files_under(path: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_cancellation_closes_files_and_the_port(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, _config(tmp_path))
        await handle.wait_for_height(handle.start_height + 3)
        assert len(_open_files_under(tmp_path)) == 3
        nursery.cancel_scope.cancel()
    assert _open_files_under(tmp_path) == []
    with pytest.raises(OSError, match="onnect"):
        await trio.open_tcp_stream("127.0.0.1", handle.info_port)


async def test_stop_returns_and_runs_are_reproducible(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    contents = []
    for run in ("one", "two"):
        config = _config(tmp_path / run, blocks=15, record_history=0, seed=9)
        async with trio.open_nursery() as nursery:
            handle: SimHandle = await nursery.start(run_simulator, config)
            await handle.wait_done()
            handle.stop()
        assert handle.current_file(Stream.STATUSES) is None  # closed
        contents.append({s: hourly_files(handle.stream_dir(s))[-1].read_bytes() for s in Stream})
    assert contents[0] == contents[1]
    assert contents[0][Stream.STATUSES].count(b"\n") == 15


async def test_writing_into_old_files_is_logged(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            handle: SimHandle = await nursery.start(run_simulator, _config(tmp_path, blocks=2))
            await handle.wait_done()
            handle.stop()
    warnings = [r for r in caplog.records if "already holds node files" in r.getMessage()]
    assert len(warnings) == 1
