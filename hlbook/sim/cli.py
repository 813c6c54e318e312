"""``hlbook simulate``: run a simulated node that writes files and answers info requests."""

import argparse
import logging
import math
import sys
from datetime import UTC, datetime

import trio

from hlbook.node.formats import Layout
from hlbook.runner import add_log_level, run
from hlbook.sim.config import DEFAULT_COINS, MAINNET_BLOCKS_PER_SECOND, SimConfig
from hlbook.sim.run import run_simulator

__all__ = ["add_simulate_command", "config_from_args"]

log = logging.getLogger(__name__)

_LAYOUTS = {"by-block": Layout.BY_BLOCK, "streaming": Layout.STREAMING}


def _rate(text: str) -> float:
    if text in ("max", "inf"):
        return math.inf
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive (or 'max')")
    return value


def _start_time(text: str) -> datetime:
    if text == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _coins(values: list[str]) -> tuple[str, ...]:
    return tuple(coin for value in values for coin in value.split(",") if coin)


def add_simulate_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``simulate`` to the ``hlbook`` command line."""
    parser = subparsers.add_parser(
        "simulate",
        help="run a simulated Hyperliquid node (files + info server)",
        description=(
            "Run a simulated Hyperliquid node: a matching engine with random traders "
            "writes order statuses, raw book diffs and fills to DIR like a real node, "
            "and answers what a node's info server answers (fileSnapshot, meta, spotMeta, "
            "perpDexs, exchangeStatus, openOrders, frontendOpenOrders) on "
            "POST http://HOST:PORT/info. With --fallback-port, a second server plays the "
            "public API for what a node cannot answer (metaAndAssetCtxs, "
            "spotMetaAndAssetCtxs), for hlbook's --fallback-info-url."
        ),
    )
    # Required, but checked after the unknown flags (hlbook.cli.main): argparse would
    # name a missing flag before a misspelt one that may be the same flag.
    parser.add_argument("--node-data", metavar="DIR", help="where to write node files (required)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--layout",
        choices=sorted(_LAYOUTS),
        default="by-block",
        help="by-block (--batch-by-block) or streaming (--stream-with-block-info) files "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--blocks-per-second",
        type=_rate,
        default=MAINNET_BLOCKS_PER_SECOND,
        metavar="R",
        help="block rate, or 'max' for as fast as possible (default: %(default)s, like mainnet)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="X",
        help="events per block relative to mainnet's ≈700 statuses + ≈400 diffs (default: 1.0)",
    )
    parser.add_argument(
        "--coins",
        nargs="+",
        default=None,
        metavar="COIN",
        help=f"coins to simulate, space or comma separated (default: {','.join(DEFAULT_COINS)})",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    budget.add_argument("--blocks", type=int, metavar="N", help="stop after N blocks")
    parser.add_argument(
        "--info-host", default="127.0.0.1", help="info server address (default: %(default)s)"
    )
    parser.add_argument(
        "--info-port",
        type=int,
        default=3001,
        metavar="P",
        help="info server port, 0 for any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--fallback-port",
        type=int,
        default=None,
        metavar="P",
        help="also serve the fallback info server (metaAndAssetCtxs, spotMetaAndAssetCtxs "
        "and the node's types) on this port, 0 for any free one (default: none)",
    )
    parser.add_argument(
        "--partial-writes", action="store_true", help="flush lines in pieces, cut mid-line"
    )
    parser.add_argument(
        "--diff-ahead",
        type=int,
        default=0,
        metavar="N",
        help="blocks the diff stream runs ahead of statuses and fills (default: %(default)s)",
    )
    parser.add_argument(
        "--start-time",
        type=_start_time,
        default=None,
        metavar="ISO",
        help="block time of the first block, UTC, or 'now' (default: 2026-05-05T17:39:13)",
    )
    parser.add_argument(
        "--start-height",
        type=int,
        default=None,
        metavar="H",
        help="height of the first block (default: 985148182)",
    )
    add_log_level(parser)
    parser.set_defaults(run=_run, required_flags=("--node-data",))


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The :class:`SimConfig` the ``simulate`` flags describe."""
    extra = {}
    if args.coins:
        extra["coins"] = _coins(args.coins)
    if args.start_time is not None:
        extra["start_time"] = args.start_time
    if args.start_height is not None:
        extra["start_height"] = args.start_height
    return SimConfig(
        node_data=args.node_data,
        seed=args.seed,
        layout=_LAYOUTS[args.layout],
        blocks_per_second=args.blocks_per_second,
        scale=args.scale,
        blocks=args.blocks,
        duration=args.duration,
        info_host=args.info_host,
        info_port=args.info_port,
        fallback_port=args.fallback_port,
        partial_writes=args.partial_writes,
        diff_ahead=args.diff_ahead,
        **extra,  # type: ignore[arg-type]
    )


def _run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"hlbook simulate: error: {exc}", file=sys.stderr)
        return 2
    return run(lambda: _simulate(config))


async def _simulate(config: SimConfig) -> int:
    status = 0
    try:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_simulator, config)
            print(f"info server: {handle.info_url}", flush=True)
            if handle.fallback_url is not None:
                print(f"fallback:    {handle.fallback_url}", flush=True)
            print(f"node data:   {handle.node_data.resolve()}", flush=True)
            if config.blocks is not None or config.duration is not None:
                await handle.wait_done()
                nursery.cancel_scope.cancel()
    except* OSError as group:  # e.g. the info port is taken, the directory is not writable
        for exc in group.exceptions:
            log.error("simulator failed: %s", exc)
        status = 1
    return status
