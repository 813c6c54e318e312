"""Where a feed lives in NATS: stream, subject and object-store bucket, and their settings.

One feed (one chain, e.g. mainnet) is named by a ``prefix`` (default
``hlbook``); several feeds (mainnet and testnet) can share one NATS by using
different prefixes:

==============  ==========================  ====================================
what            name (prefix ``hlbook``)    content
==============  ==========================  ====================================
stream          ``HLBOOK_BLOCKS``           every block message, in height order
subject         ``hlbook.blocks``           the stream's only subject
bucket          ``HLBOOK_SNAPSHOTS``        book snapshots (object store)
object          ``snapshot-<height>``       one snapshot; the newest few are kept
==============  ==========================  ====================================

One message per block on one subject: a block's three node streams travel
together (a relay needs all three to serve every channel), the stream sequence
is the block order, and the de-duplication by ``Nats-Msg-Id`` = height is
exact. Ahead of each block, on the same subject, comes a copy of its diffs
alone (``Nats-Msg-Id`` = ``<height>.diffs``), sent as soon as the primary has
applied them: relays publish ``l2Book`` and ``bbo`` from it without waiting
for the block's much larger statuses. The node's layout (by-block or
streaming) does not change the names: it only decides whether heights are
consecutive, which ``prev`` handles (:mod:`hlbook.relay.codec`).

Block message headers: ``Nats-Msg-Id`` = the height (decimal), ``Hlbook-Prev``
= the previous height in the publisher's chain (0 = unknown). The body is a
block frame (a diffs frame for the early diffs). Snapshot object headers:
``Hlbook-Height`` and ``Hlbook-Seq`` (the
stream sequence of the last message at or below that height when the
snapshot was stored: a consumer resumes right after it and skips heights up to
the snapshot's) and, when known, ``Hlbook-Time`` (the block time at that height,
ms). The object's data is a snapshot frame.
"""

import attrs

from hlbook.config import nats_prefix_error

__all__ = [
    "HEIGHT_HEADER",
    "PREV_HEADER",
    "SEQ_HEADER",
    "TIME_HEADER",
    "RelayNames",
    "StreamSettings",
    "diffs_message_id",
    "message_height",
]

PREV_HEADER = "Hlbook-Prev"
HEIGHT_HEADER = "Hlbook-Height"
SEQ_HEADER = "Hlbook-Seq"
TIME_HEADER = "Hlbook-Time"

_DIFFS_SUFFIX = ".diffs"


def diffs_message_id(height: int) -> str:
    """The ``Nats-Msg-Id`` of the early diffs of the block at ``height``."""
    return f"{height}{_DIFFS_SUFFIX}"


def message_height(msg_id: str) -> int | None:
    """The height a block's (or its early diffs') ``Nats-Msg-Id`` names, else ``None``."""
    digits = msg_id.removesuffix(_DIFFS_SUFFIX)
    return int(digits) if digits.isascii() and digits.isdigit() else None


@attrs.frozen
class RelayNames:
    """The NATS names of one feed (see the module docstring)."""

    prefix: str = "hlbook"

    def __attrs_post_init__(self) -> None:
        error = nats_prefix_error(self.prefix)
        if error is not None:
            raise ValueError(error)

    @property
    def _stem(self) -> str:
        return self.prefix.upper().replace(".", "_").replace("-", "_")

    @property
    def stream(self) -> str:
        """The JetStream stream of block messages."""
        return f"{self._stem}_BLOCKS"

    @property
    def subject(self) -> str:
        """The subject every block message is published on."""
        return f"{self.prefix}.blocks"

    @property
    def bucket(self) -> str:
        """The object-store bucket of snapshots."""
        return f"{self._stem}_SNAPSHOTS"

    @staticmethod
    def snapshot_object(height: int) -> str:
        """The object name of the snapshot at ``height``."""
        return f"snapshot-{height}"

    @staticmethod
    def snapshot_height(name: str) -> int | None:
        """The height in a snapshot object's name, ``None`` for other names."""
        stem, _, digits = name.partition("-")
        if stem != "snapshot" or not digits.isascii() or not digits.isdigit():
            return None
        return int(digits)


@attrs.frozen
class StreamSettings:
    """How the publisher creates the stream and bucket when they do not exist yet.

    An existing stream is used as it is (another primary, or an operator, may
    have configured it). ``max_age`` and ``max_bytes`` bound retention: a relay
    further behind than that re-bootstraps from a snapshot. ``duplicate_window``
    must cover the delay between two primaries publishing the same height.
    """

    max_age: float = 2 * 3600.0
    max_bytes: int = 8 * 1024**3
    max_msgs: int = -1
    """At most this many block messages (``-1``: no limit but age and bytes)."""
    duplicate_window: float = 300.0
    replicas: int = 1
    memory: bool = False
    """Keep the stream in memory instead of files (tests, throwaway demos)."""
    keep_snapshots: int = 3
    chunk_size: int = 512 * 1024
    """Object-store chunk size (below the server's default 1 MiB max_payload)."""

    def __attrs_post_init__(self) -> None:
        if self.keep_snapshots < 1:
            raise ValueError("keep at least one snapshot")
        if self.duplicate_window <= 0 or self.max_age <= 0:
            raise ValueError("duplicate_window and max_age must be positive")
        if self.duplicate_window > self.max_age:
            raise ValueError("duplicate_window cannot exceed max_age")
