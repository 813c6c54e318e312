"""Is the history file still the one at its path? (the decision is sans-I/O)

SQLite keeps a file it opened: when the history file is deleted while hlbook
runs, or renamed away, its writes go on into that inode — the disk space is
never freed, and at the next start the path holds nothing (or another file)
and everything recorded since is gone. The store compares the identity
(device, inode) of what is at the path with the file it opened, every second
or so (:func:`file_change`); an open file's inode is never reused while it
is open, so a different identity is a different file.
"""

import os
from typing import Final

import attrs

__all__ = ["DELETED", "REPLACED", "FileId", "file_change", "file_id"]

DELETED: Final = "deleted"
"""Nothing is at the path any more: the file was deleted, or moved away."""
REPLACED: Final = "replaced"
"""Another file is at the path (ours was moved away, or deleted, and another put there)."""


@attrs.frozen
class FileId:
    """What tells two files apart: their device and inode numbers."""

    device: int
    inode: int

    @classmethod
    def of(cls, status: os.stat_result) -> "FileId":
        """The identity in ``os.stat``'s or ``os.fstat``'s answer."""
        return cls(status.st_dev, status.st_ino)


def file_id(path: str) -> FileId | None:
    """The identity of the file at ``path`` now; ``None`` if there is none.

    Other errors (a directory that cannot be searched) raise :class:`OSError`:
    they say nothing about whether the file is still there.
    """
    try:
        return FileId.of(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def file_change(opened: FileId, now_at_path: FileId | None) -> str | None:
    """:data:`DELETED`, :data:`REPLACED`, or ``None`` if the path still holds ``opened``."""
    if now_at_path is None:
        return DELETED
    if now_at_path != opened:
        return REPLACED
    return None
