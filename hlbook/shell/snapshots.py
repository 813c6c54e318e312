"""Where snapshots come from, and loading them (Trio).

A snapshot is bytes in the node's ``fileSnapshot`` format with its height.
:class:`SnapshotSource` is all the data path needs: the node's info server
(:class:`NodeSnapshots`), a file given by the operator (:class:`FileSnapshot`),
or — for a relay — an object store. :class:`Bootstrap` uses the operator's
file until one load succeeds, then the node. Loading 100+ MB runs in a worker
thread with progress in the log, so the server keeps serving meanwhile.
"""

import contextlib
import logging
import urllib.parse
from pathlib import Path
from typing import Protocol

import httpx
import trio

from hlbook.book.books import Books
from hlbook.config import Config
from hlbook.node.formats import SnapshotSide
from hlbook.node.snapshot import (
    InfoServerError,
    decode_snapshot_file,
    file_snapshot_request,
    load_books,
    read_snapshot,
)

__all__ = [
    "Bootstrap",
    "FileSnapshot",
    "NodeSnapshots",
    "SnapshotSource",
    "decode_in_thread",
    "load_in_thread",
    "request_file_snapshot",
]

log = logging.getLogger("hlbook.ingest")


class SnapshotSource(Protocol):
    """Somewhere a snapshot can be fetched from."""

    @property
    def name(self) -> str:
        """Where it comes from, for logs."""

    async def fetch(self) -> bytes:
        """The snapshot's bytes; raise :class:`~hlbook.errors.SnapshotError` if unavailable."""


class FileSnapshot:
    """A snapshot file (``--snapshot-file``), read whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def name(self) -> str:
        """See :class:`SnapshotSource`."""
        return str(self.path)

    async def fetch(self) -> bytes:
        """See :class:`SnapshotSource`."""
        return await trio.to_thread.run_sync(read_snapshot, self.path, abandon_on_cancel=True)


class NodeSnapshots:
    """The node's info server writes a snapshot to ``path`` (``fileSnapshot``)."""

    def __init__(self, info_url: str, path: Path, timeout: float) -> None:
        self.info_url = info_url
        self.path = path
        self.timeout = timeout

    @property
    def name(self) -> str:
        """See :class:`SnapshotSource`."""
        return self.info_url

    async def fetch(self) -> bytes:
        """See :class:`SnapshotSource`."""
        path = self.path
        log.info("requesting a snapshot from %s into %s", self.info_url, path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InfoServerError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
        # An old snapshot left in place would be read as the answer if the node wrote none.
        with contextlib.suppress(OSError):  # absent, not ours to delete, not a file
            await trio.Path(path).unlink()
        try:
            with trio.fail_after(self.timeout):
                await request_file_snapshot(self.info_url, path)
        except (trio.TooSlowError, httpx.TimeoutException):
            raise InfoServerError(
                f"{self.info_url} did not write a snapshot within {self.timeout:g} s"
            ) from None
        if not await trio.Path(path).exists():
            raise InfoServerError(
                f"{self.info_url} answered but wrote no snapshot to {path} "
                "(is the path writable by the node?)"
            )
        return await trio.to_thread.run_sync(read_snapshot, path, abandon_on_cancel=True)


async def request_file_snapshot(info_url: str, out_path: Path) -> None:
    """Ask the node at ``info_url`` to write a snapshot with its height to ``out_path``.

    Only the status of the answer is documented (2xx): the caller reads the
    file. Raises :class:`InfoServerError` when the server is unreachable or
    answers anything else. Writing a mainnet snapshot takes seconds: callers
    bound the wait.
    """
    url = urllib.parse.urlsplit(info_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise InfoServerError(f"unsupported info URL {info_url!r} (expected http://host:port/info)")
    try:
        # No read timeout here: the caller's deadline bounds the whole request.
        async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0)) as client:
            response = await client.post(
                info_url,
                content=file_snapshot_request(out_path),
                headers={"content-type": "application/json"},
            )
    except httpx.HTTPError as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InfoServerError(f"cannot reach the node's info server at {info_url}: {why}") from None
    if not response.is_success:
        text = response.content[:300].decode("utf-8", "replace")
        raise InfoServerError(f"{info_url} answered HTTP {response.status_code}: {text}")


class Bootstrap:
    """The operator's snapshot file until one load from it succeeds, then the node."""

    def __init__(self, config: Config) -> None:
        self.node = NodeSnapshots(config.info_url, config.snapshot_out, config.snapshot_timeout)
        self.first: SnapshotSource | None = (
            FileSnapshot(config.snapshot_file) if config.snapshot_file is not None else None
        )
        self.check = NodeSnapshots(
            config.info_url,
            config.snapshot_out.with_name(config.snapshot_out.name + ".check"),
            config.snapshot_timeout,
        )
        """Validation snapshots: always from the node, to a path of their own."""

    @property
    def current(self) -> SnapshotSource:
        """Where the next bootstrap comes from."""
        return self.first if self.first is not None else self.node

    def loaded(self) -> None:
        """A bootstrap succeeded: later ones ask the node."""
        self.first = None


async def load_in_thread(data: bytes, config: Config) -> Books:
    """Build books from snapshot bytes in a worker thread (progress in the log)."""

    def load() -> Books:
        return load_books(data, coin_filter=config.coin_filter)

    return await trio.to_thread.run_sync(load, abandon_on_cancel=True)


async def decode_in_thread(data: bytes) -> tuple[int, list[tuple[str, SnapshotSide, SnapshotSide]]]:
    """Decode a validation snapshot fully in a worker thread."""
    return await trio.to_thread.run_sync(decode_snapshot_file, data, abandon_on_cancel=True)
