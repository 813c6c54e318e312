"""The pieces that wire the relay into hlbook: the source's ``prev`` link, the snapshot
capture, the settings, and the ``relay`` and ``demo --relay`` commands."""

import json
import re
import signal
from pathlib import Path

import httpx
import msgspec
import pytest
import trio
from fixtures import block, new, remove, status, update
from test_cli import hlbook_process

from hlbook.book.books import Books
from hlbook.cli import build_parser, config_from_args, main
from hlbook.config import Config
from hlbook.node.formats import encode_snapshot
from hlbook.shell.publish import capture_books, encode_captured, nats_options, stream_settings
from hlbook.source import OrderedBlocks

H = 1000


def test_prev_decides_over_heights() -> None:
    """Streaming layout: heights skip empty blocks; ``prev`` says what came before."""
    source = OrderedBlocks()
    source.release(H)
    first = source.block(block(H + 3), prev=H)
    assert [type(item).__name__ for item in first] == ["Block"]
    assert [type(item).__name__ for item in source.block(block(H + 4))] == ["Block"]
    gap = source.block(block(H + 9), prev=H + 7)
    assert [type(item).__name__ for item in gap] == ["Gap", "Block"]


def _books() -> Books:
    books = Books(H)
    books.apply(
        block(
            H + 1,
            statuses=[status(1), status(2), status(3, side="A")],
            diffs=[new(1, px="100.0"), new(2, px="100.0"), new(3, px="101.0", side="A")],
        )
    )
    return books


def test_a_captured_snapshot_is_the_books_as_they_were_when_captured() -> None:
    books = _books()
    expected = encode_snapshot(books.height, books.snapshot())
    captured = capture_books(books)
    # The books move on before the thread encodes: an order's size changes in place,
    # another is removed, a new one arrives.
    before = books.order(1)
    assert before is not None
    books.apply(
        block(
            H + 2,
            diffs=[update(1, "1.0", "0.5"), remove(2, px="100.0"), new(4, px="99.0")],
        )
    )
    after = books.order(1)
    assert after is not None
    assert after.sz != before.sz
    data = encode_captured(H + 1, captured)
    assert data == expected
    again = Books.load(data)
    assert again.height == H + 1
    oids = [o.oid for coin in again.coins() for side in again.coin_orders(coin) for o in side]
    assert sorted(oids) == [1, 2, 3]


def test_nats_settings_are_checked_and_become_connection_options(tmp_path: Path) -> None:
    config = Config(
        publish=("nats://a:4222,nats://b:4222",),
        nats_user="u",
        nats_password="p",
        nats_tls_ca=tmp_path / "ca.pem",
    )
    options = nats_options(config, config.publish)
    assert options.servers == ("nats://a:4222", "nats://b:4222")
    assert options.user == "u"
    assert options.uses_tls
    for bad in (
        {"publish": ("http://x",)},
        {"publish": ("nats://a",), "source": ("nats://b",)},
        {"nats_password": "p"},
        {"nats_tls_cert": tmp_path / "c.pem"},
    ):
        with pytest.raises(ValueError, match=r"NATS|source|nats"):
            Config(**bad)


def test_stream_retention_flags_become_stream_settings() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--publish",
            "nats://a:4222",
            "--publish-max-age",
            "600",
            "--publish-max-bytes",
            "1000000",
            "--publish-replicas",
            "3",
        ]
    )
    config = config_from_args(args, {})
    assert config.publish_early_diffs
    settings = stream_settings(config)
    assert (settings.max_age, settings.max_bytes, settings.replicas) == (600.0, 1_000_000, 3)
    assert settings.duplicate_window == 300.0
    # A retention shorter than the de-duplication window caps the window.
    assert stream_settings(Config(publish_max_age=60)).duplicate_window == 60.0
    for bad in ({"publish_replicas": 0}, {"publish_replicas": 6}, {"publish_max_age": 0}):
        with pytest.raises(ValueError, match="publish"):
            Config(**bad)  # type: ignore[arg-type]
    args = build_parser().parse_args(["serve", "--no-publish-early-diffs"])
    assert not config_from_args(args, {}).publish_early_diffs
    # A relay publishes nothing: no such flags.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["relay", "--source", "nats://a", "--publish-replicas", "3"])


def test_relay_needs_a_source_and_has_no_node_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["relay"]) == 2
    assert "--source" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["relay", "--help"])
    text = capsys.readouterr().out
    assert "--source" in text
    assert "--node-data" not in text
    assert "--publish-buffer" not in text
    with pytest.raises(SystemExit) as exited:
        main(["relay", "--source", "nats://x:1", "--node-data", "/x"])
    assert exited.value.code == 2


@pytest.mark.slow
async def test_demo_relay_prints_a_relay_that_serves_the_same_books() -> None:
    async with hlbook_process("demo", "--relay", "--port", "0", "--scale", "0.05") as proc:
        assert proc.process.stdout is not None
        stdout = b""
        with trio.fail_after(90):
            while b"Ctrl-C stops it" not in stdout:
                stdout += await proc.process.stdout.receive_some(4096)
        primary = re.search(rb"HTTP API:\s+(http://\S+)", stdout)
        relay = re.search(rb"relay:\s+(http://[^\s/]+) ", stdout)  # a base_url: no "/"
        assert primary is not None
        assert relay is not None
        async with httpx.AsyncClient(timeout=10) as client:
            health = (await client.get(relay.group(1).decode() + "/health")).json()
            assert health["status"] == "live"
            assert health["relay"]["connected"] is True
            body = {"type": "l2Book", "coin": "BTC"}
            with trio.fail_after(20):
                while True:  # the same book at the same height, sooner or later
                    mine = await client.post(primary.group(1).decode() + "/info", json=body)
                    theirs = await client.post(relay.group(1).decode() + "/info", json=body)
                    if mine.json() == theirs.json():
                        break
                    await trio.sleep(0.05)
        assert json.loads(msgspec.json.encode(health))["relay"]["gaps"] == 0
        status = await proc.stop(signal.SIGINT)
        assert status == 0, "\n".join(proc.lines[-40:])  # what it logged on the way out


def test_a_relay_keeps_its_history_in_memory_unless_told_where(tmp_path: Path) -> None:
    relay = Config(source=("nats://a:4222",))
    assert relay.history_path is None  # no ~/hl/data on a relay's machine
    kept = Config(source=("nats://a:4222",), history=str(tmp_path / "h.sqlite"))
    assert kept.history_path == tmp_path / "h.sqlite"
    primary = Config(node_data=tmp_path)
    assert primary.history_path == primary.snapshot_out.with_name("hlbook_history.sqlite")


@pytest.mark.slow
async def test_a_retention_shorter_than_two_snapshot_intervals_is_warned_of(
    tmp_path: Path,
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]  # no NATS there: the warning comes first anyway
    async with hlbook_process(
        "serve", "--node-data", str(tmp_path), "--port", "0",
        "--publish", f"nats://127.0.0.1:{dead}", "--publish-max-age", "60",
    ) as proc:  # fmt: skip
        warned = await proc.wait_for(r"--publish-max-age 60 s is under twice")
        assert "--publish-snapshot-every 60 s" in warned.string
        assert await proc.stop(signal.SIGTERM) == 0
