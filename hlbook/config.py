"""Server configuration: one frozen value, built by the CLI or by embedding code.

Every field of :class:`Config` is also a setting of the command line, in three
spellings derived from the field (see :class:`Option`): a flag
(``--node-data``), a key of the TOML config file (``node-data``, the flag
without its dashes) and an environment variable (``HLBOOK_NODE_DATA``). What
only a person can say — the help text, metavar, argparse group, a key other
than the field's name — sits in the field's ``metadata=setting(...)``.

:func:`resolve` merges the layers (flags > environment > file > defaults),
structures each value with cattrs into the field's type and runs the field's
validators, naming the key and where it came from in every error
(:class:`ConfigError`). :func:`render` prints a resolved configuration back as
TOML with each value's source and the secrets masked. Nothing here touches
argparse or logging; :mod:`hlbook.cli` builds the flags from :func:`options`.

Adding a setting is adding a field, nothing else::

    max_connections_per_ip: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.gt(0)),
        metadata=setting("connections allowed from one address", metavar="N",
                         default_text="no limit"),
    )

gives ``--max-connections-per-ip N`` in ``hlbook serve --help`` (and in
``demo``'s unless ``group=NODE``), the key ``max-connections-per-ip`` and
``HLBOOK_MAX_CONNECTIONS_PER_IP``, checked and reported like every other; a
``bool`` gets ``--x/--no-x``, a ``Literal`` its choices, a ``tuple[str, ...]``
comma lists and repeatable flags (``separator=None`` for values with commas,
such as tokens). A field without ``setting()`` still gets all three, with no
help text (a test insists on one). Then regenerate ``deploy/hlbook.toml``
(see :func:`hlbook.cli.example_config`).
"""

import difflib
import json
import math
import os
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs
import cattrs

from hlbook.model import MARKETS, CoinFilter
from hlbook.node.formats import Layout

__all__ = [
    "LOGGING",
    "NATS",
    "NODE",
    "SERVER",
    "Config",
    "ConfigError",
    "Option",
    "Resolved",
    "Setting",
    "Source",
    "options",
    "render",
    "render_example",
    "resolve",
    "setting",
]

Ingest = Literal["auto", "by-block", "streaming"]

NODE = "node input"
SERVER = "server (HTTP and WebSocket on one port)"
ACCESS = "access and TLS"
LOGGING = "logging"
NATS = "NATS JetStream (publish to relays, or relay from a primary)"
OTHER = "more settings"
"""The group of a field that has no ``setting()``."""

ENV_PREFIX = "HLBOOK_"

_METADATA_KEY = "hlbook.setting"
_SECRET_WORDS = ("token", "password", "secret")


@attrs.frozen(kw_only=True)
class Setting:
    """How a field appears on the command line, in the config file and the environment."""

    help: str = ""
    """One sentence for ``--help`` and the example config; the default is appended."""
    key: str | None = None
    """The flag's name without ``--`` (also the TOML key); default: the field name with
    dashes. Give one only to keep an established flag (``client_queue_messages`` is
    ``--client-queue``)."""
    metavar: str | None = None
    group: str = SERVER
    """The ``--help`` section."""
    default_text: str | None = None
    """What ``--help`` says the default is, when the value itself would not say it
    (``""``: say nothing, e.g. for a setting that is required)."""
    secret: bool | None = None
    """Masked by ``--print-config``; ``None``: secret if the field's name contains
    ``token``, ``password`` or ``secret``."""
    separator: str | None = ","
    """Lists: the separator of a flag, an environment variable or a TOML string;
    ``None`` for values that may contain commas (each flag then gives one item)."""
    flag: bool = True
    """``False``: a TOML key and an environment variable only."""


def setting(
    help: str,
    *,
    key: str | None = None,
    metavar: str | None = None,
    group: str = SERVER,
    default_text: str | None = None,
    secret: bool | None = None,
    separator: str | None = ",",
    flag: bool = True,
) -> dict[str, Setting]:
    """``attrs.field(metadata=setting(...))``: the field's help text and flag details."""
    return {
        _METADATA_KEY: Setting(
            help=help,
            key=key,
            metavar=metavar,
            group=group,
            default_text=default_text,
            secret=secret,
            separator=separator,
            flag=flag,
        )
    }


def _markets_known(_instance: object, _attribute: object, value: frozenset[str]) -> None:
    unknown = value - set(MARKETS)
    if unknown:
        raise ValueError(
            f"unknown market(s) {', '.join(sorted(unknown))}; choose from {', '.join(MARKETS)}"
        )


def _items(value: str | Iterable[str]) -> list[str]:
    """A list setting's items: an iterable's, or a comma-separated string's (as in the
    config file). ``tuple("BTC")`` would be three coins, and a token each letter."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return list(value)


def _strings(value: str | Iterable[str]) -> tuple[str, ...]:
    return tuple(_items(value))


def _string_set(value: str | Iterable[str]) -> frozenset[str]:
    return frozenset(_items(value))


def _whole_strings(value: str | Iterable[str]) -> tuple[str, ...]:
    """Items that may hold commas (tokens): a string is one item."""
    return (value,) if isinstance(value, str) else tuple(value)


def _path_text(value: "str | os.PathLike[str] | None") -> str | None:
    return None if value is None else os.fspath(value)


def _http_url(_instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if value is None:
        return
    assert isinstance(value, str)
    if not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", value):
        raise ValueError(
            f"'{attribute.name}' must be an http:// or https:// URL such as "
            f"http://127.0.0.1:3001/info, not {value!r}"
        )


def _type_error(name: str, wanted: str, value: object) -> TypeError:
    return TypeError(f"'{name}' must be {wanted}, not {value!r}")


def _checker(kind: Any) -> Callable[[str, object], None]:
    """A check that a (converted) value is of the annotation ``kind``."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = [arg for arg in args if arg is not type(None)]
        check = _checker(inner)

        def optional(name: str, value: object) -> None:
            if value is not None:
                check(name, value)

        return optional
    if origin is Literal:

        def choice(name: str, value: object) -> None:
            if value not in args:
                allowed = ", ".join(repr(arg) for arg in args)
                raise ValueError(f"'{name}' must be one of {allowed}, not {value!r}")

        return choice
    if origin in (tuple, frozenset):

        def strings(name: str, value: object) -> None:
            assert isinstance(value, tuple | frozenset)  # the field's converter made it
            for item in value:
                if not isinstance(item, str):
                    raise _type_error(name, "strings", item)

        return strings
    wanted = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}

    def simple(name: str, value: object) -> None:
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise _type_error(name, wanted.get(kind, f"a {kind.__name__}"), value)

    return simple


def _type_checked(_cls: type, fields: "list[attrs.Attribute[Any]]") -> "list[attrs.Attribute[Any]]":
    """Give every field a check of its annotation, run before its own validators: code
    that builds a :class:`Config` gets ``'port' must be an integer, not '8000'``, not a
    comparison error or a failure deep inside :func:`hlbook.serve`."""
    checked = []
    for field in fields:
        check = _checker(field.type)

        def typed(
            _instance: object,
            attribute: "attrs.Attribute[Any]",
            value: object,
            check: Callable[[str, object], None] = check,
        ) -> None:
            check(attribute.name, value)

        validators = [typed] if field.validator is None else [typed, field.validator]
        checked.append(field.evolve(validator=attrs.validators.and_(*validators)))
    return checked


def _nats_urls(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    for url in value:
        if not url.startswith(("nats://", "tls://")):
            raise ValueError(f"NATS URL {url!r}: use nats://HOST:PORT or tls://HOST:PORT")


NATS_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
"""What ``--nats-prefix`` may be: dot-separated tokens (it names a subject and a stream)."""


def nats_prefix_error(prefix: str) -> str | None:
    """Why ``prefix`` cannot name a feed in NATS, or ``None``."""
    if NATS_PREFIX.fullmatch(prefix):
        return None
    return f"NATS prefix {prefix!r}: use dot-separated tokens of letters, digits, '_' and '-'"


def _nats_prefix(_instance: object, _attribute: object, value: str) -> None:
    error = nats_prefix_error(value)
    if error is not None:
        raise ValueError(error)


def _duration(_instance: object, _attribute: object, value: str) -> None:
    from hlbook.history.requests import parse_duration

    parse_duration(value)  # raises ValueError with the reason


@attrs.frozen(kw_only=True, field_transformer=_type_checked)
class Config:
    """Everything ``hlbook serve`` can be told. Defaults match the CLI's."""

    node_data: Path = attrs.field(
        default=Path("~/hl/data"),
        converter=Path,
        metadata=setting("the node's data directory", group=NODE),
    )
    """The node's data root (``--node-data``)."""
    info_url: str = attrs.field(
        default="http://127.0.0.1:3001/info",
        validator=_http_url,
        metadata=setting(
            "the node's info server: asked for fileSnapshot, and passed the info types "
            "hlbook does not answer itself",
            group=NODE,
        ),
    )
    """The node's info server, for ``fileSnapshot`` and the info types passed on."""
    snapshot_path: Path | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(Path),
        metadata=setting(
            "where the node writes snapshots for hlbook; must be writable by the node and "
            "readable by hlbook",
            group=NODE,
            default_text="NODE_DATA/hlbook_snapshot.json",
        ),
    )
    """Where the node writes snapshots for hlbook; default ``<node_data>/hlbook_snapshot.json``."""
    snapshot_file: Path | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(Path),
        metadata=setting(
            "bootstrap from this snapshot file instead of asking the node (replays)", group=NODE
        ),
    )
    """Bootstrap from this snapshot file instead of asking the node (replays)."""
    ingest: Ingest = attrs.field(
        default="auto",
        metadata=setting("which file layout to read; auto picks what the node writes", group=NODE),
    )
    """Which layout to read; ``auto`` picks the one the node is writing."""
    from_start: bool = attrs.field(
        default=False,
        metadata=setting(
            "read every existing hourly file from the oldest (replays) instead of starting at "
            "the end of the newest",
            group=NODE,
        ),
    )
    """Read every existing hourly file from the oldest (replays) instead of from the end."""
    host: str = attrs.field(default="127.0.0.1", metadata=setting("address to listen on"))
    port: int = attrs.field(
        default=8000,
        validator=[attrs.validators.ge(0), attrs.validators.le(65535)],
        metadata=setting("port to listen on; 0 picks one"),
    )
    """WebSocket port; 0 picks a free one (see ``ServerHandle.port``)."""
    coins: frozenset[str] = attrs.field(
        default=frozenset(),
        converter=_string_set,
        metadata=setting(
            "only keep books for these coins", metavar="COIN,...", group=NODE, default_text="all"
        ),
    )
    """Only these coins (empty: all)."""
    markets: frozenset[str] = attrs.field(
        default=frozenset(MARKETS),
        converter=_string_set,
        validator=_markets_known,
        metadata=setting(
            "only these markets: perp, spot (@N, PURR/USDC), hip3 (dex:COIN)",
            metavar="MARKET,...",
            group=NODE,
            default_text="all",
        ),
    )
    """Only these markets: ``perp``, ``spot``, ``hip3``."""
    validate_every: float = attrs.field(
        default=60.0,
        validator=attrs.validators.ge(0),
        metadata=setting(
            "compare the books with a fresh node snapshot this often and repair differences; "
            "0 disables",
            metavar="SECONDS",
            group=NODE,
        ),
    )
    """Seconds between consistency checks against a fresh node snapshot; 0 disables."""
    stale_after: float = attrs.field(
        default=10.0,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "report the feed stale after this long without a block", metavar="SECONDS", group=NODE
        ),
    )
    """Seconds without a new block before the feed is reported stale."""
    idle_timeout: float = attrs.field(
        default=60.0,
        validator=attrs.validators.gt(0),
        metadata=setting("close clients that send nothing for this long", metavar="SECONDS"),
    )
    """Close a client that sent nothing for this long."""
    max_connections: int = attrs.field(
        default=1000,
        validator=attrs.validators.gt(0),
        metadata=setting("refuse connections beyond this many (HTTP 503)", metavar="N"),
    )
    max_subscriptions: int = attrs.field(
        default=1000,
        validator=attrs.validators.gt(0),
        metadata=setting("subscriptions allowed per connection", metavar="N"),
    )
    """Per connection."""
    max_message_size: int = attrs.field(
        default=64 * 1024,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "largest client message; larger ones close the connection with 1009",
            metavar="BYTES",
        ),
    )
    """Largest client message accepted, in bytes (larger: close code 1009; HTTP bodies: 413)."""
    compression_level: int = attrs.field(
        default=1,
        validator=[attrs.validators.ge(0), attrs.validators.le(9)],
        metadata=setting(
            "permessage-deflate level for WebSocket clients that offer it; each message is "
            "compressed once for all clients; 0 disables",
            metavar="0-9",
        ),
    )
    """permessage-deflate level for clients that offer it; 0 disables compression."""
    handshake_timeout: float = attrs.field(
        default=10.0,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "time a connection has to send a whole request or WebSocket upgrade",
            metavar="SECONDS",
        ),
    )
    """Seconds a connection has to send a complete request (head and body, or the
    WebSocket upgrade) once it opened or started one."""
    http_idle_timeout: float = attrs.field(
        default=30.0,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "close idle keep-alive HTTP connections after this long", metavar="SECONDS"
        ),
    )
    """Seconds an idle keep-alive HTTP connection is kept open."""
    max_half_open: int = attrs.field(
        default=256,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "connections that have not sent a request yet; beyond this the oldest is dropped",
            metavar="N",
        ),
    )
    """Connections that have not sent their first request yet; beyond it the oldest is dropped."""
    fallback_info_url: str | None = attrs.field(
        default=None,
        validator=_http_url,
        metadata=setting(
            "pass info types neither hlbook nor the node answer (metaAndAssetCtxs, funding, "
            "...) to this info server, e.g. https://api.hyperliquid.xyz/info",
            metavar="URL",
            group=NODE,
            default_text="refuse them with a reason",
        ),
    )
    """Where info types neither hlbook nor the node answer are passed on (e.g. the public
    API's ``https://api.hyperliquid.xyz/info``); unset: refused with a reason."""
    tokens: tuple[str, ...] = attrs.field(
        default=(),
        converter=_whole_strings,
        metadata=setting(
            "require this token on every request (Authorization: Bearer TOKEN, ?token=TOKEN, "
            "or the password of Basic auth; 401 without); @FILE reads tokens from a file, one "
            "a line (blank lines and lines starting with # skipped; no token in it: exit 1); "
            "repeat for several",
            key="token",
            metavar="TOKEN|@FILE",
            group=ACCESS,
            separator=None,
            secret=True,
            default_text="none: open to anyone who reaches the port",
        ),
    )
    """Access tokens (``@FILE`` reads a file's tokens, one a line, blank lines and ``#``
    comments skipped): when any is set, every request must carry one
    (``Authorization: Bearer T``, ``?token=T`` or Basic auth's password)."""
    public_health: bool = attrs.field(
        default=False,
        metadata=setting(
            "answer /health and /metrics without a token (load balancers, Prometheus)",
            group=ACCESS,
        ),
    )
    """``/health`` and ``/metrics`` answer without a token."""
    allow_origins: tuple[str, ...] = attrs.field(
        default=(),
        converter=_strings,
        metadata=setting(
            "browser origins (e.g. https://desk.example) that may connect besides the server's "
            "own page; repeat for several",
            key="allow-origin",
            metavar="ORIGIN",
            group=ACCESS,
            default_text="any origin",
        ),
    )
    """Browser origins allowed besides the server's own (empty: any)."""
    max_connections_per_ip: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.gt(0)),
        metadata=setting(
            "connections one client address may hold; beyond: HTTP 429",
            metavar="N",
            default_text="no limit",
        ),
    )
    """Connections one client address may hold (beyond: HTTP 429)."""
    tls_cert: Path | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(Path),
        metadata=setting(
            "certificate (chain) to serve https:// and wss:// on the same port; one expired, "
            "not yet valid or expiring within 14 days is logged (and served all the same)",
            metavar="PEM",
            group=ACCESS,
        ),
    )
    """PEM certificate (chain): serve ``https://`` and ``wss://`` on the port."""
    tls_key: Path | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(Path),
        metadata=setting("private key of --tls-cert", metavar="PEM", group=ACCESS),
    )
    """PEM private key for ``tls_cert``."""
    info_timeout: float = attrs.field(
        default=10.0,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "how long to wait for the node's (or fallback's) answer to a passed-on info "
            "request; then 504",
            metavar="SECONDS",
            group=NODE,
        ),
    )
    """Seconds to wait for the node's (or the fallback's) answer to a passed-on info request."""
    history: str | None = attrs.field(
        default=None,
        converter=_path_text,
        metadata=setting(
            "the history store (fills, trades, candles, finished orders) as an SQLite file; "
            "none keeps a bounded window in memory only",
            metavar="PATH|none",
            default_text="hlbook_history.sqlite beside the snapshot path",
        ),
    )
    """Where the history store is kept (``None``: beside the snapshot path, or in memory
    for a relay; ``"none"``: in memory only, a bounded window, lost at exit)."""
    history_retention: str = attrs.field(
        default="7d",
        validator=_duration,
        metadata=setting(
            "how long the history store keeps what it records (e.g. 7d, 12h, 1d12h)",
            metavar="DURATION",
        ),
    )
    """How long fills, trades, candles and finished orders are kept."""
    client_queue_messages: int = attrs.field(
        default=4096,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "trades/l4Book messages a client may lag behind before it is disconnected (trades) "
            "or resent a snapshot (l4Book)",
            key="client-queue",
            metavar="MESSAGES",
        ),
    )
    """Lossless (trades, l4Book) messages a client may have queued before the lag policy."""
    client_queue_bytes: int = attrs.field(
        default=64 * 1024 * 1024,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "bytes of trades/l4Book messages a client may have queued before the same policy "
            "as --client-queue applies",
            metavar="BYTES",
        ),
    )
    stream_quiet_after: float = attrs.field(
        default=0.3,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "streaming layout: a silent stream stops holding a block back after this long",
            metavar="SECONDS",
            group=NODE,
        ),
    )
    """Streaming layout: a stream silent this long no longer holds a block back."""
    snapshot_timeout: float = attrs.field(
        default=300.0,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "how long the node may take to write a requested snapshot (100+ MB on mainnet) "
            "before the request is retried",
            metavar="SECONDS",
            group=NODE,
        ),
    )
    retry_max: float = attrs.field(
        default=30.0,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "longest wait between attempts to reach the node's info server",
            metavar="SECONDS",
            group=NODE,
        ),
    )
    """Longest wait between attempts to reach the info server."""

    publish: tuple[str, ...] = attrs.field(
        default=(),
        converter=_strings,
        validator=_nats_urls,
        metadata=setting(
            "publish every applied block and periodic book snapshots to this NATS JetStream "
            "server (nats://HOST:4222 or tls://...); repeat or comma-separate for a cluster",
            metavar="URL",
            group=NATS,
            default_text="do not publish",
        ),
    )
    """NATS servers to publish blocks and snapshots to (empty: no publishing)."""
    publish_snapshot_every: float = attrs.field(
        default=60.0,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "store a book snapshot in the JetStream object store this often (relays bootstrap "
            "from the newest)",
            metavar="SECONDS",
            group=NATS,
        ),
    )
    publish_buffer: int = attrs.field(
        default=4096,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "blocks kept while NATS is slow or down; beyond, blocks are dropped (a counted, "
            "logged gap that relays repair from the next snapshot)",
            metavar="BLOCKS",
            group=NATS,
        ),
    )
    publish_early_diffs: bool = attrs.field(
        default=True,
        metadata=setting(
            "also send each block's diffs ahead of it, as soon as they are applied, so relays "
            "publish l2Book and bbo without waiting for the block's statuses",
            group=NATS,
        ),
    )
    publish_max_age: float = attrs.field(
        default=2 * 3600.0,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "retention of the block stream when hlbook creates it: blocks older than this are "
            "removed (a relay further behind re-bootstraps from a snapshot)",
            metavar="SECONDS",
            group=NATS,
        ),
    )
    publish_max_bytes: int = attrs.field(
        default=8 * 1024**3,
        validator=attrs.validators.gt(0),
        metadata=setting(
            "retention of the block stream when hlbook creates it: at most this many bytes",
            metavar="BYTES",
            group=NATS,
        ),
    )
    publish_replicas: int = attrs.field(
        default=1,
        validator=[attrs.validators.ge(1), attrs.validators.le(5)],
        metadata=setting(
            "replicas of the block stream and snapshot bucket when hlbook creates them "
            "(a JetStream cluster keeps up to 5)",
            metavar="N",
            group=NATS,
        ),
    )
    source: tuple[str, ...] = attrs.field(
        default=(),
        converter=_strings,
        validator=_nats_urls,
        metadata=setting(
            "relay: serve from this NATS JetStream server (what a primary's --publish writes) "
            "instead of a node's files",
            metavar="URL",
            group=NATS,
            default_text="read the node's files",
        ),
    )
    """NATS servers to relay from (empty: read the node's files)."""
    nats_prefix: str = attrs.field(
        default="hlbook",
        validator=_nats_prefix,
        metadata=setting(
            "names of the feed in NATS: subject PREFIX.blocks, stream PREFIX_BLOCKS, object "
            "store PREFIX_SNAPSHOTS (upper case); one prefix per chain",
            metavar="PREFIX",
            group=NATS,
        ),
    )
    nats_user: str | None = attrs.field(
        default=None, metadata=setting("NATS user name", metavar="USER", group=NATS)
    )
    nats_password: str | None = attrs.field(
        default=None,
        metadata=setting("NATS password (with --nats-user)", metavar="PASSWORD", group=NATS),
    )
    nats_token: str | None = attrs.field(
        default=None, metadata=setting("NATS authentication token", metavar="TOKEN", group=NATS)
    )
    nats_creds: Path | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(Path),
        metadata=setting("NATS credentials file (.creds: JWT and NKey seed)", group=NATS),
    )
    nats_tls_ca: Path | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(Path),
        metadata=setting(
            "CA certificate that signed the NATS server's (turns TLS on)", metavar="PEM", group=NATS
        ),
    )
    nats_tls_cert: Path | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(Path),
        metadata=setting("client certificate for NATS (TLS)", metavar="PEM", group=NATS),
    )
    nats_tls_key: Path | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(Path),
        metadata=setting("private key of --nats-tls-cert", metavar="PEM", group=NATS),
    )

    def __attrs_post_init__(self) -> None:
        CoinFilter(self.coins, self.markets)  # validates the market names
        if self.publish and self.source:
            raise ValueError("--publish and --source: a relay cannot publish (yet)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("--nats-tls-cert and --nats-tls-key go together")
        if self.nats_password is not None and self.nats_user is None:
            raise ValueError("--nats-password needs --nats-user")

    @property
    def history_path(self) -> Path | None:
        """The history file (``None``: in memory only)."""
        if self.history is not None and self.history.strip().lower() == "none":
            return None
        if self.history:
            return Path(self.history).expanduser().absolute()
        if self.source:
            return None  # a relay keeps nothing on disk unless told where
        return self.snapshot_out.with_name("hlbook_history.sqlite")

    @property
    def history_retention_ms(self) -> int:
        """``history_retention`` in milliseconds."""
        from hlbook.history.requests import parse_duration

        return parse_duration(self.history_retention)

    @property
    def coin_filter(self) -> CoinFilter:
        """The ``--coins``/``--markets`` filter."""
        return CoinFilter(self.coins, self.markets)

    @property
    def snapshot_out(self) -> Path:
        """Where the node is asked to write snapshots."""
        if self.snapshot_path is not None:
            return self.snapshot_path.expanduser().absolute()
        return (self.node_data.expanduser() / "hlbook_snapshot.json").absolute()

    @property
    def layout(self) -> Layout | None:
        """The forced layout, or ``None`` for auto-detection."""
        if self.ingest == "auto":
            return None
        return Layout.BY_BLOCK if self.ingest == "by-block" else Layout.STREAMING


def _fields_doc(cls: type) -> str:
    """Each field with its flag's help and default, for ``help(Config)`` (attribute
    docstrings, where the source keeps them, are invisible there)."""
    lines = ["", "", "Settings (keyword, default: meaning; ``hlbook serve --help`` has more):", ""]
    for field in attrs.fields(cls):
        meta = field.metadata.get(_METADATA_KEY)
        text = meta.help if meta is not None else ""
        default = field.default
        shown = "" if default is attrs.NOTHING else f" = {default!r}"
        lines.append(f"* ``{field.name}{shown}``: {text}")
    return "\n".join(lines)


Config.__doc__ = (Config.__doc__ or "") + _fields_doc(Config)


# ----------------------------------------------------------------------------------------
# Fields as settings


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the key and where it came from."""


@attrs.frozen
class Source:
    """Where a value came from: ``default``, ``file``, ``env`` or ``flag``."""

    kind: Literal["default", "file", "env", "flag"]
    name: str = ""
    """The file's path, or the variable's or the flag's name."""

    def describe(self) -> str:
        """``default``, ``file /etc/hlbook/hlbook.toml``, ``env HLBOOK_PORT``, ``flag --port``."""
        return f"{self.kind} {self.name}" if self.name else self.kind

    def error(self, key: str, message: str) -> ConfigError:
        """The error for a bad value of ``key`` from this source."""
        if self.kind == "file":
            return ConfigError(f"{self.name}: key {key!r}: {message}")
        if self.kind == "env":
            return ConfigError(f"environment variable {self.name}: {message}")
        if self.kind == "flag":
            return ConfigError(f"{self.name}: {message}")
        return ConfigError(f"{key} ({self.describe()}): {message}")


DEFAULT = Source("default")


@attrs.frozen
class Option:
    """One field of an attrs class as a flag, a TOML key and an environment variable."""

    owner: type
    field: str
    key: str
    type: Any
    """The field's type; ``X | None`` fields have ``optional`` set and ``type`` X."""
    optional: bool
    default: Any
    setting: Setting

    @property
    def flag(self) -> str:
        """``--node-data``."""
        return f"--{self.key}"

    @property
    def env(self) -> str:
        """``HLBOOK_NODE_DATA``."""
        return ENV_PREFIX + self.key.upper().replace("-", "_")

    @property
    def group(self) -> str:
        """The ``--help`` section."""
        return self.setting.group

    @property
    def help(self) -> str:
        """The help text, without the default."""
        return self.setting.help

    @property
    def secret(self) -> bool:
        """Masked when printed."""
        if self.setting.secret is not None:
            return self.setting.secret
        return any(word in self.field.lower() for word in _SECRET_WORDS)

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The values of a ``Literal`` type."""
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else None

    @property
    def is_list(self) -> bool:
        """A collection of strings (TOML array, comma string, repeated flag)."""
        return typing.get_origin(self.type) in _COLLECTIONS


_COLLECTIONS = (frozenset, tuple, list, set)
_SCALARS = (bool, int, float, str, Path)


@cache
def options(cls: type) -> tuple[Option, ...]:
    """The settings of an attrs class's fields, in field order.

    Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Path``, a
    ``Literal`` of strings, ``frozenset``/``tuple``/``list`` of ``str``, and
    any of them ``| None``. A field of another type is a :class:`TypeError`
    here, so a new field cannot silently miss its flag.
    """
    attrs.resolve_types(cls)
    found = []
    for field in attrs.fields(cls):
        meta = field.metadata.get(_METADATA_KEY, Setting(group=OTHER))
        tp, optional = _unwrap_optional(field.type)
        if not _supported(tp):
            raise TypeError(
                f"{cls.__name__}.{field.name}: type {field.type!r} has no flag, TOML or "
                "environment form; use one of bool, int, float, str, Path, Literal[...], "
                "frozenset[str]/tuple[str, ...] (optionally | None)"
            )
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        found.append(
            Option(
                owner=cls,
                field=field.name,
                key=meta.key or field.name.replace("_", "-"),
                type=tp,
                optional=optional,
                default=default,
                setting=meta,
            )
        )
    return tuple(found)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0], True
    return tp, False


def _supported(tp: Any) -> bool:
    if tp in _SCALARS:
        return True
    origin = typing.get_origin(tp)
    if origin is Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(tp))
    if origin in _COLLECTIONS:
        args = typing.get_args(tp)
        return args in ((str,), (str, ...))
    return False


# -- values ------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


class _BadValue(ValueError):
    """Raised by the structure hooks; the caller adds the key and the source."""


def _expected(what: str, value: object) -> _BadValue:
    return _BadValue(f"expected {what}, got {_kind(value)} ({value!r})")


def _structure_int(value: object, _tp: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _expected("an integer", value)


def _structure_float(value: object, _tp: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _expected("a number", value)


def _structure_bool(value: object, _tp: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _expected("true or false", value)


def _structure_str(value: object, _tp: object) -> str:
    if isinstance(value, str):
        return value
    raise _expected("a string", value)


def _structure_path(value: object, _tp: object) -> Path:
    if isinstance(value, str | Path):
        return Path(value).expanduser()
    raise _expected("a path (a string)", value)


def _structure_literal(value: object, tp: Any) -> object:
    choices = typing.get_args(tp)
    if isinstance(value, str) and value in choices:
        return value
    raise _expected(f"one of {', '.join(map(repr, choices))}", value)


def _structure_strings(value: object, tp: Any) -> object:
    if isinstance(value, str):
        value = _split(value, ",")
    if isinstance(value, list | tuple | frozenset | set) and all(
        isinstance(item, str) for item in value
    ):
        return typing.get_origin(tp)(value)
    raise _expected("an array of strings or a comma-separated string", value)


_converter = cattrs.Converter()
_converter.register_structure_hook(bool, _structure_bool)
_converter.register_structure_hook(int, _structure_int)
_converter.register_structure_hook(float, _structure_float)
_converter.register_structure_hook(str, _structure_str)
_converter.register_structure_hook(Path, _structure_path)


def _is_literal(tp: Any) -> bool:
    return typing.get_origin(tp) is Literal


def _is_collection(tp: Any) -> bool:
    return typing.get_origin(tp) in _COLLECTIONS


_converter.register_structure_hook_func(_is_literal, _structure_literal)
_converter.register_structure_hook_func(_is_collection, _structure_strings)


def _split(text: str, separator: str | None) -> list[str]:
    if separator is None:
        return [text]
    return [part.strip() for part in text.split(separator) if part.strip()]


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _from_text(option: Option, text: str) -> object:
    """A flag's or environment variable's text as the TOML value it stands for."""
    tp = option.type
    if option.optional and text == "":
        return None
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise _BadValue(f"expected true or false (or 1/0, yes/no, on/off), got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise _BadValue(f"expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise _BadValue(f"expected a number, got {text!r}") from None
    if option.is_list:
        return _split(text, option.setting.separator)
    return text


def _from_flag(option: Option, value: object) -> object:
    """A parsed flag (a string, a list of strings from repeated flags, a bool) as TOML."""
    if isinstance(value, bool):
        return value
    if isinstance(value, list):
        return [part for item in value for part in _split(str(item), option.setting.separator)]
    return _from_text(option, str(value))


def _structure(option: Option, raw: object) -> object:
    if raw is None or (option.optional and raw == ""):
        if option.optional:
            return None
        raise _BadValue("needs a value")
    return _converter.structure(raw, option.type)


# -- layers ------------------------------------------------------------------------------


T = TypeVar("T")


@attrs.frozen
class Resolved:
    """The merged settings: a value and its source for every option."""

    options: tuple[Option, ...]
    values: Mapping[str, object]
    """Key → structured value."""
    sources: Mapping[str, Source]
    file: Path | None = None
    warnings: tuple[str, ...] = ()
    """Things worth logging once logging is configured (e.g. a misspelt variable)."""

    def build(self, cls: type[T], **overrides: object) -> T:
        """An instance of ``cls`` from its options' values, and ``overrides`` by field."""
        values = {o.field: self.values[o.key] for o in self.options if o.owner is cls}
        values.update(overrides)
        try:
            return cls(**values)
        except (ValueError, TypeError) as exc:  # only the combination is wrong
            raise ConfigError(str(exc)) from None


def _check(option: Option, raw: object, source: Source) -> object:
    """``raw`` structured into the option's type and validated by its field's validators.

    Every value given is checked, not only the one that wins: a bad key in the
    file is an error even while a flag overrides it.
    """
    try:
        value = _structure(option, raw)
    except (_BadValue, cattrs.BaseValidationError) as exc:
        raise source.error(option.key, str(exc)) from None
    try:
        _validate_field(option.owner, option.field, value)
    except (ValueError, TypeError) as exc:
        message = str(exc).removeprefix(f"'{option.field}' ")
        raise source.error(option.key, message) from None
    return value


def _validate_field(cls: type, field: str, value: object) -> None:
    """Run one field's converter and validators on ``value``, as ``cls(...)`` would.

    Only that field's: the checks of combinations in ``__attrs_post_init__``
    (``--nats-password`` needs ``--nats-user``) see every setting at once when the
    whole ``cls`` is built, never one value beside the others' defaults.
    """
    attribute = attrs.fields_dict(cls)[field]
    converter = attribute.converter
    if converter is not None:
        value = converter(value)  # type: ignore[operator]
    if attribute.validator is not None:
        attribute.validator(_base(cls), attribute, value)


@cache
def _base(cls: type) -> Any:
    """``cls`` with its defaults: the instance a field's validators are shown."""
    return cls()


def read_toml(path: Path) -> dict[str, Any]:
    """The file's top-level table; unreadable or invalid TOML is a :class:`ConfigError`."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def resolve(
    opts: Sequence[Option],
    *,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    defaults: Mapping[str, object] | None = None,
    known: Collection[Option] = (),
) -> Resolved:
    """Merge defaults < ``file`` < ``environ`` < ``flags`` for ``opts``.

    ``flags`` and ``defaults`` are by key (``node-data``); ``defaults`` replace
    the fields' own (a command with other defaults). File keys of ``known``
    options not in ``opts`` (keys another command uses) are checked and ignored;
    other unknown keys are errors. Every value given is checked, also those a
    later layer replaces. Environment variables named like no option are
    ignored (other tools share the prefix), but a near miss is a warning.
    An empty environment variable counts as unset.
    """
    environ = os.environ if environ is None else environ
    by_key = {option.key: option for option in opts}
    others = {option.key: option for option in known if option.key not in by_key}
    values: dict[str, object] = {}
    sources: dict[str, Source] = {}
    checked: dict[str, tuple[object, Source]] = {}  # later layers replace earlier ones
    for option in opts:
        if defaults and option.key in defaults:
            values[option.key] = defaults[option.key]
        else:
            values[option.key] = option.default
        sources[option.key] = DEFAULT
    if file is not None:
        table = read_toml(file)
        source = Source("file", str(file))
        for key, raw in table.items():
            if key in by_key:
                checked[key] = (_check(by_key[key], raw, source), source)
            elif key in others:
                _check(others[key], raw, source)
            else:
                raise ConfigError(_unknown_key(file, key, raw, [*by_key, *others]))
    for option in opts:
        text = environ.get(option.env)
        if text:
            source = Source("env", option.env)
            try:
                raw = _from_text(option, text)
            except _BadValue as exc:
                raise source.error(option.key, str(exc)) from None
            checked[option.key] = (_check(option, raw, source), source)
    for key, value in (flags or {}).items():
        option = by_key[key]
        # A bool's flag as given: --no-x for False (argparse's BooleanOptionalAction).
        given = "--no-" + option.flag[2:] if value is False and option.type is bool else option.flag
        source = Source("flag", given)
        try:
            raw = _from_flag(option, value)
        except _BadValue as exc:
            raise source.error(key, str(exc)) from None
        checked[key] = (_check(option, raw, source), source)
    for key, (value, source) in checked.items():
        values[key] = value
        sources[key] = source
    for option in opts:  # defaults too: "~/hl/data" is the user's
        if option.type is Path and isinstance(values[option.key], str | Path):
            values[option.key] = Path(str(values[option.key])).expanduser()
    return Resolved(
        options=tuple(opts),
        values=values,
        sources=sources,
        file=file,
        warnings=tuple(_env_warnings(environ, [*by_key, *others])),
    )


def _unknown_key(file: Path, key: str, raw: object, keys: Iterable[str]) -> str:
    message = f"{file}: unknown key {key!r}"
    keys = list(keys)
    if isinstance(raw, dict):
        return message + " (the config file has no tables: put its keys at the top level)"
    near = difflib.get_close_matches(key.replace("_", "-").lower(), keys, n=1, cutoff=0.6)
    if near:
        return message + f" (did you mean {near[0]!r}?)"
    return message


_OTHER_VARIABLES = {ENV_PREFIX + "CONFIG", ENV_PREFIX + "NATS_SERVER"}
"""Variables hlbook reads that are not settings (the config file, the nats-server binary)."""


def _env_warnings(environ: Mapping[str, str], keys: Iterable[str]) -> Iterable[str]:
    names = {ENV_PREFIX + key.upper().replace("-", "_") for key in keys}
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in names and name not in _OTHER_VARIABLES:
            near = difflib.get_close_matches(name, names, n=1, cutoff=0.85)
            if near:
                yield f"ignoring {name}: no such setting (did you mean {near[0]}?)"


# -- TOML out ----------------------------------------------------------------------------


def toml_value(value: object) -> str:
    """``value`` in TOML notation (strings as basic strings, sets sorted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, frozenset | set):
        return "[" + ", ".join(toml_value(item) for item in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


_MASK = "********"


def _is_file_reference(value: str) -> bool:
    """``@FILE``: a value read from a file (spot coins such as ``@107`` are not)."""
    if not value.startswith("@") or len(value) < 2:
        return False
    rest = value[1:]
    return "/" in rest or rest.startswith(("~", ".")) or Path(rest).is_file()


def _masked(option: Option, value: object) -> tuple[object, bool]:
    if (
        value is None
        or value == ""
        or (isinstance(value, frozenset | set | list | tuple) and not value)
    ):
        return value, False  # nothing to hide
    if option.secret:
        if isinstance(value, frozenset | set | list | tuple):
            return [_MASK] * len(value), True
        return _MASK, True
    if isinstance(value, str) and _is_file_reference(value):
        return _MASK, True
    if isinstance(value, frozenset | set | list | tuple) and any(
        isinstance(item, str) and _is_file_reference(item) for item in value
    ):
        shown = [
            _MASK if isinstance(item, str) and _is_file_reference(item) else item
            for item in (sorted(value) if isinstance(value, frozenset | set) else value)
        ]
        return shown, True
    return value, False


def _grouped(opts: Iterable[Option]) -> list[Option]:
    """Options by group (in order of first appearance), in field order within each."""
    order: dict[str, int] = {}
    for option in opts:
        order.setdefault(option.group, len(order))
    return sorted(opts, key=lambda option: order[option.group])


def render(resolved: Resolved, header: Sequence[str] = ()) -> str:
    """The resolved settings as TOML, each with its source; secrets are masked.

    The output is a valid config file (unset values are comments) that gives
    the same settings again, secrets apart.
    """
    lines = [f"# {line}" if line else "#" for line in header]
    group = None
    rows: list[tuple[str, str]] = []
    for option in _grouped(resolved.options):
        if option.group != group:
            if rows or lines:
                rows.append(("", ""))
            rows.append((f"# {option.group}", ""))
            group = option.group
        value, masked = _masked(option, resolved.values[option.key])
        source = resolved.sources[option.key].describe()
        if masked:
            source += ", masked"
        if value is None:
            rows.append((f"# {option.key} is unset", source))
        else:
            rows.append((f"{option.key} = {toml_value(value)}", source))
    width = max((len(text) for text, comment in rows if comment), default=0)
    for text, comment in rows:
        lines.append(f"{text:<{width}}  # {comment}" if comment else text)
    return "\n".join(lines) + "\n"


def render_example(
    opts: Sequence[Option],
    header: Sequence[str] = (),
    defaults: Mapping[str, object] | None = None,
) -> str:
    """A config file with every key commented out at its default, under its help text.

    Uncommenting a line changes nothing; an unset default is ``""``, which
    means unset for optional keys.
    """
    lines = [f"# {line}" if line else "#" for line in header]
    group = None
    for option in _grouped(opts):
        if option.group != group:
            lines += ["", "", f"# ---- {option.group} " + "-" * max(0, 80 - len(option.group))]
            group = option.group
        default = (defaults or {}).get(option.key, option.default)
        lines.append("")
        about = option.help or "(no help text)"
        about = about[:1].upper() + about[1:]
        if option.setting.default_text:
            about += f" (default: {option.setting.default_text})"
        if option.choices and not all(choice in option.help for choice in option.choices):
            about += f"; one of {', '.join(option.choices)}"
        about += f". Env {option.env}"
        about += f", flag {option.flag}." if option.setting.flag else "."
        lines += textwrap.wrap(about, 88, initial_indent="# ", subsequent_indent="# ")
        shown = "" if default is None else default
        lines.append(f"# {option.key} = {toml_value(shown)}")
    return "\n".join(lines).lstrip("\n") + "\n"
