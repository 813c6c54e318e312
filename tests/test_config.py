"""Settings from fields: flags, the TOML config file and HLBOOK_* variables (in-process)."""

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import attrs
import pytest

from hlbook.cli import build_parser, config_from_args, example_config, serve_options
from hlbook.config import (
    Config,
    ConfigError,
    Resolved,
    Source,
    options,
    render,
    resolve,
    setting,
)
from hlbook.runner import JsonFormatter, LogSettings

ROOT = Path(__file__).resolve().parent.parent
HOME = Path("~").expanduser()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def settings(
    argv: list[str], environ: dict[str, str] | None = None, command: str = "serve"
) -> Resolved:
    from hlbook.cli import settings_from_args

    args = build_parser().parse_args([command, *argv])
    return settings_from_args(args, environ or {})


# -- every field is a setting ------------------------------------------------------------


def test_every_config_field_is_a_flag_a_key_and_a_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fields = [field.name for field in attrs.fields(Config)]
    found = options(Config)
    assert [option.field for option in found] == fields
    keys = [option.key for option in serve_options()]
    assert len(set(keys)) == len(keys)
    assert len({option.env for option in serve_options()}) == len(keys)
    missing_help = [option.field for option in serve_options() if not option.help]
    assert not missing_help, f"give these fields metadata=setting('help...'): {missing_help}"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    for option in serve_options():
        assert option.flag in text
        assert option.env == "HLBOOK_" + option.key.upper().replace("-", "_")
    # Named otherwise on purpose: the established --client-queue, and repeatable flags
    # that take one value each time (--token T --token U, --allow-origin O).
    renamed = {
        "client_queue_messages": "client-queue",
        "tokens": "token",
        "allow_origins": "allow-origin",
    }
    for option in options(Config):
        assert option.key == renamed.get(option.field, option.field.replace("_", "-"))


def test_a_new_field_gets_its_flag_key_and_variable_without_more_code(tmp_path: Path) -> None:
    """What adding a field to Config does, shown on a class of its own."""
    from hlbook.cli import _add_settings

    @attrs.frozen(kw_only=True)
    class Extra:
        workers: int = attrs.field(
            default=1,
            validator=attrs.validators.ge(1),
            metadata=setting("processes on one port", metavar="N"),
        )
        allow_origin: tuple[str, ...] = attrs.field(
            default=(), metadata=setting("browser origins allowed")
        )
        tls_cert: Path | None = None  # no setting(): still a flag, in "more settings"
        max_connections_per_ip: int | None = attrs.field(
            default=None,
            validator=attrs.validators.optional(attrs.validators.gt(0)),
            metadata=setting("per address", metavar="N", default_text="no limit"),
        )

    opts = options(Extra)
    assert [(o.key, o.env, o.flag) for o in opts] == [
        ("workers", "HLBOOK_WORKERS", "--workers"),
        ("allow-origin", "HLBOOK_ALLOW_ORIGIN", "--allow-origin"),
        ("tls-cert", "HLBOOK_TLS_CERT", "--tls-cert"),
        ("max-connections-per-ip", "HLBOOK_MAX_CONNECTIONS_PER_IP", "--max-connections-per-ip"),
    ]
    parser = argparse.ArgumentParser()
    _add_settings(parser, opts, {})
    helptext = parser.format_help()
    assert "--workers N" in helptext
    assert "processes on one port (default: 1)" in helptext
    assert "more settings" in helptext
    assert "--max-connections-per-ip N" in helptext
    assert "per address (default: no limit)" in helptext
    args = parser.parse_args(["--allow-origin", "https://a.example", "--allow-origin", "b,c"])
    flags = {k.removeprefix("setting:"): v for k, v in vars(args).items() if k.startswith("s")}
    file = write(tmp_path / "x.toml", 'workers = 4\ntls-cert = "~/cert.pem"\n')
    resolved = resolve(opts, file=file, environ={"HLBOOK_WORKERS": "8"}, flags=flags)
    extra = resolved.build(Extra)
    assert extra == Extra(workers=8, allow_origin=("https://a.example", "b", "c"),
                          tls_cert=HOME / "cert.pem")  # fmt: skip
    assert (
        resolve(opts, environ={"HLBOOK_MAX_CONNECTIONS_PER_IP": "3"})
        .build(Extra)
        .max_connections_per_ip
        == 3
    )
    with pytest.raises(ConfigError, match=r"^--max-connections-per-ip: must be > 0: 0$"):
        resolve(opts, flags={"max-connections-per-ip": "0"})
    with pytest.raises(ConfigError, match=r"^environment variable HLBOOK_WORKERS: must be >= 1"):
        resolve(opts, environ={"HLBOOK_WORKERS": "0"}).build(Extra)


def test_a_field_of_a_type_with_no_text_form_is_refused_loudly() -> None:
    @attrs.frozen
    class Odd:
        callback: dict[str, int] = attrs.field(factory=dict)

    with pytest.raises(TypeError, match=r"Odd\.callback: type .* has no flag"):
        options(Odd)


# -- precedence --------------------------------------------------------------------------


def test_flags_beat_environment_beats_file_beats_defaults(tmp_path: Path) -> None:
    file = write(
        tmp_path / "hlbook.toml",
        'port = 9001\nmax-connections = 50\nidle-timeout = 5\nnode-data = "/data/file"\n'
        'coins = ["BTC", "@107"]\nlog-format = "json"\n',
    )
    environ = {
        "HLBOOK_PORT": "9002",
        "HLBOOK_MAX_CONNECTIONS": "60",
        "HLBOOK_STALE_AFTER": "7.5",
        "HLBOOK_FROM_START": "yes",
        "HLBOOK_LOG_LEVEL": "debug",
    }
    resolved = settings(["--config", str(file), "--port", "9003", "--no-from-start"], environ)
    config = resolved.build(Config)
    assert config.port == 9003
    assert config.max_connections == 60
    assert config.idle_timeout == 5.0
    assert config.stale_after == 7.5
    assert config.from_start is False
    assert config.node_data == Path("/data/file")
    assert config.coins == {"BTC", "@107"}
    assert config.validate_every == 60.0
    assert resolved.build(LogSettings) == LogSettings(log_level="debug", log_format="json")
    where = {key: source.describe() for key, source in resolved.sources.items()}
    assert where["port"] == "flag --port"
    assert where["from-start"] == "flag --no-from-start"  # as given
    assert where["max-connections"] == "env HLBOOK_MAX_CONNECTIONS"
    assert where["idle-timeout"] == f"file {file}"
    assert where["validate-every"] == "default"
    # HLBOOK_CONFIG names the file when --config does not
    assert settings([], {"HLBOOK_CONFIG": str(file)}).build(Config).port == 9001
    other = write(tmp_path / "other.toml", "port = 9009\n")
    assert settings(["--config", str(other)], {"HLBOOK_CONFIG": str(file)}).values["port"] == 9009


def test_config_from_args_keeps_working_with_overrides(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--port", "0"])
    config = config_from_args(args, {"HLBOOK_HOST": "0.0.0.0"}, node_data=tmp_path)
    assert (config.port, config.host, config.node_data) == (0, "0.0.0.0", tmp_path)


def test_demo_has_the_server_settings_and_its_own_default() -> None:
    resolved = settings([], {"HLBOOK_MAX_CONNECTIONS": "7", "HLBOOK_NODE_DATA": "/x"}, "demo")
    assert resolved.values["validate-every"] == 30.0
    assert resolved.values["max-connections"] == 7
    assert "node-data" not in resolved.values  # the simulator provides the node input
    assert resolved.build(Config).node_data == Config().node_data
    assert settings(["--validate-every", "5"], {}, "demo").values["validate-every"] == 5.0


# -- values ------------------------------------------------------------------------------


def test_lists_are_arrays_or_comma_strings_everywhere(tmp_path: Path) -> None:
    as_array = write(tmp_path / "a.toml", 'coins = ["BTC", "xyz:XYZ100"]\nmarkets = ["perp"]\n')
    as_string = write(tmp_path / "b.toml", 'coins = "BTC, xyz:XYZ100"\nmarkets = "perp"\n')
    want = (frozenset({"BTC", "xyz:XYZ100"}), frozenset({"perp"}))
    for file in (as_array, as_string):
        config = settings(["--config", str(file)]).build(Config)
        assert (config.coins, config.markets) == want
    config = settings([], {"HLBOOK_COINS": "BTC,xyz:XYZ100", "HLBOOK_MARKETS": "perp"}).build(
        Config
    )
    assert (config.coins, config.markets) == want
    config = settings(["--coins", "BTC", "--coins", "xyz:XYZ100,", "--markets", "perp"]).build(
        Config
    )
    assert (config.coins, config.markets) == want


def test_paths_are_expanded_from_every_source(tmp_path: Path) -> None:
    file = write(tmp_path / "c.toml", 'snapshot-file = "~/snap.json"\n')
    resolved = settings(
        ["--config", str(file), "--snapshot-path", "~/out.json"], {"HLBOOK_NODE_DATA": "~/nd"}
    )
    config = resolved.build(Config)
    assert config.node_data == HOME / "nd"
    assert config.snapshot_file == HOME / "snap.json"
    assert config.snapshot_path == HOME / "out.json"
    assert settings([]).values["node-data"] == HOME / "hl" / "data"  # the default too


def test_an_empty_string_unsets_an_optional_key_and_an_empty_variable_is_ignored(
    tmp_path: Path,
) -> None:
    file = write(tmp_path / "d.toml", 'fallback-info-url = "https://api.example/info"\n')
    resolved = settings(["--config", str(file)], {"HLBOOK_FALLBACK_INFO_URL": ""})
    assert resolved.values["fallback-info-url"] == "https://api.example/info"
    resolved = settings(["--config", str(file), "--fallback-info-url", ""])
    assert resolved.values["fallback-info-url"] is None
    file = write(tmp_path / "e.toml", 'snapshot-path = ""\n')
    assert settings(["--config", str(file)]).build(Config).snapshot_path is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('port = "8000"', "key 'port': expected an integer, got a string ('8000')"),
        ("port = 8000.0", "key 'port': expected an integer, got a number (8000.0)"),
        ("port = true", "key 'port': expected an integer, got a boolean (True)"),
        ("port = 70000", "key 'port': must be <= 65535: 70000"),
        ('idle-timeout = "1m"', "key 'idle-timeout': expected a number, got a string ('1m')"),
        ("idle-timeout = 0", "key 'idle-timeout': must be > 0: 0.0"),
        ('from-start = "yes"', "key 'from-start': expected true or false, got a string ('yes')"),
        ("host = 1", "key 'host': expected a string, got an integer (1)"),
        ("node-data = 1", "key 'node-data': expected a path (a string), got an integer (1)"),
        (
            'ingest = "sideways"',
            "key 'ingest': expected one of 'auto', 'by-block', 'streaming', got a string "
            "('sideways')",
        ),
        (
            "coins = [1, 2]",
            "key 'coins': expected an array of strings or a comma-separated string, "
            "got an array ([1, 2])",
        ),
        (
            'markets = "perp,options"',
            "key 'markets': unknown market(s) options; choose from perp, spot, hip3",
        ),
        ("compression-level = 10", "key 'compression-level': must be <= 9: 10"),
        ('log-level = "loud"', "key 'log-level': expected one of 'debug', 'info', 'warning',"),
        ("node_data = '/x'", "unknown key 'node_data' (did you mean 'node-data'?)"),
        ("max-conections = 5", "unknown key 'max-conections' (did you mean 'max-connections'?)"),
        ("colour = 'blue'", "unknown key 'colour'"),
        ("[server]\nport = 1", "unknown key 'server' (the config file has no tables"),
        ("port = ", "invalid TOML: Invalid value (at line 1, column 8)"),
    ],
)
def test_a_bad_file_names_the_file_and_the_key(tmp_path: Path, text: str, error: str) -> None:
    file = write(tmp_path / "bad.toml", text + "\n")
    with pytest.raises(ConfigError) as caught:
        settings(["--config", str(file)]).build(Config)
    message = str(caught.value)
    assert message.startswith(f"{file}: {error}"), message
    assert "\n" not in message


def test_a_bad_value_is_an_error_even_where_a_later_layer_replaces_it(tmp_path: Path) -> None:
    file = write(tmp_path / "g.toml", 'port = "8000"\n')
    with pytest.raises(ConfigError, match=r"g\.toml: key 'port': expected an integer"):
        settings(["--config", str(file), "--port", "0"])
    with pytest.raises(ConfigError, match=r"^environment variable HLBOOK_PORT: must be <= 65535"):
        settings(["--port", "0"], {"HLBOOK_PORT": "70000"})
    # demo ignores the node input of a shared file, but not a broken one
    file = write(tmp_path / "h.toml", 'node-data = "/srv/hl/data"\nport = 0\n')
    assert settings(["--config", str(file)], command="demo").values["port"] == 0
    file = write(tmp_path / "i.toml", "node-data = 5\n")
    with pytest.raises(ConfigError, match=r"key 'node-data': expected a path"):
        settings(["--config", str(file)], command="demo")
    file = write(tmp_path / "j.toml", "node_data = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'node_data' \(did you mean 'node-data'"):
        settings(["--config", str(file)], command="demo")


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cannot read config file .*nope\.toml: No such file"):
        settings(["--config", str(tmp_path / "nope.toml")])
    (tmp_path / "bin.toml").write_bytes(b"port = 1\xff\n")
    with pytest.raises(ConfigError, match=r"bin\.toml: not UTF-8 text$"):
        settings(["--config", str(tmp_path / "bin.toml")])


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("HLBOOK_PORT", "x", "expected an integer, got 'x'"),
        ("HLBOOK_PORT", "-1", "must be >= 0: -1"),
        ("HLBOOK_VALIDATE_EVERY", "soon", "expected a number, got 'soon'"),
        ("HLBOOK_FROM_START", "maybe", "expected true or false (or 1/0, yes/no, on/off)"),
        ("HLBOOK_INGEST", "x", "expected one of 'auto', 'by-block', 'streaming'"),
        ("HLBOOK_MARKETS", "perp,fx", "unknown market(s) fx"),
    ],
)
def test_a_bad_variable_names_the_variable(name: str, value: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings([], {name: value}).build(Config)
    assert str(caught.value).startswith(f"environment variable {name}: {error}")


def test_booleans_from_text() -> None:
    for text, value in [("1", True), ("true", True), ("ON", True), ("0", False), ("No", False)]:
        assert settings([], {"HLBOOK_FROM_START": text}).values["from-start"] is value


def test_a_near_miss_variable_is_a_warning_others_are_left_alone() -> None:
    resolved = settings([], {"HLBOOK_MAX_CONECTIONS": "5", "HLBOOK_NATS_SERVER": "/bin/x"})
    assert resolved.warnings == (
        "ignoring HLBOOK_MAX_CONECTIONS: no such setting (did you mean HLBOOK_MAX_CONNECTIONS?)",
    )


# -- printing ----------------------------------------------------------------------------


def test_print_config_is_toml_that_gives_the_same_settings(tmp_path: Path) -> None:
    file = write(tmp_path / "f.toml", 'coins = "BTC,@107"\nhost = "0.0.0.0"\nport = 0\n')
    resolved = settings(
        ["--config", str(file), "--fallback-info-url", 'http://x/"q"', "--validate-every", "inf"],
        {"HLBOOK_SNAPSHOT_PATH": "~/s.json"},
    )
    text = render(resolved, ["header"])
    again = write(tmp_path / "again.toml", text)
    assert tomllib.loads(text)["coins"] == ["@107", "BTC"]
    assert "# snapshot-file is unset" in text
    assert re.search(r'^host = "0\.0\.0\.0" +# file .*f\.toml$', text, re.M)
    assert re.search(r"^validate-every = inf +# flag --validate-every$", text, re.M)
    assert re.search(r"^snapshot-path = .* # env HLBOOK_SNAPSHOT_PATH$", text, re.M)
    assert re.search(r"^ingest = \"auto\" +# default$", text, re.M)
    reloaded = settings(["--config", str(again)])
    assert reloaded.build(Config) == resolved.build(Config)
    assert reloaded.build(LogSettings) == resolved.build(LogSettings)


def test_secrets_and_file_references_are_masked() -> None:
    @attrs.frozen(kw_only=True)
    class Access:
        token: tuple[str, ...] = attrs.field(default=(), metadata=setting("tokens", separator=None))
        nats_password: str | None = None
        client_secret: str = "s3cr3t-default"
        tls_key: str | None = None
        label: str = "plain"
        pinned: str = attrs.field(default="visible", metadata=setting("x", secret=True))
        coins: frozenset[str] = frozenset({"@107", "BTC"})

    opts = options(Access)
    resolved = resolve(
        opts,
        environ={"HLBOOK_NATS_PASSWORD": "hunter2", "HLBOOK_TLS_KEY": "@/etc/hlbook/key"},
        flags={"token": ["tok-one,with,commas", "tok-two"]},
    )
    assert resolved.build(Access).token == ("tok-one,with,commas", "tok-two")
    text = render(resolved)
    for secret in ("tok-one", "tok-two", "hunter2", "s3cr3t", "/etc/hlbook/key", "visible"):
        assert secret not in text
    data = tomllib.loads(text)
    assert data["token"] == ["********", "********"]
    assert data["nats-password"] == "********"
    assert data["tls-key"] == "********"
    assert data["label"] == "plain"
    assert data["coins"] == ["@107", "BTC"]  # spot coins are not file references
    assert re.search(r"^nats-password = .*# env HLBOOK_NATS_PASSWORD, masked$", text, re.M)
    assert [o.secret for o in opts] == [True, True, True, False, False, True, False]


def test_sources_describe_themselves() -> None:
    assert Source("default").describe() == "default"
    assert Source("file", "/etc/hlbook/hlbook.toml").describe() == "file /etc/hlbook/hlbook.toml"
    assert Source("env", "HLBOOK_PORT").describe() == "env HLBOOK_PORT"


# -- deploy/ -----------------------------------------------------------------------------


def test_the_example_config_is_current_and_every_key_is_at_its_default(tmp_path: Path) -> None:
    text = (ROOT / "deploy" / "hlbook.toml").read_text()
    assert text == example_config(), (
        "deploy/hlbook.toml is out of date; regenerate it with\n"
        "  python -c \"import hlbook.cli as c; print(c.example_config(), end='')\" "
        "> deploy/hlbook.toml"
    )
    assert tomllib.loads(text) == {}  # everything commented out
    lines = re.findall(r"^# ([a-z0-9-]+ = .*)$", text, re.M)
    keys = [line.split(" = ")[0] for line in lines]
    assert sorted(keys) == sorted(option.key for option in serve_options())
    uncommented = write(tmp_path / "all.toml", "\n".join(lines) + "\n")
    resolved = settings(["--config", str(uncommented)])
    assert resolved.build(Config) == settings([]).build(Config)
    assert resolved.build(LogSettings) == LogSettings()
    assert {source.kind for source in resolved.sources.values()} == {"file"}


def test_the_systemd_unit(tmp_path: Path) -> None:
    unit = (ROOT / "deploy" / "hlbook.service").read_text()
    service = dict(
        re.findall(r"^([A-Za-z]+)=(.*)$", unit.split("[Service]")[1].split("[Install]")[0], re.M)
    )
    assert service["ExecStart"].endswith("/hlbook serve --config /etc/hlbook/hlbook.toml")
    assert service["User"] == "hlbook"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert int(service["LimitNOFILE"]) >= 65536
    for key, value in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ]:
        assert service[key] == value, key
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    hlbook = Path(sys.executable).with_name("hlbook")
    local = write(tmp_path / "hlbook.service", unit.replace("/opt/hlbook/bin/hlbook", str(hlbook)))
    verify = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert str(local) not in verify.stdout + verify.stderr  # no unknown keys, no warnings
    security = subprocess.run(
        [analyze, "security", "--offline=true", str(local)],
        capture_output=True,
        text=True,
        check=False,
    )
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert exposure is not None, security.stdout + security.stderr
    assert float(exposure.group(1)) <= 2.0, security.stdout


# -- JSON logs ---------------------------------------------------------------------------


def test_json_log_records_carry_extra_fields_and_the_exception() -> None:
    import json

    formatter = JsonFormatter()
    record = logging.LogRecord("hlbook.x", logging.WARNING, "f.py", 1, "lag %d\nms", (5,), None)
    record.__dict__.update({"height": 985148182, "path": Path("/p"), "level": "clash"})
    entry = json.loads(formatter.format(record))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert entry["level"] == "warning"
    assert entry["logger"] == "hlbook.x"
    assert entry["message"] == "lag 5\nms"
    assert entry["height"] == 985148182
    assert entry["path"] == "/p"
    assert entry["extra_level"] == "clash"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("hlbook", logging.ERROR, "f.py", 1, "failed", (), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exception"].startswith("Traceback")
    assert "RuntimeError: boom" in entry["exception"]


# -- Config built by embedding code ---------------------------------------------------------


def test_a_string_for_a_list_setting_is_its_comma_list_and_a_token_is_one_token() -> None:
    # tuple("secret") made every letter a valid token, frozenset("BTC") three coins.
    config = Config(
        tokens="se,cret",
        coins="BTC, ETH",
        markets="perp",
        allow_origins="https://a.example",
        publish="nats://h:4222",
    )
    assert config.tokens == ("se,cret",)
    assert config.coins == {"BTC", "ETH"}
    assert config.markets == {"perp"}
    assert config.allow_origins == ("https://a.example",)
    assert config.publish == ("nats://h:4222",)
    assert Config(tokens=["a", "b"], coins=["BTC"]).tokens == ("a", "b")


def test_a_history_path_may_be_a_path(tmp_path: Path) -> None:
    assert Config(history=tmp_path / "h.sqlite").history_path == tmp_path / "h.sqlite"


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"port": "8000"}, "'port' must be an integer, not '8000'"),
        ({"port": 1.5}, "'port' must be an integer, not 1.5"),
        ({"port": True}, "'port' must be an integer, not True"),
        ({"validate_every": "x"}, "'validate_every' must be a number, not 'x'"),
        ({"from_start": "yes"}, "'from_start' must be True or False, not 'yes'"),
        ({"coins": ["BTC", 1]}, "'coins' must be strings, not 1"),
        ({"ingest": "sideways"}, "'ingest' must be one of 'auto', 'by-block', 'streaming'"),
        ({"info_url": "not a url"}, "'info_url' must be an http:// or https:// URL"),
        ({"fallback_info_url": "ftp://x/info"}, "'fallback_info_url' must be an http://"),
        ({"max_connections_per_ip": "3"}, "'max_connections_per_ip' must be an integer"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_setting(
    settings: dict[str, object], error: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=re.escape(error)):
        Config(**settings)  # type: ignore[arg-type]


def test_numbers_and_optional_values_of_the_right_type_pass() -> None:
    config = Config(validate_every=5, stale_after=2.5, max_connections_per_ip=None)
    assert config.validate_every == 5
    assert Config(fallback_info_url="https://api.hyperliquid.xyz/info").fallback_info_url
