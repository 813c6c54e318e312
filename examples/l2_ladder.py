"""A live terminal ladder of a coin's l2Book.

python examples/l2_ladder.py [ws://127.0.0.1:8000/ws] [BTC] [--levels 10] [--sig-figs 5]
"""

import argparse
import sys
from decimal import Decimal
from typing import Any

import trio
from _client import DEFAULT_URL, messages, subscribe
from trio_websocket import open_websocket_url


def render(coin: str, data: dict[str, Any], levels: int) -> str:
    """The ladder as text: asks on top (best at the bottom), then bids."""
    bids, asks = data["levels"]
    width = max((len(level["sz"]) for level in bids + asks), default=8)
    lines = [f"{coin}  time {data['time']}", f"{'px':>14}  {'size':>{width}}  orders"]
    for level in reversed(asks[:levels]):
        lines.append(f"\x1b[31m{level['px']:>14}  {level['sz']:>{width}}  {level['n']:>6}\x1b[0m")
    if bids and asks:
        spread = Decimal(asks[0]["px"]) - Decimal(bids[0]["px"])
        lines.append(f"{'spread ' + str(spread):>14}")
    for level in bids[:levels]:
        lines.append(f"\x1b[32m{level['px']:>14}  {level['sz']:>{width}}  {level['n']:>6}\x1b[0m")
    return "\n".join(lines)


async def main(url: str, coin: str, levels: int, sig_figs: int | None) -> None:
    """Subscribe to l2Book and redraw on every update."""
    async with open_websocket_url(url) as ws:
        await subscribe(
            ws, {"type": "l2Book", "coin": coin, "nSigFigs": sig_figs, "nLevels": levels}
        )
        async for message in messages(ws):
            if message.get("channel") == "l2Book":
                sys.stdout.write("\x1b[H\x1b[2J" + render(coin, message["data"], levels) + "\n")
                sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("coin", nargs="?", default="BTC")
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--sig-figs", type=int, default=None, choices=[2, 3, 4, 5])
    args = parser.parse_args()
    try:
        trio.run(main, args.url, args.coin, args.levels, args.sig_figs)
    except* KeyboardInterrupt:
        pass  # Ctrl-C stops it (Trio may deliver it inside an exception group)
