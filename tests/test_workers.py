"""The decisions of ``--workers N`` (no processes): counts, slots, restarts, merged figures."""

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hlbook.workers import (
    Admission,
    Liveness,
    RestartPolicy,
    Silent,
    Slot,
    WorkerReport,
    aggregate_health,
    merge_metrics,
    worker_count,
    worker_paths,
)


def test_worker_count() -> None:
    assert worker_count("auto", cores=8) == 7
    assert worker_count("auto", cores=2) == 1
    assert worker_count("auto", cores=1) == 1  # at least one
    assert worker_count(" AUTO ") >= 1
    assert worker_count("3") == 3
    with pytest.raises(ValueError, match=r"must be >= 1"):
        worker_count("0")
    with pytest.raises(ValueError, match=r"expected a number of processes or auto"):
        worker_count("many")


def test_a_slot_travels_on_the_command_line() -> None:
    slot = Slot(1, 3, 4, 8000, Path("/tmp/hlbook-workers-x,y"))
    assert Slot.decode(slot.encode()) == slot
    assert slot.control_path() == Path("/tmp/hlbook-workers-x,y/worker-1.sock")
    assert slot.control_path(2).name == "worker-2.sock"
    with pytest.raises(ValueError, match=r"not a worker slot"):
        Slot.decode("3,3,0,8000,/tmp")  # index out of range
    with pytest.raises(ValueError, match=r"not a worker slot: 'garbage'"):
        Slot.decode("garbage")


def test_each_worker_has_its_own_files_and_worker_0_keeps_a_single_process_s() -> None:
    snapshot, history = Path("/d/hlbook_snapshot.json"), Path("/d/hlbook_history.sqlite")
    assert worker_paths(snapshot, history, 0) == (snapshot, history)
    assert worker_paths(snapshot, history, 2) == (
        Path("/d/hlbook_snapshot.worker2.json"),
        Path("/d/hlbook_history.worker2.sqlite"),
    )
    assert worker_paths(snapshot, None, 1) == (Path("/d/hlbook_snapshot.worker1.json"), None)


def test_only_worker_0_publishes_to_nats(tmp_path: Path) -> None:
    from hlbook.config import Config
    from hlbook.shell.workers import worker_config

    config = Config(node_data=tmp_path, publish=("nats://127.0.0.1:4222",), port=0)
    configs = [worker_config(config, Slot(i, 2, 0, 8000, tmp_path)) for i in range(2)]
    assert [c.publish for c in configs] == [("nats://127.0.0.1:4222",), ()]
    assert {c.port for c in configs} == {8000}
    assert configs[0].snapshot_out != configs[1].snapshot_out


def test_a_worker_that_cannot_start_is_not_restarted() -> None:
    policy = RestartPolicy(2)
    policy.started(0, now=0.0)
    decision = policy.exited(0, now=0.5)
    assert not decision.restart
    assert "before it was up" in decision.reason


def test_restarts_back_off_while_a_worker_keeps_dying_young() -> None:
    policy = RestartPolicy(1, first_delay=0.2, max_delay=1.0, stable_after=10.0)
    now = 0.0
    policy.started(0, now)
    policy.up(0)
    now += 100.0  # a long life: restarted at once
    first = policy.exited(0, now)
    assert (first.restart, first.delay) == (True, 0.2)
    assert policy.restarts(0) == 1
    delays = []
    for _ in range(5):  # then dies within a second, again and again
        policy.started(0, now)
        now += 1.0
        delays.append(policy.exited(0, now).delay)
    assert delays == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.restarts(0) == 6
    # Died before it was up, but not in its first start: still restarted.
    policy.started(0, now)
    assert policy.exited(0, now + 0.1).restart
    # A long life again resets the delay.
    policy.started(0, now)
    policy.up(0)
    assert policy.exited(0, now + 60.0).delay == 0.2


def test_a_restarted_worker_takes_no_connection_until_its_books_are_ready() -> None:
    admission = Admission(3)
    # First start: no worker is ready, so every worker accepts at once (health and 503
    # for a while, and reconnecting clients spread over all of them).
    assert [admission.started(i) for i in range(3)] == [True, True, True]
    admission.ready(0)
    admission.ready(2)
    assert admission.ready_count == 2
    # Worker 1 dies and is started again while 0 and 2 serve: held.
    assert admission.exited(1) == []
    assert admission.started(1) is False
    assert not admission.accepting(1)
    # Worker 0 dies too: 2 still serves, nobody needs to open early.
    assert admission.exited(0) == []
    assert admission.started(0) is False
    # The last ready worker dies: the held ones accept now (a 503 beats a refused
    # connection), each named once.
    assert admission.exited(2) == [0, 1]
    assert admission.accepting(0)
    assert admission.accepting(1)
    assert admission.exited(0) == []  # already accepting: nothing more to tell
    # Started while none is ready: accepts at once.
    assert admission.started(2) is True
    admission.ready(1)
    assert admission.ready_count == 1
    assert admission.started(0) is False  # 1 is ready again: held


def test_a_worker_that_stops_answering_is_named_once_after_the_timeout() -> None:
    liveness = Liveness(2, timeout=10.0, first_answer=30.0)
    assert liveness.interval == 1.0
    assert Liveness(1, timeout=3.0).interval == 0.3
    now = 0.0
    liveness.started(0, now)
    liveness.started(1, now)
    # Checks every second; worker 0 answers each time, worker 1 answers until t=5.
    found: list[tuple[float, Silent]] = []
    while now < 40.0:
        now += 1.0
        liveness.beat(0, now)
        if now <= 5.0:
            liveness.beat(1, now)
        found += [(now, silent) for silent in liveness.overdue(now)]
    assert found == [(15.0, Silent(1, 10.0, answered=True))]  # named once, not again
    # Restarted: watched again; a new worker has first_answer to answer at all.
    liveness.started(1, now)
    for _ in range(29):
        now += 1.0
        liveness.beat(0, now)
        assert liveness.overdue(now) == []
    now += 1.0
    liveness.beat(0, now)
    assert liveness.overdue(now) == [Silent(1, 30.0, answered=False)]
    # An exited worker is not watched.
    liveness.started(1, now)
    liveness.exited(1)
    now += 100.0
    liveness.beat(0, now)
    assert liveness.overdue(now) == []


def test_a_slow_answer_is_not_a_dead_worker() -> None:
    liveness = Liveness(1, timeout=10.0)
    liveness.started(0, 0.0)
    liveness.beat(0, 1.0)
    for now in range(2, 11):
        assert liveness.overdue(float(now)) == []
    liveness.beat(0, 10.9)  # 9.9 s of silence (a long stall): still alive
    # Silent from then on: named at the first check 10 s after its last answer.
    assert [now for now in range(11, 40) if liveness.overdue(float(now))] == [21]


def test_the_supervisor_s_own_stall_does_not_count_against_a_worker() -> None:
    # A suspended machine, or the supervisor stopped: its pings did not go out either.
    liveness = Liveness(1, timeout=10.0)
    liveness.started(0, 0.0)
    liveness.beat(0, 1.0)
    assert liveness.overdue(1.0) == []
    assert liveness.overdue(2.0) == []
    # The next check comes 60 s late: 58 s of it (all but two intervals) are the
    # supervisor's, so the worker has been silent for 3 s as far as it can tell.
    assert liveness.overdue(62.0) == []
    liveness.beat(0, 62.5)  # the answer to the first ping after the stall
    assert liveness.overdue(63.0) == []
    # Without answers, it is named once 10 s of the supervisor's own time have passed.
    results = {now: liveness.overdue(float(now)) for now in range(64, 75)}
    assert [now for now, found in results.items() if found] == [73]
    with pytest.raises(ValueError, match="positive"):
        Liveness(1, timeout=0.0)


def test_a_held_socket_gets_no_connection_until_it_listens() -> None:
    # The kernel gives SO_REUSEPORT connections to listening sockets only: while a
    # restarted worker's books load, its bound socket is skipped.
    import socket

    import trio

    from hlbook.shell.workers import bind_shared, reserve_port

    port, reserved = reserve_port("127.0.0.1", 0)

    async def main() -> None:
        (held,) = bind_shared("127.0.0.1", port)
        assert not held.is_open
        with pytest.raises(ConnectionRefusedError):  # nobody listens on the port
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        held.open()
        held.open()  # again: nothing
        assert held.is_open
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        with trio.fail_after(5):
            stream = await held.accept()
        client.sendall(b"x")
        assert await stream.receive_some(1) == b"x"
        client.close()
        await stream.aclose()
        await held.aclose()
        (never,) = bind_shared("127.0.0.1", port)
        await never.aclose()  # closed before it ever listened
        with pytest.raises(trio.ClosedResourceError):
            await never.accept()

    try:
        trio.run(main)
    finally:
        for sock in reserved:
            sock.close()


def _exposition(sent: float, queue: float) -> str:
    registry = CollectorRegistry()
    counter = Counter("hlbook_messages_sent", "Messages", ["channel"], registry=registry)
    counter.labels("l2Book").inc(sent)
    Gauge("hlbook_height", "Height", registry=registry).set(queue)
    Histogram("hlbook_book_task_seconds", "Time", buckets=(0.1, 1.0), registry=registry).observe(
        0.5
    )
    return generate_latest(registry).decode()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_metrics_of_the_set_label_every_series_by_worker() -> None:
    reports = [
        WorkerReport(0, generation=0, metrics=_exposition(5, 100)),
        WorkerReport(1, generation=2, metrics=_exposition(7, 101)),
        WorkerReport(2),  # did not answer
    ]
    text = merge_metrics(reports)
    samples = _samples(text)
    assert samples[("hlbook_messages_sent_total", (("channel", "l2Book"), ("worker", "0")))] == 5
    assert samples[("hlbook_messages_sent_total", (("channel", "l2Book"), ("worker", "1")))] == 7
    assert samples[("hlbook_height", (("worker", "1"),))] == 101
    assert samples[("hlbook_book_task_seconds_bucket", (("le", "1.0"), ("worker", "0")))] == 1
    assert samples[("hlbook_workers", ())] == 3
    assert samples[("hlbook_worker_up", (("worker", "0"),))] == 1
    assert samples[("hlbook_worker_up", (("worker", "2"),))] == 0
    assert samples[("hlbook_worker_restarts_total", (("worker", "1"),))] == 2
    assert not any(name == "hlbook_worker_restarts_total" and ("worker", "2") in labels
                   for name, labels in samples)  # fmt: skip
    # One HELP/TYPE per family, whatever the number of workers.
    assert text.count(b"# TYPE hlbook_messages_sent_total counter") == 1
    assert text.count(b"# TYPE hlbook_book_task_seconds histogram") == 1


def test_health_of_the_set() -> None:
    def health(clients: int, sent: int, live: bool) -> dict[str, object]:
        return {
            "status": "live" if live else "bootstrapping",
            "live": live,
            "height": 10,
            "clients": clients,
            "subscriptions": clients * 2,
            "queued_messages": 0,
            "uptime_s": 1.0,
            "connections": {"accepted": clients, "messages_sent": sent},
        }

    own = {**health(3, 30, True), "worker": 0, "accepting": True}
    reports = [
        WorkerReport(1, generation=1, health={**health(4, 40, False), "accepting": False}),
        WorkerReport(0, generation=0, health=own),
        WorkerReport(2),
    ]
    result = aggregate_health(own, reports)
    assert result["worker"] == 0
    assert result["clients"] == 3  # the answering worker's own, as a single process says
    workers = result["workers"]
    assert (workers["count"], workers["up"], workers["live"], workers["restarts"]) == (3, 2, 1, 1)
    assert (workers["clients"], workers["messages_sent"], workers["accepted"]) == (7, 70, 7)
    assert [entry["worker"] for entry in workers["each"]] == [0, 1, 2]
    assert workers["each"][1]["status"] == "bootstrapping"
    assert [entry.get("accepting") for entry in workers["each"]] == [True, False, None]
    assert workers["each"][2] == {"worker": 2, "up": False}


def test_the_workers_setting_is_checked_like_every_other(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hlbook.cli import main

    assert main(["serve", "--workers", "0"]) == 2
    assert capsys.readouterr().err == "hlbook serve: --workers: must be >= 1 (or auto): 0\n"
    assert main(["serve", "--workers", "lots"]) == 2
    assert "expected a number of processes or auto, got 'lots'" in capsys.readouterr().err
    monkeypatch.setenv("HLBOOK_WORKERS", "auto")
    assert main(["serve", "--print-config"]) == 0
    assert 'workers = "auto"' in capsys.readouterr().out
    with pytest.raises(SystemExit):  # demo runs in one process: no such flag
        main(["demo", "--workers", "2"])


def test_a_port_a_workers_set_holds_is_refused_to_a_second_set() -> None:
    # SO_REUSEPORT let a second set bind the port beside the first: the kernel then split
    # clients between two unrelated servers (found by an operator walkthrough).
    import trio

    from hlbook.errors import StartupError
    from hlbook.shell.workers import bind_shared, reserve_port

    port, held = reserve_port("127.0.0.1", 0)

    async def first_set_serving() -> None:
        listeners = bind_shared("127.0.0.1", port)  # a worker of the set
        for listener in listeners:
            listener.open()
        try:
            with pytest.raises(StartupError, match=r"another hlbook --workers set\?"):
                reserve_port("127.0.0.1", port)
        finally:
            for listener in listeners:
                await listener.aclose()

    try:
        trio.run(first_set_serving)
    finally:
        for sock in held:
            sock.close()
    again, reserved = reserve_port("127.0.0.1", port)  # free again
    assert again == port
    for sock in reserved:
        sock.close()
