"""Wake up when the node writes: Linux inotify through ctypes, polling elsewhere.

The tailer reads until end of file and then waits here. With inotify the
wait ends as soon as the node appends or creates a file, so a block reaches
clients without a polling delay and an idle server costs no CPU. Without
inotify (other systems, or if the kernel refuses) it polls at a short fixed
interval. Either way the wait is bounded, so a missed event costs at most
``timeout``.
"""

import ctypes
import ctypes.util
import errno
import logging
import os
from pathlib import Path

import trio

__all__ = ["ChangeWatcher"]

log = logging.getLogger(__name__)

_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000

_FILE_MASK = _IN_MODIFY | _IN_CLOSE_WRITE
_DIR_MASK = _IN_CREATE | _IN_MOVED_TO | _IN_MODIFY


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1  # noqa: B018 - probe for the symbol
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


class ChangeWatcher:
    """Waits for changes to a set of files and directories.

    ``poll_interval`` is the wait when inotify is not available;
    ``fallback`` bounds every wait when it is.
    """

    def __init__(
        self, *, poll_interval: float = 0.002, fallback: float = 0.25, use_inotify: bool = True
    ) -> None:
        self.poll_interval = poll_interval
        self.fallback = fallback
        self._fd = -1
        self._watches: dict[Path, int] = {}
        if use_inotify and _libc is not None and hasattr(trio.lowlevel, "wait_readable"):
            fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd >= 0:
                self._fd = fd
            else:
                log.info("inotify unavailable (%s); polling files", os.strerror(ctypes.get_errno()))

    @property
    def uses_inotify(self) -> bool:
        """True if waits end on kernel notifications rather than a timer."""
        return self._fd >= 0

    def watch(self, path: Path) -> None:
        """Also wake up on changes to ``path`` (a file or a directory)."""
        if self._fd < 0 or path in self._watches or _libc is None:
            return
        mask = _DIR_MASK if path.is_dir() else _FILE_MASK
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            if err != errno.ENOENT:
                log.debug("cannot watch %s: %s", path, os.strerror(err))
            return
        self._watches[path] = wd

    def unwatch(self, path: Path) -> None:
        """Stop watching ``path``."""
        wd = self._watches.pop(path, None)
        if wd is not None and self._fd >= 0 and _libc is not None:
            _libc.inotify_rm_watch(self._fd, wd)

    async def wait(self, at_most: float | None = None) -> None:
        """Return after a change, or after ``at_most`` seconds (default: the watcher's bound)."""
        if self._fd < 0:
            limit = self.poll_interval if at_most is None else min(at_most, self.poll_interval)
            await trio.sleep(limit)
            return
        with trio.move_on_after(self.fallback if at_most is None else at_most):
            await trio.lowlevel.wait_readable(self._fd)
            self._drain()

    def _drain(self) -> None:
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Release the inotify descriptor."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            self._watches.clear()
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def __enter__(self) -> "ChangeWatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
