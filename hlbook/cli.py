"""The ``hlbook`` command line: ``serve``, ``relay``, ``simulate`` and ``demo``.

Only this module (through :mod:`hlbook.runner`) runs Trio, handles signals
and configures logging. ``main(argv)`` returns the exit status so tests can
call it directly.
"""

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import quote

import attrs
import trio

from hlbook.app import ServerHandle, serve
from hlbook.config import (
    NODE,
    Config,
    ConfigError,
    Option,
    Resolved,
    options,
    render,
    render_example,
    resolve,
)
from hlbook.listen import load_tokens
from hlbook.runner import LogSettings, configure_logging, freeze_gc_when_ready, run
from hlbook.shell.publish import nats_options
from hlbook.workers import HEARTBEAT_TIMEOUT, WORKERS, Slot, WorkerSettings, worker_count

if TYPE_CHECKING:
    from hlbook.sim import SimConfig

__all__ = [
    "build_parser",
    "config_from_args",
    "example_config",
    "main",
    "serve_options",
    "settings_from_args",
]

log = logging.getLogger("hlbook")

_DEST = "setting:"
"""Prefix of the argparse destinations of generated flags (by key), so that only
flags actually given appear in the namespace (their default is SUPPRESS)."""

DEMO_DEFAULTS: Mapping[str, object] = {"validate-every": 30.0}
"""The demo checks against the simulator's snapshots more often."""

PRECEDENCE = (
    "Every flag is also a key of the --config file (TOML: the flag's name without the "
    'dashes, e.g. node-data = "/var/lib/hl/data", lists as arrays or comma strings) and '
    "an environment variable HLBOOK_<FLAG> (HLBOOK_NODE_DATA, HLBOOK_MAX_CONNECTIONS). "
    "Precedence: flags > environment > file > defaults; --print-config shows the result."
)


def serve_options() -> tuple[Option, ...]:
    """Every setting of ``hlbook serve``: :class:`Config`'s fields, logging's, then the
    number of processes."""
    return options(Config) + options(LogSettings) + options(WorkerSettings)


def _demo_options() -> tuple[Option, ...]:
    """The server settings of ``hlbook demo``: the simulator stands in for the node."""
    return tuple(
        option
        for option in serve_options()
        if (option.group != NODE or option.field == "validate_every") and option.group != WORKERS
    )


_RELAY_FROM_NODE = {"info_url", "fallback_info_url", "info_timeout", "stale_after"}
"""Node-input settings a relay keeps: where to pass on info types it cannot answer."""
_PUBLISH_ONLY = {
    "publish",
    "publish_snapshot_every",
    "publish_buffer",
    "publish_early_diffs",
    "publish_max_age",
    "publish_max_bytes",
    "publish_replicas",
}


_RELAY_HELP = {
    "info_url": ("an info server to pass the info types hlbook does not answer itself", None),
    "source": ("the NATS JetStream server to serve from (what a primary's --publish writes)", ""),
    "history": (
        "the history store (fills, trades, candles, finished orders) recorded from the blocks "
        "relayed, as an SQLite file; none keeps a bounded window in memory only",
        "none: nothing on disk",
    ),
}
"""How a relay's ``--help`` words the settings whose meaning differs there
(help, default shown; ``""``: no default, the setting is required)."""


def _relay_options() -> tuple[Option, ...]:
    """The settings of ``hlbook relay``: serve's, without the node's files or publishing."""
    return tuple(
        _relay_worded(option)
        for option in serve_options()
        if (option.group != NODE or option.field in _RELAY_FROM_NODE)
        and option.field not in _PUBLISH_ONLY
        and option.group != WORKERS  # one process: run several relays instead
    )


def _relay_worded(option: Option) -> Option:
    if option.field not in _RELAY_HELP:
        return option
    text, default = _RELAY_HELP[option.field]
    if default == "":
        text += "; required"
    return attrs.evolve(
        option, setting=attrs.evolve(option.setting, help=text, default_text=default)
    )


def _shown_default(option: Option, default: object) -> str | None:
    if option.setting.default_text is not None:
        return option.setting.default_text or None
    if default is None or isinstance(default, bool):
        return None
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, frozenset | set):
        return ",".join(sorted(default)) or "none"
    if isinstance(default, list | tuple):
        return ",".join(map(str, default)) or "none"
    return str(default)


def _add_settings(
    parser: argparse.ArgumentParser,
    settings: Sequence[Option],
    defaults: Mapping[str, object],
) -> None:
    """A flag for every setting (whose ``setting(flag=...)`` is not False), by group."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in settings:
        if not option.setting.flag:
            continue
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        text = option.help
        shown = _shown_default(option, defaults.get(option.key, option.default))
        if shown is not None:
            text += f" (default: {shown})"
        kwargs: dict[str, object] = {
            "dest": _DEST + option.key,
            "default": argparse.SUPPRESS,
            "help": text.replace("%", "%%"),
        }
        if option.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if option.choices:
                kwargs["choices"] = option.choices
            kwargs["metavar"] = option.setting.metavar or (
                None if option.choices else option.key.upper().replace("-", "_")
            )
            if option.is_list:
                kwargs["action"] = "append"  # --coins A,B --coins C: A, B and C
        groups[option.group].add_argument(option.flag, **kwargs)  # type: ignore[arg-type]
    config = parser.add_argument_group("configuration", PRECEDENCE)
    config.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read settings from this TOML file (default: $HLBOOK_CONFIG, else none)",
    )
    config.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings as TOML, with where each came from "
        "(secrets masked), and exit",
    )


def settings_from_args(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """The settings of the command ``args`` were parsed for: its flags, the environment
    (default ``os.environ``) and the ``--config`` file (or ``$HLBOOK_CONFIG``)."""
    environ = os.environ if environ is None else environ
    settings: tuple[Option, ...] = args.settings
    flags = {
        name.removeprefix(_DEST): value
        for name, value in vars(args).items()
        if name.startswith(_DEST)
    }
    file = args.config
    if file is None and environ.get("HLBOOK_CONFIG"):
        file = Path(environ["HLBOOK_CONFIG"])
    return resolve(
        settings,
        file=file.expanduser() if file is not None else None,
        environ=environ,
        flags=flags,
        defaults=args.setting_defaults,
        known=serve_options(),
    )


def config_from_args(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    **overrides: object,
) -> Config:
    """The :class:`Config` for parsed flags, the environment and the config file.

    ``overrides`` (by field name) win over everything. Raises
    :class:`~hlbook.config.ConfigError` (a ``ValueError``) naming the bad key.
    """
    return settings_from_args(args, environ).build(Config, **overrides)


def _print_config(command: str, settings: Resolved) -> None:
    header = [
        f"hlbook {command}: the effective settings, each with where it came from",
        "(flags > environment > file > defaults); secrets are masked.",
        f"config file: {settings.file if settings.file is not None else 'none'}",
        *(f"warning: {warning}" for warning in settings.warnings),
    ]
    sys.stdout.write(render(settings, header))


def _start(command: str, args: argparse.Namespace) -> Resolved | int:
    """Resolve the settings and configure logging; an exit status if there is no more to do."""
    try:
        settings = settings_from_args(args)
        logs = settings.build(LogSettings)
        settings.build(Config)  # refuse bad settings before starting anything
    except ConfigError as exc:
        print(f"hlbook {command}: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        for warning in settings.warnings:  # no logging here: stderr, beside the printout
            print(f"hlbook {command}: warning: {warning}", file=sys.stderr)
        _print_config(command, settings)
        return 0
    configure_logging(logs.log_level, logs.log_format)
    for warning in settings.warnings:
        log.warning("%s", warning)
    return settings


def example_config() -> str:
    """``deploy/hlbook.toml``: every key of ``hlbook serve`` at its default, commented.

    Regenerate the file after adding a setting (tests/test_config.py checks it)::

        python -c "import hlbook.cli as c; print(c.example_config(), end='')" > deploy/hlbook.toml
    """
    header = [
        "hlbook serve --config /etc/hlbook/hlbook.toml",
        "",
        "Every key is a flag of `hlbook serve` without its dashes, and an environment",
        "variable HLBOOK_<KEY> (dashes as underscores). Precedence: flags > environment >",
        "this file > defaults; `hlbook serve --config FILE --print-config` shows the result.",
        "Each key below is commented out at its default: uncomment and change what you need",
        '(at least node-data). A key shown as "" is unset ("" unsets an optional key).',
        "Paths may start with ~; relative ones are relative to the working directory, so",
        "prefer absolute paths. Lists are arrays or comma-separated strings. An unknown key",
        "or a value of the wrong type stops hlbook with one line on stderr and exit status 2.",
    ]
    return render_example(serve_options(), header)


async def _serve_announced(config: Config, verb: str, where: str) -> None:
    """Serve ``config`` until cancelled: log "``verb`` URL (``where``)" once it listens, then
    freeze the garbage collector once the books are ready (:func:`.freeze_gc_when_ready`)."""
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(serve, config)
        log.info(
            "%s %s (%s)",
            verb,
            handle.url,
            where,
            extra={"url": handle.url, "http_url": handle.http_url},
        )
        await freeze_gc_when_ready(handle)


def _run_serve(args: argparse.Namespace) -> int:
    settings = _start("serve", args)
    if isinstance(settings, int):
        return settings
    config = settings.build(Config)
    if args.worker is not None:
        from hlbook.shell.workers import run_worker

        return run(lambda: run_worker(config, args.worker))
    workers = worker_count(settings.build(WorkerSettings).workers)
    if workers > 1:
        from hlbook.shell.workers import supervise

        timeout = args.worker_heartbeat_timeout
        return run(lambda: supervise(args.argv, config, workers, heartbeat_timeout=timeout))

    return run(lambda: _serve_announced(config, "serving", f"node data {config.node_data}"))


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def _add_serve(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a node's books over WebSocket and HTTP",
        description="Tail a Hyperliquid node's order status, raw book diff and fill files, keep "
        "exact per-order books for every coin, and serve them in Hyperliquid's API format on one "
        "port: WebSocket at ws://HOST:PORT/ws (l2Book, bbo, trades, l4Book), POST /info and "
        "GET /health over HTTP.",
    )
    settings = serve_options()
    _add_settings(parser, settings, {})
    # Set by the supervisor of --workers N on each worker's command line.
    parser.add_argument("--worker", type=Slot.decode, help=argparse.SUPPRESS)
    # Seconds a worker may leave the supervisor's pings unanswered (HEARTBEAT_TIMEOUT, whose
    # docstring says why); tests shorten it. Not a setting: no operator should need it.
    parser.add_argument(
        "--worker-heartbeat-timeout",
        type=_positive_seconds,
        default=HEARTBEAT_TIMEOUT,
        help=argparse.SUPPRESS,
    )
    parser.set_defaults(run=_run_serve, settings=settings, setting_defaults={})


def _run_relay(args: argparse.Namespace) -> int:
    settings = _start("relay", args)
    if isinstance(settings, int):
        return settings
    config = settings.build(Config)
    if not config.source:
        print("hlbook relay: --source nats://HOST:PORT is required", file=sys.stderr)
        return 2

    where = "from NATS " + nats_options(config, config.source).describe()  # no credentials
    return run(lambda: _serve_announced(config, "relaying", where))


def _add_relay(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "relay",
        help="serve the same API from a primary's NATS JetStream stream, with no node",
        description="Follow the blocks and book snapshots a primary (hlbook serve --publish) "
        "writes to NATS JetStream and serve the whole API from them: every WebSocket channel, "
        "POST /info, the page, /health and /metrics. Bootstraps from the newest snapshot, then "
        "applies the blocks after it in order; resumes after a disconnect and re-bootstraps "
        "after a gap the stream cannot fill. Relays keep no state: put several behind any TCP "
        "load balancer.",
    )
    settings = _relay_options()
    _add_settings(parser, settings, {})
    parser.set_defaults(run=_run_relay, settings=settings, setting_defaults={})


def _run_demo(args: argparse.Namespace) -> int:
    from hlbook.node.formats import Layout
    from hlbook.sim import SimConfig, run_simulator

    settings = _start("demo", args)
    if isinstance(settings, int):
        return settings

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="hlbook-demo-") as tmp:
            node_data = Path(tmp) / "data"
            sim_config = SimConfig(
                node_data=node_data,
                seed=args.seed,
                layout=Layout(args.layout.replace("-", "_")),
                blocks_per_second=args.blocks_per_second,
                scale=args.scale,
                info_port=0,
                fallback_port=0,  # plays the public API for types a node does not answer
                # Block times from now, as a live node's: health and the page show a real lag.
                start_time=datetime.now(UTC),
            )
            async with trio.open_nursery() as nursery:
                sim = await nursery.start(run_simulator, sim_config)
                config = settings.build(
                    Config,
                    node_data=node_data,
                    info_url=sim.info_url,
                    fallback_info_url=sim.fallback_url,
                    snapshot_path=Path(tmp) / "snapshot.json",
                )
                relay_lines = ""
                nats_url = None
                if args.relay:
                    from hlbook.relay.server import NatsServerConfig, run_nats_server

                    nats = await nursery.start(
                        run_nats_server, NatsServerConfig(store_dir=Path(tmp) / "nats")
                    )
                    nats_url = nats.url
                    # Frequent snapshots: a relay started later bootstraps soon.
                    config = attrs.evolve(config, publish=(nats_url,), publish_snapshot_every=10.0)
                handle = await nursery.start(serve, config)
                await handle.wait_ready()
                books = handle.books
                coins = ", ".join(sorted(books.coins())) if books else ""
                if args.relay:
                    relay = await nursery.start(serve, _demo_relay_config(settings, config, tmp))
                    with trio.fail_after(60):
                        await relay.wait_ready()
                    relay_lines = (
                        f"  relay:      {relay.http_url}  (the same API and page from NATS"
                        f" {nats_url}, no node; a base_url too)\n"
                        f"              WebSocket {relay.url}\n"
                    )
                print(_demo_banner(handle, config, sim_config, relay_lines, coins), flush=True)

    return run(main)


def _demo_banner(
    handle: ServerHandle, config: Config, sim: "SimConfig", relay_lines: str, coins: str
) -> str:
    """What ``hlbook demo`` prints once it serves: where to look and what to paste."""
    # The interpreter running the demo has hlbook's packages; a bare "python" may not.
    # The examples are beside the package in a checkout (an editable install).
    python = _shown_path(Path(sys.executable))
    examples_dir = Path(__file__).resolve().parent.parent / "examples"
    examples_at = _shown_path(examples_dir) if examples_dir.is_dir() else Path("examples")
    page, url = f"{handle.http_url}/", handle.url
    access = ""
    if config.tokens:
        token = load_tokens(config.tokens)[0]  # serve read them already: no error here
        page += f"#token={quote(token, safe='')}"
        url += f"?token={quote(token, safe='')}"
        access = (
            f"  token:      {token} on every request (Authorization: Bearer, ?token= or"
            f" http://hl:TOKEN@host)\n"
        )
    examples = "\n".join(
        f"{'  try:' if i == 0 else '':<14}{python} {examples_at / name}.py {url} BTC"
        for i, name in enumerate(("l2_ladder", "trades_tail", "l4_mirror"))
    )
    return (
        f"\nhlbook demo: the live book page is at {page}\n"
        f"  a simulated node is writing {sim.layout.value} files to {sim.node_data}\n"
        f"  WebSocket:  {handle.url}\n"
        f"  HTTP API:   {handle.http_url}  (POST /info, GET /health; the SDKs' base_url)\n"
        f"{access}"
        f"{relay_lines}"
        f"  coins:      {coins}\n"
        f"{examples}\n"
        f"  Ctrl-C stops it.\n"
    )


def _shown_path(path: Path) -> Path:
    """``path`` relative to the working directory when it is below it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _demo_relay_config(settings: Resolved, primary: Config, tmp: str) -> Config:
    """The demo relay: the primary's settings, any free port, from the primary's NATS."""
    return settings.build(
        Config,
        source=primary.publish,
        publish=(),
        info_url=primary.info_url,
        fallback_info_url=primary.fallback_info_url,
        port=0,
        snapshot_path=Path(tmp) / "relay" / "snapshot.json",
        history=str(Path(tmp) / "relay" / "history.sqlite"),
    )


def _add_demo(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "demo",
        help="run a simulated node and the server together",
        description="Start the node simulator in a temporary directory and hlbook serving it, "
        "then print the WebSocket URL to connect to. Ctrl-C stops both and removes the files. "
        "The server settings are serve's (flags, HLBOOK_* variables, --config), except the "
        "node input, which the simulator provides: the file's node-input keys are checked, "
        "then ignored.",
    )
    settings = _demo_options()
    _add_settings(parser, settings, DEMO_DEFAULTS)
    demo = parser.add_argument_group("simulated node")
    demo.add_argument("--seed", type=int, default=1, help="simulator seed (default: %(default)s)")
    demo.add_argument(
        "--layout",
        choices=["by-block", "streaming"],
        default="by-block",
        help="file layout the simulated node writes (default: %(default)s)",
    )
    demo.add_argument(
        "--blocks-per-second",
        type=float,
        default=14.0,
        help="simulated block rate (default: %(default)g, like mainnet)",
    )
    demo.add_argument(
        "--scale",
        type=float,
        default=0.2,
        help="events per block relative to mainnet's ~1,100 (default: %(default)g)",
    )
    demo.add_argument(
        "--relay",
        action="store_true",
        help="also start a local nats-server, publish to it and serve a relay from it "
        "(hlbook relay), printing both URLs",
    )
    parser.set_defaults(run=_run_demo, settings=settings, setting_defaults=DEMO_DEFAULTS)


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line on stderr and exit status 2, not the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from hlbook.sim.cli import add_simulate_command

    parser = _Parser(
        prog="hlbook",
        description=(
            "Exact per-order Hyperliquid order books from a node's files, "
            "served over WebSocket in Hyperliquid's API format."
        ),
    )
    commands: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_serve(commands)
    _add_relay(commands)
    add_simulate_command(commands)
    _add_demo(commands)
    return parser


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hlbook`` console script; returns the exit status.

    ``serve`` and ``demo`` configure logging once their settings are resolved
    (the level and format can come from the file or the environment); other
    commands have plain ``--log-level``/``--log-format`` flags.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = commands.choices[args.command]  # its own --help lists the flags
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    missing = [f for f in getattr(args, "required_flags", ()) if getattr(args, _dest(f)) is None]
    if missing:
        command.error(f"the following arguments are required: {', '.join(missing)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # --workers N starts it again
    if not hasattr(args, "settings"):
        configure_logging(args.log_level, args.log_format)
    status: int = args.run(args)
    return status
