"""Print a coin's trades as they happen.

python examples/trades_tail.py [ws://127.0.0.1:8000/ws] [BTC]
"""

import argparse
from datetime import UTC, datetime

import trio
from _client import DEFAULT_URL, messages, subscribe
from trio_websocket import open_websocket_url


async def main(url: str, coin: str) -> None:
    """Subscribe to trades and print one line per trade."""
    async with open_websocket_url(url) as ws:
        await subscribe(ws, {"type": "trades", "coin": coin})
        async for message in messages(ws):
            if message.get("channel") != "trades":
                continue
            for trade in message["data"]:
                when = datetime.fromtimestamp(trade["time"] / 1000, UTC).strftime("%H:%M:%S.%f")
                side = "BUY " if trade["side"] == "B" else "SELL"
                buyer, seller = trade["users"]
                print(
                    f"{when[:-3]} {trade['coin']} {side} {trade['sz']:>12} @ {trade['px']:<12} "
                    f"tid {trade['tid']}  buyer {buyer[:10]}… seller {seller[:10]}…",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("coin", nargs="?", default="BTC")
    args = parser.parse_args()
    try:
        trio.run(main, args.url, args.coin)
    except* KeyboardInterrupt:
        pass  # Ctrl-C stops it (Trio may deliver it inside an exception group)
