"""The decisions of ``--workers N`` (no processes): counts, slots, restarts, merged figures."""

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hlbook.workers import (
    RestartPolicy,
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
    assert "before it could listen" in decision.reason


def test_restarts_back_off_while_a_worker_keeps_dying_young() -> None:
    policy = RestartPolicy(1, first_delay=0.2, max_delay=1.0, stable_after=10.0)
    now = 0.0
    policy.started(0, now)
    policy.listening(0)
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
    # Died before listening, but not in its first start: still restarted.
    policy.started(0, now)
    assert policy.exited(0, now + 0.1).restart
    # A long life again resets the delay.
    policy.started(0, now)
    policy.listening(0)
    assert policy.exited(0, now + 60.0).delay == 0.2


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

    own = {**health(3, 30, True), "worker": 0}
    reports = [
        WorkerReport(1, generation=1, health=health(4, 40, False)),
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
    from hlbook.shell.workers import open_shared_listeners, reserve_port

    port, held = reserve_port("127.0.0.1", 0)

    async def first_set_serving() -> None:
        listeners = await open_shared_listeners("127.0.0.1", port)  # a worker of the set
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
