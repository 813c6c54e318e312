"""Benchmark: permessage-deflate compressed once per message vs. once per client, in one run.

For real messages — the ``l2Book`` views of the mainnet slice's BTC book after
each of its 51 blocks, and the real BTC ``l4Book`` snapshot — it measures the
server-side CPU of sending one message to N clients (N = 1, 10, 100), each
client a real socket (a socketpair whose other end a thread drains; only the
sending thread's CPU is counted):

* **plain**: hlbook's frames, built once (:class:`hlbook.server.frames.Message`),
  and one non-blocking write per client, as hlbook's flusher does;
* **once**: hlbook's compressed frames (``server_no_context_takeover``), built
  once for every client, and the same writes;
* **per client** (the baseline, what a server does with a compressor per
  connection and context takeover, e.g. the ``websockets`` library's
  default): every client's own ``zlib`` compressor deflates the message.

It prints CPU microseconds per message for N clients, the ratio to plain,
and the bytes each client receives. Several rounds; medians. Target: at 100
compressing clients, ``once`` costs at most 1.2x ``plain``.

Usage: ``python benchmarks/compression.py [--quick] [--rounds N] [--level 1]``
"""

import argparse
import contextlib
import selectors
import socket
import statistics
import sys
import threading
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixtures import load_mainnet
from server_common import command_line, summary_header

from hlbook.book.books import Books
from hlbook.book.views import Ladders
from hlbook.channels.base import Shared
from hlbook.channels.l4book import L4Book
from hlbook.model import Block
from hlbook.node.formats import Stream, decode_line, decode_snapshot, time_ms
from hlbook.server.frames import Deflater, Message, frames

TARGET = 1.2
CLIENTS = (1, 10, 100)


def real_messages() -> tuple[list[bytes], bytes]:
    """The BTC l2Book after every block of the mainnet slice, and the BTC l4Book snapshot."""
    mainnet = load_mainnet()
    height, coins = decode_snapshot(mainnet.snapshot)
    books = Books.from_snapshot(height, coins)
    snapshot = L4Book(Shared()).first(_l4_key(), books)
    assert snapshot is not None
    ladders = Ladders()
    views = []
    for index in range(len(mainnet.lines[Stream.DIFFS])):
        lines = [decode_line(s, mainnet.lines[s][index]) for s in Stream]
        block = Block(
            lines[1].block_number,
            time_ms(lines[1].block_time),
            lines[0].events,  # type: ignore[arg-type]
            lines[1].events,  # type: ignore[arg-type]
            lines[2].events,  # type: ignore[arg-type]
        )
        books.apply(block)
        ladder = ladders.get(books, "BTC", (None, 1))
        assert ladder is not None
        data = ladder.data_json("BTC", books.time, 20)
        views.append(b'{"channel":"l2Book","data":%s}' % data)
    return views, snapshot.payload


def _l4_key() -> object:
    from hlbook.channels.l4book import L4Key

    return L4Key("BTC")


class Sockets:
    """``count`` connected socket pairs; a thread reads and discards what arrives."""

    def __init__(self, count: int) -> None:
        self.pairs = [socket.socketpair() for _ in range(count)]
        for sender, _ in self.pairs:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._selector = selectors.DefaultSelector()
        for _, receiver in self.pairs:
            receiver.setblocking(False)
            self._selector.register(receiver, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.05):
                with contextlib.suppress(BlockingIOError):
                    while key.fileobj.recv(1 << 20):  # type: ignore[union-attr]
                        pass

    def send(self, index: int, parts: tuple[bytes, ...]) -> int:
        """One client's write of a message's frames, all of it (as the flusher tries)."""
        data = memoryview(b"".join(parts))
        sender = self.pairs[index][0]
        while data:
            data = data[sender.send(data) :]
        return len(b"".join(parts))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for a, b in self.pairs:
            a.close()
            b.close()


def plain(payloads: list[bytes], sockets: Sockets, deflater: Deflater) -> tuple[float, int]:
    clients = len(sockets.pairs)
    started = time.thread_time()
    sent = 0
    for payload in payloads:
        message = Message(payload)
        for index in range(clients):
            sent += sockets.send(index, message.plain())
    return time.thread_time() - started, sent // clients


def once(payloads: list[bytes], sockets: Sockets, deflater: Deflater) -> tuple[float, int]:
    clients = len(sockets.pairs)
    started = time.thread_time()
    sent = 0
    for payload in payloads:
        message = Message(payload)
        message.shared = clients
        for index in range(clients):
            sent += sockets.send(index, message.deflated(deflater))
    return time.thread_time() - started, sent // clients


def per_client(payloads: list[bytes], sockets: Sockets, deflater: Deflater) -> tuple[float, int]:
    clients = len(sockets.pairs)
    compressors = [
        zlib.compressobj(deflater.level, zlib.DEFLATED, -deflater.window_bits)
        for _ in range(clients)
    ]
    started = time.thread_time()
    sent = 0
    for payload in payloads:
        for index, compressor in enumerate(compressors):
            data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
            sent += sockets.send(index, frames(data[:-4], compressed=True))
    return time.thread_time() - started, sent // clients


def measure(
    payloads: list[bytes], rounds: int, level: int
) -> dict[str, dict[int, tuple[float, int]]]:
    """{way: {clients: (median CPU us per message, bytes per client per message)}}."""
    deflater = Deflater(level)
    out: dict[str, dict[int, tuple[float, int]]] = {}
    for name, way in (("plain", plain), ("once", once), ("per client", per_client)):
        out[name] = {}
        for clients in CLIENTS:
            times, sizes = [], []
            sockets = Sockets(clients)
            try:
                for _ in range(rounds):
                    seconds, sent = way(payloads, sockets, deflater)
                    times.append(seconds / len(payloads) * 1e6)
                    sizes.append(sent / len(payloads))
            finally:
                sockets.close()
            out[name][clients] = (statistics.median(times), int(statistics.median(sizes)))
    return out


def report(title: str, results: dict[str, dict[int, tuple[float, int]]]) -> float:
    print(f"{title}:")
    base = results["plain"]
    for name, by_clients in results.items():
        cells = []
        for clients, (us, _size) in by_clients.items():
            ratio = us / base[clients][0]
            cells.append(f"{clients:>3} clients {us:9.1f} us ({ratio:5.2f}x plain)")
        size = next(iter(by_clients.values()))[1]
        print(f"  {name:<10} {size:>9,} B/client  " + "  ".join(cells))
    return results["once"][100][0] / base[100][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--level", type=int, default=1)
    args = parser.parse_args()
    views, snapshot = real_messages()
    rounds = 1 if args.quick else args.rounds
    if args.quick:
        views = views[:5]
    l2 = measure(views, rounds, args.level)
    l4 = measure([snapshot], max(1, rounds // 2) if not args.quick else 1, args.level)
    print(summary_header("compression"))
    print(f"command: {command_line('compression.py')}")
    print(f"level {args.level}; {rounds} round(s); medians; CPU per message for all its clients")
    l2_ratio = report(f"l2Book BTC, {len(views)} real views (~{len(views[0]):,} B each)", l2)
    l4_ratio = report(f"l4Book BTC snapshot ({len(snapshot):,} B)", l4)
    per = l2["per client"][100][0] / l2["plain"][100][0]
    verdict = "met" if l2_ratio <= TARGET else "MISSED"
    print(
        f"at 100 compressing clients: compressed once {l2_ratio:.2f}x plain (l2Book), "
        f"{l4_ratio:.2f}x (l4Book snapshot); per client {per:.1f}x; "
        f"target once <= {TARGET}x: {verdict}"
    )


if __name__ == "__main__":
    main()
