"""Many machines through NATS JetStream: a primary publishes, relays follow (SPEC §14).

A primary :class:`Publisher` (a :class:`~hlbook.stages.BlockSink`) publishes every
applied block to a JetStream stream — one compressed message per block, message
id = height, so that two primaries publishing the same chain de-duplicate, each
preceded by a copy of its diffs sent as soon as they are applied — and
stores book snapshots in the JetStream object store. A relay's :class:`Consumer`
bootstraps from the newest snapshot and follows the blocks after it, in order,
across disconnects; a gap the stream cannot fill is an explicit :class:`Gap`.

* :mod:`~hlbook.relay.codec` — the wire format (no I/O);
* :mod:`~hlbook.relay.chain` — the consumer's and publisher's decisions (no I/O);
* :mod:`~hlbook.relay.names` — stream, subject and bucket names and settings;
* :mod:`~hlbook.relay.bridge` — nats-py's asyncio loop in a thread, called from Trio;
* :mod:`~hlbook.relay.client` — connection options and a connection kept up;
* :mod:`~hlbook.relay.publisher`, :mod:`~hlbook.relay.consumer` — the two sides;
* :mod:`~hlbook.relay.server` — a real ``nats-server`` for tests and the demo.

:func:`hlbook.serve` uses them through :mod:`hlbook.shell.publish` (``--publish``:
the primary's sink, snapshots at block boundaries) and :mod:`hlbook.shell.follow`
(``--source``: the relay's data path, the same supervisor fed by a consumer).
"""

from hlbook.relay.bridge import AsyncioThread, BridgeClosedError, open_asyncio_thread
from hlbook.relay.chain import ChainFollower, GapInfo, OutBuffer, Verdict
from hlbook.relay.client import NatsConnection, NatsOptions, NatsUnavailableError, open_nats
from hlbook.relay.codec import (
    BlockFrame,
    Codec,
    FrameError,
    SnapshotFrame,
    decode_block,
    decode_diffs,
    decode_snapshot_frame,
    encode_block,
    encode_diffs,
    encode_snapshot_frame,
)
from hlbook.relay.consumer import (
    BlockMessage,
    Bootstrap,
    Consumer,
    ConsumerStats,
    DiffsMessage,
    Gap,
    RelayEvent,
)
from hlbook.relay.names import RelayNames, StreamSettings
from hlbook.relay.publisher import Publisher, PublisherStats, open_publisher
from hlbook.relay.server import NatsServer, NatsServerConfig, open_nats_server, run_nats_server

__all__ = [
    "AsyncioThread",
    "BlockFrame",
    "BlockMessage",
    "Bootstrap",
    "BridgeClosedError",
    "ChainFollower",
    "Codec",
    "Consumer",
    "ConsumerStats",
    "DiffsMessage",
    "FrameError",
    "Gap",
    "GapInfo",
    "NatsConnection",
    "NatsOptions",
    "NatsServer",
    "NatsServerConfig",
    "NatsUnavailableError",
    "OutBuffer",
    "Publisher",
    "PublisherStats",
    "RelayEvent",
    "RelayNames",
    "SnapshotFrame",
    "StreamSettings",
    "Verdict",
    "decode_block",
    "decode_diffs",
    "decode_snapshot_frame",
    "encode_block",
    "encode_diffs",
    "encode_snapshot_frame",
    "open_asyncio_thread",
    "open_nats",
    "open_nats_server",
    "open_publisher",
    "run_nats_server",
]
