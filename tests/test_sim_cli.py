"""``hlbook simulate`` from the command line."""

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hlbook.cli import main
from hlbook.node.files import hourly_files
from hlbook.node.formats import Layout, Stream


def test_simulate_writes_the_blocks_and_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["simulate", "--node-data", str(tmp_path), "--blocks", "12", "--info-port", "0"]
    args += ["--blocks-per-second", "max", "--scale", "0.2", "--layout", "streaming"]
    args += ["--coins", "BTC,ETH", "@1", "--seed", "4", "--partial-writes", "--diff-ahead", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "info server: http://127.0.0.1:" in out
    assert str(tmp_path.resolve()) in out
    coins = set()
    heights = set()
    for stream in Stream:
        files = hourly_files(tmp_path / stream.dirname(Layout.STREAMING))
        assert [f"{f.parent.name}/{f.name}" for f in files] == ["20260505/17"]
        for line in files[0].read_bytes().splitlines():
            data = json.loads(line)
            heights.add(data["block_number"])
            for event in data["events"]:
                if stream is Stream.STATUSES:
                    coins.add(event["order"]["coin"])
    assert coins == {"BTC", "ETH", "@1"}
    assert heights == set(range(985_148_182, 985_148_182 + 12))


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--node-data",
        "--seed",
        "--layout",
        "--blocks-per-second",
        "--scale",
        "--coins",
        "--duration",
        "--blocks",
        "--info-port",
        "--fallback-port",
        "--partial-writes",
        "--diff-ahead",
        "--start-time",
        "--log-level",
    ):
        assert flag in text


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["simulate", "--node-data", str(tmp_path), "--info-port", "0"]
    assert main([*base, "--scale", "0", "--blocks", "1"]) == 2
    assert "scale must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--blocks", "1", "--duration", "1"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        main([*base, "--layout", "sideways"])
    assert main([*base, "--coins", "@0", "--blocks", "1"]) == 2
    assert "PURR/USDC" in capsys.readouterr().err


def test_a_taken_port_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["simulate", "--node-data", str(tmp_path), "--info-port", str(port), "--blocks", "1"]
        assert main(args) == 1


def test_simulate_with_a_fallback_server(tmp_path: Path) -> None:
    """A real process: both info servers answer, then SIGINT stops it cleanly."""
    args = [sys.executable, "-m", "hlbook", "simulate", "--node-data", str(tmp_path)]
    args += ["--info-port", "0", "--fallback-port", "0", "--scale", "0.05"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        urls = {}
        for line in process.stdout:
            name, _, url = line.partition(":")
            urls[name.strip()] = url.strip()
            if name == "node data":
                break
        assert set(urls) == {"info server", "fallback", "node data"}, urls
        assert urls["info server"] != urls["fallback"]
        spot = httpx.post(urls["info server"], json={"type": "spotMeta"}).json()
        assert [pair["name"] for pair in spot["universe"]] == ["PURR/USDC", "@1", "@107"]
        refused = httpx.post(urls["info server"], json={"type": "spotMetaAndAssetCtxs"})
        assert refused.status_code == 422
        answer = httpx.post(urls["fallback"], json={"type": "spotMetaAndAssetCtxs"}).json()
        assert answer[0] == spot
        assert [ctx["coin"] for ctx in answer[1]] == ["PURR/USDC", "@1", "@107"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
