"""``hlbook serve --workers N``: the decisions, with no I/O and no Trio.

N worker processes share the port (``SO_REUSEPORT``: the kernel spreads new
connections over them); each is a whole ``hlbook serve`` — it tails the node's
files and keeps its own books (the README says why, with the measurement). A
supervisor process starts them, restarts one that dies and stops them all on
Ctrl-C or SIGTERM. This module holds what the supervisor and the workers
decide; :mod:`hlbook.shell.workers` runs it.

- :class:`WorkerSettings` and :func:`worker_count`: the setting and what
  ``auto`` means (cores − 1, at least 1).
- :class:`RestartPolicy`: when a dead worker is started again (time is an
  input): at once after a long life, with a doubling delay while it keeps
  dying young, and never when it could not start in the first place (a bad
  certificate or a taken port would only fail again).
- :class:`Admission`: which workers accept connections before their books are
  ready — all of them while no worker is ready (the first start), none while
  another one serves (a restart).
- :class:`Liveness`: which workers stopped answering the supervisor's pings
  (frozen, hung) and must be killed and restarted (time is an input).
- :func:`worker_paths`: the files a worker writes, one set per worker.
- :func:`merge_metrics` and :func:`aggregate_health`: ``/metrics`` and
  ``/health`` for the whole set, from each worker's own figures.
"""

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from hlbook.config import setting

__all__ = [
    "FIRST_ANSWER_TIMEOUT",
    "HEARTBEAT_TIMEOUT",
    "WORKERS",
    "Admission",
    "Exit",
    "Liveness",
    "RestartPolicy",
    "Silent",
    "Slot",
    "WorkerReport",
    "WorkerSettings",
    "aggregate_health",
    "merge_metrics",
    "worker_count",
    "worker_paths",
]

WORKERS = "processes"


def _workers_value(_instance: object, _attribute: object, value: str) -> None:
    worker_count(value, 2)  # raises ValueError with the reason


@attrs.frozen(kw_only=True)
class WorkerSettings:
    """How many processes ``hlbook serve`` runs: a setting like
    :class:`~hlbook.config.Config`'s, kept out of it because the library's
    :func:`hlbook.serve` is always one process."""

    workers: str = attrs.field(
        default="1",
        validator=_workers_value,
        metadata=setting(
            "processes sharing the port (SO_REUSEPORT), each with its own books; auto: one per "
            "core but one; 1 runs a single process with no supervisor",
            metavar="N|auto",
            group=WORKERS,
        ),
    )


def worker_count(value: str, cores: int | None = None) -> int:
    """The number of workers ``value`` (``"auto"`` or a positive integer) asks for.

    ``auto`` is ``cores - 1`` (default: the CPUs this process may use), at least
    1: one core is left to the node, whose machine this is."""
    text = value.strip().lower()
    if text == "auto":
        if cores is None:
            cores = len(os.sched_getaffinity(0))
        return max(1, cores - 1)
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"expected a number of processes or auto, got {value!r}") from None
    if count < 1:
        raise ValueError(f"must be >= 1 (or auto): {count}")
    return count


@attrs.frozen
class Slot:
    """A worker's place in the set, as the supervisor tells it (``--worker``)."""

    index: int
    count: int
    generation: int
    """How many times this slot was restarted."""
    port: int
    control_dir: Path
    """Where each worker listens for the supervisor's pings and its peers' requests
    (``worker-<index>.sock``)."""

    def encode(self) -> str:
        """The ``--worker`` value."""
        return f"{self.index},{self.count},{self.generation},{self.port},{self.control_dir}"

    @classmethod
    def decode(cls, text: str) -> "Slot":
        """The slot from a ``--worker`` value (``ValueError`` if it is not one)."""
        try:
            index, count, generation, port, directory = text.split(",", 4)
            slot = cls(int(index), int(count), int(generation), int(port), Path(directory))
        except ValueError:
            raise ValueError(f"not a worker slot: {text!r}") from None
        if not 0 <= slot.index < slot.count or slot.generation < 0:
            raise ValueError(f"not a worker slot: {text!r}")
        return slot

    def control_path(self, index: int | None = None) -> Path:
        """The control socket of worker ``index`` (default: this one)."""
        return self.control_dir / f"worker-{self.index if index is None else index}.sock"


def worker_paths(snapshot: Path, history: Path | None, index: int) -> tuple[Path, Path | None]:
    """The snapshot and history files of worker ``index``: worker 0 keeps a single
    process's (so going from 1 to N workers keeps the history); worker *i* adds
    ``.worker<i>`` before the suffix. Two workers must not share them: the node
    writes each requested snapshot to the path it is given, and a history file
    has one writer."""

    def own(path: Path) -> Path:
        return path.with_name(f"{path.stem}.worker{index}{path.suffix}")

    if index == 0:
        return snapshot, history
    return own(snapshot), own(history) if history is not None else None


# -- restarts -----------------------------------------------------------------------------


@attrs.frozen
class Exit:
    """What the policy says about a worker that exited."""

    restart: bool
    delay: float
    """Seconds to wait before starting it again."""
    reason: str
    """For the log line."""


@attrs.define
class _SlotState:
    started_at: float = 0.0
    ever_up: bool = False
    quick_deaths: int = 0
    restarts: int = 0


@attrs.define
class RestartPolicy:
    """When a worker that exited starts again. Time is an input (``now``, seconds on
    any monotonic clock), so tests need no clock.

    A worker that lived ``stable_after`` seconds or more is restarted after
    ``first_delay``; one that keeps dying sooner waits twice as long each time,
    up to ``max_delay`` — a crash loop costs little CPU and fills no disk with
    logs. A worker that exits before it was ever up (its sockets bound, its
    server started), in its first start, is not restarted: what stopped it (a
    taken port, a bad certificate or history file) would stop it again; the
    supervisor then stops and says so.
    """

    count: int
    first_delay: float = 0.2
    max_delay: float = 30.0
    stable_after: float = 10.0
    _slots: list[_SlotState] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._slots = [_SlotState() for _ in range(self.count)]

    def started(self, index: int, now: float) -> None:
        """Worker ``index`` was started (again) at ``now``."""
        self._slots[index].started_at = now

    def up(self, index: int) -> None:
        """Worker ``index`` is up: its sockets are bound and its server runs (it may
        not accept connections yet: see :class:`Admission`)."""
        self._slots[index].ever_up = True

    def restarts(self, index: int) -> int:
        """How many times worker ``index`` was restarted."""
        return self._slots[index].restarts

    def exited(self, index: int, now: float) -> Exit:
        """Worker ``index`` exited at ``now``: restart it (after a delay), or give up."""
        state = self._slots[index]
        lived = now - state.started_at
        if not state.ever_up and state.restarts == 0:
            return Exit(False, 0.0, "it exited before it was up")
        if lived >= self.stable_after:
            state.quick_deaths = 0
        else:
            state.quick_deaths += 1
        delay = min(self.max_delay, self.first_delay * 2 ** max(0, state.quick_deaths - 1))
        state.restarts += 1
        why = f"after {lived:.1f} s" + (
            f", {state.quick_deaths} quick exit(s) in a row" if state.quick_deaths > 1 else ""
        )
        return Exit(True, delay, why)


# -- who accepts connections ------------------------------------------------------------------


@attrs.define
class Admission:
    """Which workers accept connections before their books are ready.

    The kernel hands a share of the port's new connections to every socket that
    listens on it (``SO_REUSEPORT``), whether or not its process can serve them.
    A worker whose books are loading can only answer ``/health`` and ``503``, so
    while another worker is ready, a (re)started worker keeps its sockets bound
    but not listening — the kernel gives it nothing — and listens once its books
    are ready. While no worker is ready (the set's first start, or every worker
    down at once), every worker listens at once: a client gets ``/health`` and a
    ``503`` it can retry rather than a refused connection, and clients that keep
    reconnecting during a start spread over all the workers instead of piling
    onto the one that listened first (a connection stays on its worker for its
    life). A worker cannot stop listening without resetting the connections
    queued on it, so the rule only ever opens: :meth:`exited` says which held
    workers must listen now because the last ready one went away.
    """

    count: int
    _accepting: list[bool] = attrs.field(init=False)
    _ready: list[bool] = attrs.field(init=False)
    _running: list[bool] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._accepting = [False] * self.count
        self._ready = [False] * self.count
        self._running = [False] * self.count

    def started(self, index: int) -> bool:
        """Worker ``index`` was (re)started: whether it must accept connections at once,
        before its books are ready (no worker is ready)."""
        self._running[index] = True
        self._ready[index] = False
        self._accepting[index] = not any(self._ready)
        return self._accepting[index]

    def ready(self, index: int) -> None:
        """Worker ``index``'s books are ready: it accepts connections (it opened its
        sockets itself, if they were held)."""
        self._ready[index] = self._accepting[index] = True

    def exited(self, index: int) -> list[int]:
        """Worker ``index`` exited: the held workers that must accept connections now,
        before their books are ready, because no worker is ready any more."""
        self._running[index] = self._ready[index] = self._accepting[index] = False
        if any(self._ready):
            return []
        opened = [i for i in range(self.count) if self._running[i] and not self._accepting[i]]
        for i in opened:
            self._accepting[i] = True
        return opened

    def accepting(self, index: int) -> bool:
        """Whether worker ``index`` accepts connections (or was told to)."""
        return self._accepting[index]

    @property
    def ready_count(self) -> int:
        """How many workers are ready (books loaded, accepting connections)."""
        return sum(self._ready)


# -- liveness ---------------------------------------------------------------------------------

HEARTBEAT_TIMEOUT = 10.0
"""Seconds a worker may leave the supervisor's pings unanswered before it is killed.

The pings are answered by the worker's Trio loop, the thing its clients need:
a loop that does not run hangs their connections whether the process is
stopped (``SIGSTOP``), deadlocked or spinning; a thread would go on beating
through all of that. What legitimately holds a worker's loop is far shorter
(``benchmarks/worker_stall.py`` on this project's 2-core machine): building
books from the 158 MB mainnet-sized snapshot runs in a thread and held the loop
at most 0.21 s at a time (decoding a validation snapshot 0.18 s), a full
garbage collection with those books alive 0.13 s, capturing a snapshot for
``--publish`` 0.24 s (the README's figure). 10 s is some 40 times the longest."""
FIRST_ANSWER_TIMEOUT = 30.0
"""Seconds a new worker has to answer its first ping: the interpreter starts and
imports hlbook first (about 1 s, several when N workers start at once on a
loaded machine)."""


@attrs.frozen
class Silent:
    """A worker the supervisor must kill: it stopped answering."""

    index: int
    silent_for: float
    """Seconds since its last answer (or its start, if it never answered)."""
    answered: bool
    """Whether it ever answered (``False``: it hung while starting)."""


@attrs.define
class Liveness:
    """Which workers stopped answering the supervisor's pings, with explicit time (``now``,
    seconds on any monotonic clock).

    The supervisor pings each worker every :attr:`interval` and calls :meth:`beat` on
    each answer (and on each line the worker writes it: ``up``, ``ready``, also from
    its Trio loop); :meth:`overdue`, called every :attr:`interval` too, names each
    worker silent for ``timeout`` seconds (``first_answer`` for one that never
    answered since its start) once, for the supervisor to kill it. Time the
    supervisor itself did not run (a suspended machine, the supervisor stopped or
    starved: its pings did not go out either) is not counted against a worker.
    """

    count: int
    timeout: float = HEARTBEAT_TIMEOUT
    first_answer: float = FIRST_ANSWER_TIMEOUT
    _since: list[float | None] = attrs.field(init=False)
    _answered: list[bool] = attrs.field(init=False)
    _checked: float | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.timeout <= 0 or self.first_answer <= 0:
            raise ValueError("liveness timeouts must be positive")
        self._since = [None] * self.count
        self._answered = [False] * self.count

    @property
    def interval(self) -> float:
        """Seconds between pings (and between checks): a tenth of ``timeout``, at most 1 s."""
        return min(1.0, self.timeout / 10)

    def started(self, index: int, now: float) -> None:
        """Worker ``index`` was (re)started at ``now``: watch it."""
        self._since[index] = now
        self._answered[index] = False

    def beat(self, index: int, now: float) -> None:
        """Worker ``index`` answered a ping at ``now``."""
        if self._since[index] is not None:
            self._since[index] = max(now, self._since[index] or now)
            self._answered[index] = True

    def exited(self, index: int) -> None:
        """Worker ``index`` exited: nothing to watch until it is started again."""
        self._since[index] = None

    def overdue(self, now: float) -> list[Silent]:
        """The workers to kill at ``now``; each is named once (then not watched until
        :meth:`started` again)."""
        if self._checked is not None:
            # Checks come every interval; a longer gap is the supervisor's own stall.
            lost = now - self._checked - 2 * self.interval
            if lost > 0:
                self._since = [None if s is None else s + lost for s in self._since]
        self._checked = now
        found = []
        for index, since in enumerate(self._since):
            if since is None:
                continue
            answered = self._answered[index]
            if now - since >= (self.timeout if answered else self.first_answer):
                found.append(Silent(index, now - since, answered))
                self._since[index] = None
        return found


# -- the whole set's health and metrics ------------------------------------------------------


@attrs.frozen
class WorkerReport:
    """One worker's answer to its peers (``None`` fields: it did not answer)."""

    index: int
    generation: int | None = None
    pid: int | None = None
    health: Mapping[str, Any] | None = None
    metrics: str | None = None
    """Its own Prometheus text exposition (no ``worker`` label yet)."""

    @property
    def up(self) -> bool:
        """It answered."""
        return self.generation is not None


_SUMMED = ("clients", "subscriptions", "queued_messages")
_SUMMED_CONNECTIONS = ("accepted", "rejected", "websockets", "http_requests", "messages_sent")


def aggregate_health(own: Mapping[str, Any], reports: Sequence[WorkerReport]) -> dict[str, Any]:
    """``/health`` of a worker set: the answering worker's own health (what a client
    of this connection sees, as a single process reports it, with its ``worker``
    index) plus ``workers``: how many, how many answered and are live, totals, and
    each worker's essentials (``accepting``: whether it takes connections yet)."""
    each: list[dict[str, Any]] = []
    totals = dict.fromkeys(_SUMMED, 0)
    totals.update(dict.fromkeys(_SUMMED_CONNECTIONS, 0))
    for report in sorted(reports, key=lambda r: r.index):
        health = report.health
        if health is None:
            each.append({"worker": report.index, "up": False})
            continue
        connections = health.get("connections", {})
        for key in _SUMMED:
            totals[key] += int(health.get(key) or 0)
        for key in _SUMMED_CONNECTIONS:
            totals[key] += int(connections.get(key) or 0)
        each.append(
            {
                "worker": report.index,
                "up": True,
                "restarts": report.generation,
                "status": health.get("status"),
                "live": health.get("live"),
                "accepting": health.get("accepting"),
                "height": health.get("height"),
                "uptime_s": health.get("uptime_s"),
                "clients": health.get("clients"),
                "subscriptions": health.get("subscriptions"),
                "messages_sent": connections.get("messages_sent"),
            }
        )
    result = dict(own)
    result["workers"] = {
        "count": len(reports),
        "up": sum(1 for entry in each if entry["up"]),
        "live": sum(1 for entry in each if entry.get("live")),
        "restarts": sum(entry.get("restarts") or 0 for entry in each),
        **totals,
        "each": each,
    }
    return result


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge_metrics(reports: Sequence[WorkerReport]) -> bytes:
    """One Prometheus exposition for the set: every worker's series with a ``worker``
    label (a restarted worker's counters restart from zero, which Prometheus's
    ``rate()`` handles per series), plus ``hlbook_workers``, ``hlbook_worker_up``
    and ``hlbook_worker_restarts_total``."""
    merged: dict[str, Metric] = {}
    up = Metric("hlbook_worker_up", "1 if the worker answered this scrape", "gauge")
    restarts = Metric(
        "hlbook_worker_restarts", "Times the supervisor restarted this worker", "counter"
    )
    for report in sorted(reports, key=lambda r: r.index):
        label = str(report.index)
        up.add_sample("hlbook_worker_up", {"worker": label}, 1.0 if report.up else 0.0)
        if report.generation is not None:
            restarts.add_sample(
                "hlbook_worker_restarts_total", {"worker": label}, float(report.generation)
            )
        if report.metrics is None:
            continue
        for family in text_string_to_metric_families(report.metrics):
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                target.add_sample(
                    sample.name, {"worker": label, **sample.labels}, sample.value, sample.timestamp
                )
    count = Metric("hlbook_workers", "Worker processes configured (--workers)", "gauge")
    count.add_sample("hlbook_workers", {}, float(len(reports)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([count, up, restarts, *merged.values()]))
    return generate_latest(registry)
