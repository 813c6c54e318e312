"""Embed hlbook in your own Trio program and read the books in-process (no WebSocket).

    python examples/embed.py                       # against a built-in simulated node
    python examples/embed.py --node-data ~/hl/data --info-url http://127.0.0.1:3001/info

Prints the mid price and spread of a coin after every block that changes it,
while the WebSocket server also runs (its URL is printed).
"""

import argparse
import tempfile
from decimal import Decimal
from pathlib import Path

import trio

import hlbook


async def follow(handle: hlbook.ServerHandle, coin: str) -> None:
    """Print the coin's best bid/ask whenever a block touches it."""
    await handle.wait_ready()
    async with handle.feed() as updates:
        async for update in updates:
            if coin not in update.touched:
                continue
            book = update.books.book(coin)
            bid, ask = (book.best("B"), book.best("A")) if book else (None, None)
            if bid is None or ask is None:
                continue
            trades = len(update.trades.get(coin, []))
            print(
                f"height {update.height}: {coin} bid {bid.px_str} ask {ask.px_str} "
                f"mid {(Decimal(bid.px_str) + Decimal(ask.px_str)) / 2} trades {trades}",
                flush=True,
            )


async def main(args: argparse.Namespace) -> None:
    """Run hlbook (and, without --node-data, a simulated node) in one nursery."""
    with tempfile.TemporaryDirectory(prefix="hlbook-embed-") as tmp:
        async with trio.open_nursery() as nursery:
            node_data, info_url = args.node_data, args.info_url
            if node_data is None:
                from hlbook.sim import SimConfig, run_simulator

                node_data = Path(tmp) / "data"
                sim = await nursery.start(
                    run_simulator, SimConfig(node_data=node_data, info_port=0, scale=0.2)
                )
                info_url = sim.info_url
            config = hlbook.Config(
                node_data=node_data,
                info_url=info_url,
                snapshot_path=Path(tmp) / "snapshot.json",
                port=args.port,
            )
            handle = await nursery.start(hlbook.serve, config)
            print(f"hlbook is serving {handle.url}", flush=True)
            await follow(handle, args.coin)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-data", type=Path, default=None)
    parser.add_argument("--info-url", default="http://127.0.0.1:3001/info")
    parser.add_argument("--coin", default="BTC")
    parser.add_argument("--port", type=int, default=0)
    try:
        trio.run(main, parser.parse_args())
    except* KeyboardInterrupt:
        pass  # Ctrl-C stops it (Trio may deliver it inside an exception group)
