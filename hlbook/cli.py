"""The ``hlbook`` command line: ``serve``, ``simulate`` and ``demo``.

Only this module (through :mod:`hlbook.runner`) runs Trio, handles signals
and configures logging. ``main(argv)`` returns the exit status so tests can
call it directly.
"""

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import trio

from hlbook.app import serve
from hlbook.config import Config
from hlbook.model import MARKETS
from hlbook.runner import add_log_level, configure_logging, run

__all__ = ["build_parser", "config_from_args", "main"]

log = logging.getLogger("hlbook")

_DEFAULTS = Config()


def _csv(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _markets(text: str) -> frozenset[str]:
    found = _csv(text)
    unknown = found - set(MARKETS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown market(s) {', '.join(sorted(unknown))}; choose from {', '.join(MARKETS)}"
        )
    return found


def _add_server_flags(parser: argparse.ArgumentParser, *, node: bool = True) -> None:
    d = _DEFAULTS
    if node:
        src = parser.add_argument_group("node input")
        src.add_argument(
            "--node-data",
            type=Path,
            default=d.node_data,
            help="the node's data directory (default: %(default)s)",
        )
        src.add_argument(
            "--info-url",
            default=d.info_url,
            help="the node's info server, asked for fileSnapshot (default: %(default)s)",
        )
        src.add_argument(
            "--fallback-info-url",
            default=None,
            metavar="URL",
            help="pass info types neither hlbook nor the node answer (metaAndAssetCtxs, "
            "funding, ...) to this info server, e.g. https://api.hyperliquid.xyz/info "
            "(default: refuse them with a reason)",
        )
        src.add_argument(
            "--info-timeout",
            type=float,
            default=d.info_timeout,
            metavar="SECONDS",
            help="how long to wait for the node's (or fallback's) answer to a passed-on "
            "info request; then 504 (default: %(default)g)",
        )
        src.add_argument(
            "--snapshot-path",
            type=Path,
            default=None,
            help="where the node writes snapshots for hlbook; must be writable by the node and "
            "readable by hlbook (default: NODE_DATA/hlbook_snapshot.json)",
        )
        src.add_argument(
            "--snapshot-file",
            type=Path,
            default=None,
            help="bootstrap from this snapshot file instead of asking the node (replays)",
        )
        src.add_argument(
            "--ingest",
            choices=["auto", "by-block", "streaming"],
            default=d.ingest,
            help="which file layout to read; auto picks what the node writes (default: auto)",
        )
        src.add_argument(
            "--from-start",
            action="store_true",
            help="read every existing hourly file from the oldest (replays) instead of "
            "starting at the end of the newest",
        )
        src.add_argument(
            "--coins",
            type=_csv,
            default=frozenset(),
            metavar="COIN,...",
            help="only keep books for these coins (default: all)",
        )
        src.add_argument(
            "--markets",
            type=_markets,
            default=frozenset(MARKETS),
            metavar="MARKET,...",
            help="only these markets: perp, spot (@N, PURR/USDC), hip3 (dex:COIN) (default: all)",
        )
        src.add_argument(
            "--validate-every",
            type=float,
            default=d.validate_every,
            metavar="SECONDS",
            help="compare the books with a fresh node snapshot this often and repair "
            "differences; 0 disables (default: %(default)g)",
        )
        src.add_argument(
            "--stale-after",
            type=float,
            default=d.stale_after,
            metavar="SECONDS",
            help="report the feed stale after this long without a block (default: %(default)g)",
        )
        src.add_argument(
            "--stream-quiet-after",
            type=float,
            default=d.stream_quiet_after,
            metavar="SECONDS",
            help="streaming layout: a silent stream stops holding a block back after this "
            "long (default: %(default)g)",
        )
    ws = parser.add_argument_group("server (HTTP and WebSocket on one port)")
    ws.add_argument("--host", default=d.host, help="address to listen on (default: %(default)s)")
    ws.add_argument(
        "--port",
        type=int,
        default=d.port,
        help="port to listen on; 0 picks one (default: %(default)s)",
    )
    ws.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout,
        metavar="SECONDS",
        help="close clients that send nothing for this long (default: %(default)g)",
    )
    ws.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help="refuse connections beyond this many (HTTP 503) (default: %(default)s)",
    )
    ws.add_argument(
        "--max-subscriptions",
        type=int,
        default=d.max_subscriptions,
        help="subscriptions allowed per connection (default: %(default)s)",
    )
    ws.add_argument(
        "--max-message-size",
        type=int,
        default=d.max_message_size,
        metavar="BYTES",
        help="largest client message; larger ones close the connection with 1009 "
        "(default: %(default)s)",
    )
    ws.add_argument(
        "--compression-level",
        type=int,
        choices=range(10),
        default=d.compression_level,
        metavar="0-9",
        help="permessage-deflate level for WebSocket clients that offer it; each message "
        "is compressed once for all clients; 0 disables (default: %(default)s)",
    )
    ws.add_argument(
        "--handshake-timeout",
        type=float,
        default=d.handshake_timeout,
        metavar="SECONDS",
        help="time a connection has to send a whole request or WebSocket upgrade "
        "(default: %(default)g)",
    )
    ws.add_argument(
        "--http-idle-timeout",
        type=float,
        default=d.http_idle_timeout,
        metavar="SECONDS",
        help="close idle keep-alive HTTP connections after this long (default: %(default)g)",
    )
    ws.add_argument(
        "--max-half-open",
        type=int,
        default=d.max_half_open,
        help="connections that have not sent a request yet; beyond this the oldest is "
        "dropped (default: %(default)s)",
    )
    ws.add_argument(
        "--client-queue",
        type=int,
        default=d.client_queue_messages,
        metavar="MESSAGES",
        help="trades/l4Book messages a client may lag behind before it is disconnected "
        "(trades) or resent a snapshot (l4Book) (default: %(default)s)",
    )


_FLAGS = {
    "node_data": "node_data",
    "info_url": "info_url",
    "snapshot_path": "snapshot_path",
    "snapshot_file": "snapshot_file",
    "ingest": "ingest",
    "from_start": "from_start",
    "coins": "coins",
    "markets": "markets",
    "validate_every": "validate_every",
    "stale_after": "stale_after",
    "stream_quiet_after": "stream_quiet_after",
    "host": "host",
    "port": "port",
    "idle_timeout": "idle_timeout",
    "max_connections": "max_connections",
    "max_subscriptions": "max_subscriptions",
    "max_message_size": "max_message_size",
    "client_queue_messages": "client_queue",
    "compression_level": "compression_level",
    "handshake_timeout": "handshake_timeout",
    "http_idle_timeout": "http_idle_timeout",
    "max_half_open": "max_half_open",
    "fallback_info_url": "fallback_info_url",
    "info_timeout": "info_timeout",
}


def config_from_args(args: argparse.Namespace, **overrides: object) -> Config:
    """Build a :class:`Config` from parsed flags (flags a command lacks keep their defaults)."""
    values: dict[str, object] = {
        field: getattr(args, flag) for field, flag in _FLAGS.items() if hasattr(args, flag)
    }
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


def _run_serve(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"hlbook serve: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(serve, config)
            log.info("serving %s (node data %s)", handle.url, config.node_data)

    return run(main)


def _add_serve(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a node's books over WebSocket and HTTP",
        description="Tail a Hyperliquid node's order status, raw book diff and fill files, keep "
        "exact per-order books for every coin, and serve them in Hyperliquid's API format on one "
        "port: WebSocket at ws://HOST:PORT/ws (l2Book, bbo, trades, l4Book), POST /info and "
        "GET /health over HTTP.",
    )
    _add_server_flags(parser)
    add_log_level(parser)
    parser.set_defaults(run=_run_serve)


def _run_demo(args: argparse.Namespace) -> int:
    from hlbook.node.formats import Layout
    from hlbook.sim import SimConfig, run_simulator

    try:
        config_from_args(args)  # refuse bad server flags before starting anything
    except ValueError as exc:
        print(f"hlbook demo: {exc}", file=sys.stderr)
        return 2

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
            )
            async with trio.open_nursery() as nursery:
                sim = await nursery.start(run_simulator, sim_config)
                config = config_from_args(
                    args,
                    node_data=node_data,
                    info_url=sim.info_url,
                    fallback_info_url=sim.fallback_url,
                    snapshot_path=Path(tmp) / "snapshot.json",
                )
                handle = await nursery.start(serve, config)
                await handle.wait_ready()
                books = handle.books
                coins = ", ".join(sorted(books.coins())) if books else ""
                print(
                    f"\nhlbook demo: the live book page is at {handle.http_url}/\n"
                    f"  a simulated node is writing {sim_config.layout.value} files "
                    f"to {node_data}\n"
                    f"  WebSocket:  {handle.url}\n"
                    f"  HTTP API:   {handle.http_url}  (POST /info, GET /health; the SDKs' "
                    f"base_url)\n"
                    f"  coins:      {coins}\n"
                    f"  try:        python examples/l2_ladder.py {handle.url} BTC\n"
                    f"              python examples/trades_tail.py {handle.url} BTC\n"
                    f"  Ctrl-C stops it.\n",
                    flush=True,
                )

    return run(main)


def _add_demo(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "demo",
        help="run a simulated node and the server together",
        description="Start the node simulator in a temporary directory and hlbook serving it, "
        "then print the WebSocket URL to connect to. Ctrl-C stops both and removes the files.",
    )
    _add_server_flags(parser, node=False)
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
        "--validate-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="consistency check against the simulator's snapshots (default: %(default)g)",
    )
    add_log_level(parser)
    parser.set_defaults(run=_run_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from hlbook.sim.cli import add_simulate_command

    parser = argparse.ArgumentParser(
        prog="hlbook",
        description=(
            "Exact per-order Hyperliquid order books from a node's files, "
            "served over WebSocket in Hyperliquid's API format."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    add_simulate_command(commands)
    _add_demo(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hlbook`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    status: int = args.run(args)
    return status
