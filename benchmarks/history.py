"""The history store at mainnet rate: book-task cost, sustained writes, disk per day, query p99.

Mainnet's need (issue 10): ≈400 non-rejection statuses/s and ≈100 fills/s at
≈14 blocks/s. Synthetic blocks carry that mix per block — 7 fills (3.5
trades), 29 non-rejection statuses (15 ``open``, which the store skips, and
14 finished: canceled/filled), and 650 rejections the recorder must filter —
with mainnet-like fields (random users and tx hashes, 80% cloids).

Measured in one run, on real SQLite files in a temporary directory:

1. *book task*: the recorder's ``publish`` (FILLS + STATUSES) per block, µs
   and as a share of the 70 ms between blocks;
2. *write rate*, as a multiple of mainnet (target ≥ 20x):
   ``sustained`` — blocks published as fast as the recorder takes them with
   the writer running as configured (one transaction per 0.2 s or per backlog,
   competing for the GIL as in the server); ``serial`` — one block per
   transaction, waiting for each (the writer's worst case: no grouping);
   ``backlog`` — blocks queued while the writer is
   held, then drained (how fast it catches up); and the baseline ``raw
   sqlite`` — the same fill and order rows inserted by plain ``executemany``
   into index-free tables, to show what the store adds;
3. *disk per day*: bytes of the backlog run's file (after a checkpoint) per
   simulated second, times 86,400;
4. *queries* on a synthetic 7-day store (a ``--density`` share of mainnet's
   fills and statuses spread over 7 days; candles for every minute of every
   interval): p50/p99 of ``userFills`` (a market maker with thousands of
   fills, a light user), ``userFillsByTime`` (one day), ``candleSnapshot``
   (1m newest 5000, 1h and 1d over the week), each beside the same SQL
   fetched raw (no conversion) as a baseline.

Rates are medians of ``--rounds`` rounds (min–max beside them). The machine
is shared and noisy: compare ratios, not absolute figures, across runs.

Usage: ``python benchmarks/history.py [--quick] [--blocks N] [--rounds R] [--density D]``
"""

import argparse
import gc
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from server_common import command_line, percentile, summary_header

from hlbook.book.trades import trades_by_coin
from hlbook.history import (
    FillsBatch,
    HistoryRecorder,
    HistoryStore,
    StatusesBatch,
)
from hlbook.history.candles import CandleBuilder
from hlbook.history.rows import FinishedOrder, fill_row, order_row
from hlbook.history.schema import KeyClock
from hlbook.model import Block
from hlbook.node.formats import Fill, Order, StatusEvent, status_event
from hlbook.numbers import canonical
from hlbook.stages import Stage

MAINNET_BLOCKS_PER_SECOND = 14.0
MAINNET_FILLS_PER_SECOND = 100.0
MAINNET_STATUSES_PER_SECOND = 400.0  # non-rejection
BLOCK_MS = 70
BASE_MS = 1778002753024
COINS = ["BTC", "ETH", "SOL", "HYPE", "@107", "xyz:XYZ100", "DOGE", "kPEPE", "ARB", "SUI"]
WEIGHTS = [30, 20, 10, 10, 5, 3, 8, 6, 4, 4]
PRICES = {
    "BTC": 81308.0,
    "ETH": 3120.5,
    "SOL": 182.31,
    "HYPE": 41.234,
    "@107": 41.25,
    "xyz:XYZ100": 25410.0,
    "DOGE": 0.20145,
    "kPEPE": 0.011234,
    "ARB": 0.4521,
    "SUI": 3.8123,
}
REJECTIONS = ["badAloPxRejected"] * 95 + ["perpMarginRejected"] * 3 + ["iocCancelRejected"] * 2


def node_time(ms: int) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    return f"{stamp}.{ms % 1000:03d}084407"


class Generator:
    """Mainnet-shaped blocks (see the module docstring), deterministic with a seed."""

    def __init__(self, seed: int = 1, users: int = 20_000, heavy: int = 50) -> None:
        self.rng = random.Random(seed)
        self.users = [f"0x{self.rng.getrandbits(160):040x}" for _ in range(users)]
        self.heavy = self.users[:heavy]
        self.height = 985_000_000
        self.oid = 412_000_000_000
        self.tid = 316_059_956_000_000

    def user(self) -> str:
        # Market makers take ~30% of the activity.
        if self.rng.random() < 0.3:
            return self.rng.choice(self.heavy)
        return self.rng.choice(self.users)

    def _px(self, coin: str) -> str:
        value = float(f"{PRICES[coin] * (1 + self.rng.uniform(-0.002, 0.002)):.5g}")
        return canonical(f"{value:.8f}")

    def _order(self, coin: str, ms: int, *, cloid: bool) -> Order:
        self.oid += 1
        size = self.rng.choice(["0.00013", "0.01229", "0.5", "1.842", "12.0", "250.0"])
        return Order(
            coin=coin,
            side=self.rng.choice("AB"),
            limitPx=self._px(coin),
            sz=size,
            oid=self.oid,
            timestamp=ms - self.rng.randrange(0, 60_000),
            origSz=size,
            tif=self.rng.choice(["Alo", "Alo", "Gtc", "Ioc"]),
            cloid=f"0x{self.rng.getrandbits(128):032x}" if cloid else None,
        )

    def block(
        self,
        ms: int,
        *,
        fills: int = 7,
        finished: int = 14,
        opened: int = 15,
        rejections: int = 650,
    ) -> Block:
        self.height += 1
        when = node_time(ms)
        events: list[StatusEvent] = []
        for kind, count in (("open", opened), ("finished", finished), ("rejected", rejections)):
            for _ in range(count):
                coin = self.rng.choices(COINS, WEIGHTS)[0]
                order = self._order(coin, ms, cloid=self.rng.random() < 0.8)
                status = (
                    kind
                    if kind == "open"
                    else self.rng.choice(["canceled", "canceled", "canceled", "filled"])
                    if kind == "finished"
                    else self.rng.choice(REJECTIONS)
                )
                events.append(status_event(time=when, user=self.user(), status=status, order=order))
        self.rng.shuffle(events)
        fill_events: list[tuple[str, Fill]] = []
        for _ in range((fills + self.rng.randrange(2)) // 2):
            coin = self.rng.choices(COINS, WEIGHTS)[0]
            self.tid += 1
            px = self._px(coin)
            sz = self.rng.choice(["0.00033", "0.0123", "1.5", "20.0"])
            tx = f"0x{self.rng.getrandbits(256):064x}"
            taker_side = self.rng.choice("AB")
            for crossed, side in ((True, taker_side), (False, "B" if taker_side == "A" else "A")):
                fill = Fill(
                    coin=coin,
                    px=px,
                    sz=sz,
                    side=side,
                    time=ms,
                    startPosition=canonical(f"{self.rng.uniform(-5, 5):.5f}"),
                    dir="Open Long" if side == "B" else "Open Short",
                    closedPnl="0.0",
                    hash=tx,
                    oid=self.oid + self.rng.randrange(1, 10_000),
                    crossed=crossed,
                    fee=canonical(f"{self.rng.uniform(-0.001, 0.02):.6f}"),
                    tid=self.tid,
                    feeToken="USDC",
                    twapId=None,
                )
                if self.rng.random() < 0.6:
                    fill.cloid = f"0x{self.rng.getrandbits(128):032x}"
                fill_events.append((self.user(), fill))
        return Block(self.height, ms, events, [], fill_events)


def publish(recorder: HistoryRecorder, block: Block) -> None:
    recorder.publish(Stage.FILLS, block, None, {})  # type: ignore[arg-type]
    recorder.publish(Stage.STATUSES, block, None, {})  # type: ignore[arg-type]


def median_range(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} (min {min(values):.1f}, max {max(values):.1f})"


# -- 1 + 2 + 3: book-task cost, write rates, disk per day --------------------------------------


def run_rates(blocks: list[Block], rounds: int, directory: Path) -> dict[str, list[float]]:
    seconds = len(blocks) / MAINNET_BLOCKS_PER_SECOND
    out: dict[str, list[float]] = {
        "publish_us": [],
        "sustained": [],
        "serial": [],
        "backlog": [],
        "raw": [],
        "bytes_day": [],
        "fills_s": [],
        "orders_s": [],
    }
    for round_ in range(rounds):
        # sustained: blocks as fast as the recorder takes them, the writer as configured
        # (it competes with the "book task" for the GIL, as in the server).
        path = directory / f"sustained{round_}.sqlite"
        with HistoryStore(path, max_pending_rows=10**9) as store:
            recorder = HistoryRecorder(store)
            started = time.perf_counter()
            for block in blocks:
                publish(recorder, block)
            store.flush()
            out["sustained"].append(len(blocks) / (time.perf_counter() - started))
            assert store.statistics().rows_dropped == 0
        # serial: one transaction per block, each waited for.
        path = directory / f"serial{round_}.sqlite"
        with HistoryStore(path) as store:
            recorder = HistoryRecorder(store)
            started = time.perf_counter()
            for block in blocks:
                publish(recorder, block)
                store.flush()
            out["serial"].append(len(blocks) / (time.perf_counter() - started))
        # backlog: the recorder's cost alone (writer held), then the drain.
        path = directory / f"backlog{round_}.sqlite"
        with HistoryStore(path, max_pending_rows=10**9) as store:
            recorder = HistoryRecorder(store)
            store.pause_writes()
            started = time.perf_counter()
            for block in blocks:
                publish(recorder, block)
            out["publish_us"].append((time.perf_counter() - started) / len(blocks) * 1e6)
            started = time.perf_counter()
            store.resume_writes()
            store.flush()
            elapsed = time.perf_counter() - started
            out["backlog"].append(len(blocks) / elapsed)
            written = store.statistics()
            assert written.rows_dropped == 0, written
            assert written.write_failures == 0, written
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fills = conn.execute("SELECT count(*) FROM fills").fetchone()[0]
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        conn.close()
        size = sum(os.path.getsize(name) for name in (path, f"{path}-wal") if os.path.exists(name))
        out["bytes_day"].append(size / seconds * 86_400)
        out["fills_s"].append(fills / seconds)
        out["orders_s"].append(orders / seconds)
        # raw sqlite baseline: the same fill and order rows, no indexes, one executemany each.
        out["raw"].append(len(blocks) / _raw_insert(blocks, directory / f"raw{round_}.sqlite"))
    return out


def _raw_insert(blocks: list[Block], path: Path) -> float:
    from hlbook.history.wire import is_recorded

    fills = []
    orders = []
    clock = KeyClock()
    for block in blocks:
        for user, fill in block.fills:
            fills.append(fill_row(clock.next(fill.time), user, fill))
        for event in block.statuses:
            order = event.parsed_order()
            if is_recorded(event.status, order):
                orders.append(
                    order_row(
                        clock.next(block.time),
                        FinishedOrder(event.user, event.status, block.time, order),
                    )
                )
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"CREATE TABLE fills ({', '.join(f'c{i}' for i in range(21))})")
    conn.execute(f"CREATE TABLE orders ({', '.join(f'c{i}' for i in range(20))})")
    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO fills VALUES ({', '.join('?' * 21)})", fills)
    conn.executemany(f"INSERT INTO orders VALUES ({', '.join('?' * 20)})", orders)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


# -- 4: queries on a 7-day store ---------------------------------------------------------------


def build_week(path: Path, density: float, generator: Generator) -> tuple[HistoryStore, float]:
    """A store holding 7 days at ``density`` of mainnet's rows (one block per simulated second
    carrying ``14 * density`` blocks' worth); returns it and the build time."""
    store = HistoryStore(path, max_pending_rows=10**9, prune_interval=10**9)
    builder = CandleBuilder()
    per_second = MAINNET_BLOCKS_PER_SECOND * density
    start = BASE_MS - 7 * 86_400_000
    started = time.perf_counter()
    carry = 0.0
    for second in range(7 * 86_400):
        carry += per_second
        count = int(carry)
        carry -= count
        ms = start + second * 1000
        # Keep the candles complete: at least one trade a minute on every coin.
        if count == 0 and second % 60:
            continue
        block = generator.block(
            ms,
            fills=7 * max(count, 1),
            finished=14 * count,
            opened=0,
            rejections=0,
        )
        if second % 60 == 0:
            for coin in COINS:
                generator.tid += 1
                fill = Fill(
                    coin=coin,
                    px=generator._px(coin),
                    sz="0.1",
                    side="B",
                    time=ms,
                    oid=1,
                    crossed=True,
                    tid=generator.tid,
                    hash="0x" + "0" * 64,
                )
                block.fills.append((generator.heavy[0], fill))
        trades = [t for group in trades_by_coin(block.fills).values() for t in group]
        candles = builder.add(trades)
        store.submit(FillsBatch(block.height, ms, block.fills, trades, candles))
        kept = [
            FinishedOrder(event.user, event.status, ms, event.parsed_order())
            for event in block.statuses
        ]
        if kept:
            store.submit(StatusesBatch(block.height, ms, kept))
        store.note_seen("fills", block.height, ms)
        store.note_seen("statuses", block.height, ms)
        if second % 3600 == 0:
            store.flush()
    store.flush()
    return store, time.perf_counter() - started


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def run_queries(
    store: HistoryStore, generator: Generator, runs: int
) -> list[tuple[str, list[float], list[float]]]:
    assert store.path is not None
    raw = sqlite3.connect(store.path)
    rng = random.Random(7)
    end = BASE_MS
    day = 86_400_000
    heavy = generator.heavy
    light = generator.users[1000:]
    from hlbook.history.rows import pack_hex

    def sql_fills(user: str, start: int = 0, stop: int = 1 << 42, desc: bool = True) -> None:
        raw.execute(
            f"SELECT * FROM fills WHERE user = ? AND id BETWEEN ? AND ? ORDER BY id "
            f"{'DESC' if desc else 'ASC'} LIMIT 2000",
            (pack_hex(user), start << 20, stop << 20),
        ).fetchall()

    def sql_candles(interval: str) -> None:
        raw.execute(
            "SELECT * FROM candles WHERE coin = ? AND interval = ? AND t BETWEEN ? AND ? "
            "ORDER BY t DESC LIMIT 5000",
            ("BTC", interval, 0, 1 << 62),
        ).fetchall()

    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        (
            "userFills (market maker)",
            lambda: store.fills(rng.choice(heavy)),
            lambda: sql_fills(rng.choice(heavy)),
        ),
        (
            "userFills aggregateByTime (mm)",
            lambda: store.fills(rng.choice(heavy), aggregate=True),
            lambda: sql_fills(rng.choice(heavy)),
        ),
        (
            "userFills (light user)",
            lambda: store.fills(rng.choice(light)),
            lambda: sql_fills(rng.choice(light)),
        ),
        (
            "userFillsByTime 1 day (mm)",
            lambda: store.fills(
                rng.choice(heavy), start=end - 2 * day, end=end - day, newest_first=False
            ),
            lambda: sql_fills(rng.choice(heavy), end - 2 * day, end - day, desc=False),
        ),
        (
            "candleSnapshot 1m, newest 5000",
            lambda: store.candles("BTC", "1m", 0),
            lambda: sql_candles("1m"),
        ),
        (
            "candleSnapshot 1h, 7 days",
            lambda: store.candles("BTC", "1h", 0),
            lambda: sql_candles("1h"),
        ),
        (
            "candleSnapshot 1d, 7 days",
            lambda: store.candles("BTC", "1d", 0),
            lambda: sql_candles("1d"),
        ),
    ]
    out = []
    for name, query, baseline in cases:
        query()  # warm
        out.append((name, timed(query, runs), timed(baseline, runs)))
    raw.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (the smoke test)")
    parser.add_argument("--blocks", type=int, default=8400, help="blocks per rate round (10 min)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--density", type=float, default=0.02, help="share of mainnet's rows in the 7-day store"
    )
    parser.add_argument("--runs", type=int, default=300, help="runs per query")
    args = parser.parse_args()
    if args.quick:
        args.blocks, args.rounds, args.density, args.runs = 300, 1, 0.0005, 20

    generator = Generator()
    blocks = [generator.block(BASE_MS + i * BLOCK_MS) for i in range(args.blocks)]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        rates = run_rates(blocks, args.rounds, directory)
        # The blocks are many GC-tracked objects the server would not hold: drop them so
        # that collections during the queries cost what they would in the server.
        del blocks
        gc.collect()
        week_gen = Generator(seed=2)
        store, build_seconds = build_week(directory / "week.sqlite", args.density, week_gen)
        with store:
            week_stats = store.statistics()
            conn = sqlite3.connect(directory / "week.sqlite")
            counts = {
                table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("fills", "orders", "trades", "candles")
            }
            conn.close()
            week_bytes = store.disk_bytes()
            queries = run_queries(store, week_gen, args.runs)

    blocks_needed = MAINNET_BLOCKS_PER_SECOND
    print(summary_header("history"))
    print(f"command: {command_line('history.py')}")
    print(
        f"blocks per round: {args.blocks} ({args.blocks / blocks_needed / 60:.1f} min of mainnet), "
        f"rounds: {args.rounds}; per block 7 fills, 14 finished + 15 open + 650 rejected statuses"
    )
    print("book task (recorder.publish FILLS+STATUSES per block):")
    publish_us = statistics.median(rates["publish_us"])
    print(
        f"  {median_range(rates['publish_us'])} µs/block "
        f"= {publish_us / (1000 * BLOCK_MS) * 100:.2f}% of the 70 ms between blocks"
    )
    print("write rate (blocks/s; mainnet needs 14 = 100 fills/s + 400 non-rejection statuses/s):")
    for name, key in (
        ("sustained", "sustained"),
        ("serial (1 tx/block)", "serial"),
        ("backlog drain", "backlog"),
        ("raw sqlite baseline", "raw"),
    ):
        value = statistics.median(rates[key])
        print(f"  {name:<22} {median_range(rates[key])} = {value / blocks_needed:6.1f}x mainnet")
    raw = statistics.median(rates["raw"])
    print(
        f"  store / raw sqlite: sustained {statistics.median(rates['sustained']) / raw:.2f}, "
        f"serial {statistics.median(rates['serial']) / raw:.2f}, "
        f"backlog {statistics.median(rates['backlog']) / raw:.2f}"
    )
    print(
        f"rows per simulated second: {statistics.median(rates['fills_s']):.0f} fills, "
        f"{statistics.median(rates['orders_s']):.0f} finished orders kept"
    )
    per_day = statistics.median(rates["bytes_day"])
    print(
        f"disk: {per_day / 1e9:.2f} GB/day at mainnet rate -> "
        f"{7 * per_day / 1e9:.1f} GB for 7 days "
        f"(min {min(rates['bytes_day']) / 1e9:.2f}, max {max(rates['bytes_day']) / 1e9:.2f})"
    )
    print(
        f"7-day store (density {args.density:g} of mainnet): {counts['fills']} fills, "
        f"{counts['orders']} orders, {counts['trades']} trades, {counts['candles']} candles, "
        f"{week_bytes / 1e6:.0f} MB, built in {build_seconds:.0f} s "
        f"({week_stats.rows_written} rows)"
    )
    print(f"queries ({args.runs} runs each; ms; raw = the same SELECT without conversion):")
    for name, values, baseline in queries:
        print(
            f"  {name:<32} p50 {percentile(values, 50):7.2f}  p99 {percentile(values, 99):7.2f}"
            f"   raw p50 {percentile(baseline, 50):6.2f} p99 {percentile(baseline, 99):6.2f}"
            f"   p99 ratio {percentile(values, 99) / max(percentile(baseline, 99), 1e-9):5.1f}x"
        )


if __name__ == "__main__":
    main()
