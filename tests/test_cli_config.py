"""``hlbook`` as a real process: --config, HLBOOK_* variables, --print-config, --log-format."""

import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

pytestmark = pytest.mark.slow


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment without HLBOOK_* settings, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HLBOOK_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env


def hlbook(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hlbook", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env if env is not None else clean_env(),
    )


def sources(printed: str) -> dict[str, str]:
    """``key -> where it came from`` from --print-config's comments."""
    found = {}
    for line in printed.splitlines():
        if match := re.fullmatch(r"(?:# )?([a-z0-9-]+) (?:= .*?|is unset) +# (.+)", line):
            found[match.group(1)] = match.group(2)
    return found


def test_print_config_shows_flags_over_environment_over_file(tmp_path: Path) -> None:
    config = tmp_path / "hlbook.toml"
    config.write_text(
        'node-data = "~/node/data"\n'
        "port = 9001\n"
        "max-connections = 50\n"
        "idle-timeout = 5\n"
        'coins = ["BTC", "ETH"]\n'
        'log-format = "json"\n'
    )
    env = clean_env(
        HLBOOK_PORT="9002",
        HLBOOK_MAX_CONNECTIONS="60",
        HLBOOK_MARKETS="perp,spot",
        HLBOOK_COMPRESSION_LEVEL="6",
    )
    done = hlbook(
        "serve", "--config", str(config), "--port", "9003", "--coins", "SOL,@107",
        "--print-config", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    values = tomllib.loads(done.stdout)
    assert values["port"] == 9003
    assert values["max-connections"] == 60
    assert values["idle-timeout"] == 5.0
    assert values["coins"] == ["@107", "SOL"]
    assert values["markets"] == ["perp", "spot"]
    assert values["compression-level"] == 6
    assert values["node-data"] == str(Path("~").expanduser() / "node" / "data")
    assert values["validate-every"] == 60.0
    assert values["log-format"] == "json"
    assert "snapshot-path" not in values  # unset: a comment
    where = sources(done.stdout)
    assert where["port"] == "flag --port"
    assert where["coins"] == "flag --coins"
    assert where["max-connections"] == "env HLBOOK_MAX_CONNECTIONS"
    assert where["markets"] == "env HLBOOK_MARKETS"
    assert where["idle-timeout"] == f"file {config}"
    assert where["log-format"] == f"file {config}"
    assert where["validate-every"] == "default"
    assert where["snapshot-path"] == "default"
    assert f"# config file: {config}" in done.stdout
    # the printed settings are a config file that gives the same settings
    again = tmp_path / "again.toml"
    again.write_text(done.stdout)
    replay = hlbook("serve", "--config", str(again), "--print-config")
    assert replay.returncode == 0, replay.stderr
    assert tomllib.loads(replay.stdout) == values
    assert {sources(replay.stdout)[key] for key in values} == {f"file {again}"}


def test_hlbook_config_variable_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "from-env.toml"
    config.write_text("max-subscriptions = 12\n")
    done = hlbook("serve", "--print-config", env=clean_env(HLBOOK_CONFIG=str(config)))
    assert done.returncode == 0, done.stderr
    assert tomllib.loads(done.stdout)["max-subscriptions"] == 12
    assert sources(done.stdout)["max-subscriptions"] == f"file {config}"


def test_settings_that_go_together_are_accepted_together_wherever_they_come_from(
    tmp_path: Path,
) -> None:
    """``--nats-password`` needs ``--nats-user`` and a client certificate needs its key:
    each pair is judged as a pair, from flags, the environment, a file or a mix."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    config = tmp_path / "nats.toml"
    config.write_text(f'nats-user = "relay"\nnats-tls-key = "{key}"\n')
    ways = [
        (["--nats-user", "u", "--nats-password", "p", "--nats-tls-cert", str(cert),
          "--nats-tls-key", str(key)], {}),
        ([], {"HLBOOK_NATS_USER": "u", "HLBOOK_NATS_PASSWORD": "p",
              "HLBOOK_NATS_TLS_CERT": str(cert), "HLBOOK_NATS_TLS_KEY": str(key)}),
        (["--config", str(config), "--nats-tls-cert", str(cert)],
         {"HLBOOK_NATS_PASSWORD": "p"}),
    ]  # fmt: skip
    for command in ("serve", "relay"):
        for flags, variables in ways:
            extra = ["--source", "nats://127.0.0.1:4222"] if command == "relay" else []
            done = hlbook(command, *extra, *flags, "--print-config", env=clean_env(**variables))
            assert done.returncode == 0, (command, flags, done.stderr)
            printed = tomllib.loads(done.stdout)
            assert printed["nats-user"] in ("u", "relay")
            assert printed["nats-password"] == "********"
            assert (printed["nats-tls-cert"], printed["nats-tls-key"]) == (str(cert), str(key))
    # Half a pair is still one line and exit 2, naming what is missing.
    for flags, error in (
        (["--nats-password", "p"], "--nats-password needs --nats-user"),
        (["--nats-tls-cert", str(cert)], "--nats-tls-cert and --nats-tls-key go together"),
        (["--tls-key", str(key)], "--tls-cert and --tls-key go together"),  # was exit 1
    ):
        done = hlbook("serve", *flags, "--print-config")
        assert done.returncode == 2
        assert done.stderr.splitlines() == [f"hlbook serve: {error}"]


@pytest.mark.parametrize(
    ("text", "variables", "error"),
    [
        ("max_connections = 5\n", {}, "{file}: unknown key 'max_connections' (did you mean"),
        ("[server]\nport = 1\n", {}, "{file}: unknown key 'server'"),
        ('port = "8000"\n', {}, "{file}: key 'port': expected an integer, got a string ('8000')"),
        ("validate-every = -1\n", {}, "{file}: key 'validate-every': must be >= 0: -1.0"),
        ("port = 1\n", {"HLBOOK_PORT": "http"}, "environment variable HLBOOK_PORT: expected an"),
        ("port = = 1\n", {}, "{file}: invalid TOML:"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path, text: str, variables: dict[str, str], error: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    for extra in ([], ["--print-config"]):
        done = hlbook(
            "serve", "--config", str(config), "--node-data", str(tmp_path), "--port", "0",
            *extra, env=clean_env(**variables),
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("hlbook serve: " + error.format(file=config)), lines[0]
    done = hlbook("serve", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"hlbook serve: cannot read config file {tmp_path / 'missing.toml'}: "
        "No such file or directory"
    ]


def test_simulate_and_demo_take_log_format_and_settings(tmp_path: Path) -> None:
    done = hlbook(
        "simulate", "--node-data", str(tmp_path / "data"), "--blocks", "3",
        "--blocks-per-second", "max", "--info-port", "0", "--log-format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert entries
    assert {entry["logger"] for entry in entries} >= {"hlbook.sim.run"}
    done = hlbook("demo", "--print-config", env=clean_env(HLBOOK_MAX_CONNECTIONS="7"))
    assert done.returncode == 0, done.stderr
    values = tomllib.loads(done.stdout)
    assert values["validate-every"] == 30.0
    assert values["max-connections"] == 7
    assert "node-data" not in done.stdout


class JsonLines:
    """A process's stderr, each line parsed as JSON (which fails the test if it is not)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.entries: list[dict[str, object]] = []
        self.buffer = b""

    async def until(self, text: str) -> dict[str, object]:
        """The first entry whose message contains ``text``, reading on until there is one."""
        with trio.fail_after(60):
            while True:
                for entry in self.entries:
                    if text in str(entry["message"]):
                        return entry
                chunk = await self.stream.receive_some(65536)
                assert chunk, f"stderr ended before {text!r}: {self.entries}"
                self.add(chunk)

    def add(self, chunk: bytes | bytearray) -> None:
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        self.entries += [json.loads(line) for line in lines]

    async def to_end(self) -> None:
        while chunk := await self.stream.receive_some(65536):
            self.add(chunk)
        assert self.buffer == b""


async def test_json_logs_from_the_config_file_and_sigterm_exits_zero(tmp_path: Path) -> None:
    from hlbook.sim import SimConfig, run_simulator

    async with trio.open_nursery() as nursery:
        sim = await nursery.start(
            run_simulator, SimConfig(node_data=tmp_path / "data", info_port=0, scale=0.05)
        )
        config = tmp_path / "hlbook.toml"
        config.write_text(
            f'node-data = "{tmp_path / "data"}"\n'
            f'info-url = "{sim.info_url}"\n'
            f'snapshot-path = "{tmp_path / "snap.json"}"\n'
            'log-format = "json"\n'
            "port = 8\n"  # the environment's port wins
        )
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "hlbook", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(HLBOOK_PORT="0", HLBOOK_LOG_LEVEL="debug"),
        )
        try:
            assert process.stderr is not None
            logs = JsonLines(process.stderr)
            serving = await logs.until("serving ws://")
            url, http_url = str(serving["url"]), str(serving["http_url"])  # passed with extra=
            assert url.startswith("ws://127.0.0.1:")
            await logs.until("books loaded")
            async with httpx.AsyncClient() as client:
                assert (await client.get(http_url + "/health")).json()["status"] == "live"
            async with open_websocket_url(url):
                connected = await logs.until("connected from")  # a debug line
            assert connected["level"] == "debug"
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                await logs.to_end()
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert any(e["message"] == "received SIGTERM, shutting down" for e in logs.entries)
        for entry in logs.entries:
            assert set(entry) >= {"time", "level", "logger", "message"}, entry
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(entry["time"]))
        nursery.cancel_scope.cancel()


def test_a_bad_flag_is_one_line_naming_the_command() -> None:
    for argv, line in (
        (["serve", "--bogus"], "hlbook serve: unrecognized arguments: --bogus"),
        (["relay", "--source", "nats://a:1", "--bogus"], "hlbook relay: unrecognized arguments"),
        (["serve", "--port"], "hlbook serve: argument --port: expected one argument"),
        (["nope"], "hlbook: argument COMMAND: invalid choice: 'nope'"),
        # the misspelt flag first: it may be the missing one
        (["simulate", "--nodedata", "d"], "hlbook simulate: unrecognized arguments: --nodedata"),
        (["simulate"], "hlbook simulate: the following arguments are required: --node-data"),
    ):
        done = hlbook(*argv)
        assert done.returncode == 2, argv
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(line), lines[0]
        assert lines[0].endswith("--help)"), lines[0]  # where the flags are listed


def test_print_config_warns_of_a_misspelt_variable() -> None:
    done = hlbook("serve", "--print-config", env=clean_env(HLBOOK_MAX_CONECTIONS="5"))
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "hlbook serve: warning: ignoring HLBOOK_MAX_CONECTIONS: no such setting"
        " (did you mean HLBOOK_MAX_CONNECTIONS?)"
    ]
    assert tomllib.loads(done.stdout)["max-connections"] == 1000


def test_print_config_names_the_flag_as_given() -> None:
    done = hlbook("serve", "--no-from-start", "--no-publish-early-diffs", "--print-config")
    assert done.returncode == 0, done.stderr
    assert sources(done.stdout)["from-start"] == "flag --no-from-start"
    assert sources(done.stdout)["publish-early-diffs"] == "flag --no-publish-early-diffs"
    done = hlbook("serve", "--from-start", "--print-config")
    assert sources(done.stdout)["from-start"] == "flag --from-start"
