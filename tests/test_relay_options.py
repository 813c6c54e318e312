"""Connect options (user/password, token, TLS) against a real nats-server; the server runner."""

from pathlib import Path

import pytest
import trio
import trustme
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats_support import nats_server, options, small_blocks, until

from hlbook.errors import StartupError
from hlbook.relay import (
    BlockMessage,
    Consumer,
    NatsConnection,
    NatsOptions,
    NatsUnavailableError,
    open_nats,
    open_publisher,
)
from hlbook.relay.server import find_nats_server

pytestmark = pytest.mark.slow


async def _server_id(connection: NatsConnection) -> str:
    async def _info(nc: Client, _js: JetStreamContext) -> str:
        await nc.flush()
        return str(nc._server_info.get("server_id"))

    with trio.fail_after(30):
        await connection.wait_connected()
    return await connection.call(_info)


def test_options_are_validated_and_turned_into_connect_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scheme"):
        NatsOptions(servers=("127.0.0.1:4222",))
    with pytest.raises(ValueError, match="go together"):
        NatsOptions(tls_cert=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="needs a user"):
        NatsOptions(password="p")
    plain = NatsOptions(servers=("nats://a:1", "nats://b:2"), user="u", password="p")
    kwargs = plain.connect_kwargs()
    assert kwargs["servers"] == ["nats://a:1", "nats://b:2"]
    assert (kwargs["user"], kwargs["password"], kwargs["max_reconnect_attempts"]) == ("u", "p", -1)
    assert "tls" not in kwargs
    creds = NatsOptions(token="t", creds_file=tmp_path / "x.creds").connect_kwargs()
    assert (creds["token"], creds["user_credentials"]) == ("t", str(tmp_path / "x.creds"))
    assert NatsOptions(servers=("tls://a:1",)).uses_tls
    described = NatsOptions(servers=("nats://u:secret@host:4222",)).describe()
    assert described == "nats://host:4222"


def test_files_that_cannot_be_used_are_refused_before_anything_starts(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    for refused, what in (
        (NatsOptions(creds_file=missing), "credentials file"),
        (NatsOptions(tls_ca=missing), "TLS CA"),
        (NatsOptions(tls_cert=missing, tls_key=missing), "TLS certificate"),
    ):
        with pytest.raises(StartupError, match=f"cannot read the {what} .*missing.pem"):
            refused.check_files()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(StartupError, match="cannot load the TLS files"):
        NatsOptions(tls_ca=garbage).check_files()
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    NatsOptions(tls_ca=ca_file).check_files()  # usable: no error


async def test_user_and_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with nats_server(tmp_path, user="relay", password="s3cret") as server:
        async with open_nats(options(server, user="relay", password="s3cret")) as good:
            assert await _server_id(good)
        async with open_nats(options(server, user="relay", password="wrong")) as bad:
            with trio.fail_after(30):
                await until(lambda: bad.stats.failed_connects >= 1)
            assert not bad.connected
            with trio.fail_after(30):  # nats-py reports it as a plain nats.errors.Error
                await until(lambda: "Authorization Violation" in (bad.stats.last_error or ""))
            # ... and the operator reads it in the log (nats-py retries by itself, silently).
            said = [r.getMessage() for r in caplog.records if r.name == "hlbook.relay.client"]
            assert any(
                "cannot connect to" in line and "Authorization Violation" in line for line in said
            ), said
            errors = bad.stats.errors
            with trio.fail_after(30):
                await until(lambda: bad.stats.errors >= errors + 3)
            repeated = [r for r in caplog.records if "Authorization Violation" in r.getMessage()]
            assert len(repeated) == 1  # once per kind of error, not once per retry

            async def anything(_nc: Client, _js: JetStreamContext) -> None:
                pass

            with pytest.raises(NatsUnavailableError):
                await bad.call(anything)


async def test_token(tmp_path: Path) -> None:
    async with nats_server(tmp_path, token="tok-123") as server:
        async with open_nats(options(server, token="tok-123")) as good:
            assert await _server_id(good)
        async with open_nats(options(server)) as anonymous:
            with trio.fail_after(30):
                await until(lambda: anonymous.stats.failed_connects >= 1)
            assert not anonymous.connected


async def test_tls_with_a_private_ca_publishes_and_consumes(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    async with nats_server(tmp_path, tls_cert=cert_file, tls_key=key_file) as server:
        assert server.url.startswith("tls://")
        tls = options(server, tls_ca=ca_file)
        blocks = small_blocks(5_000, 3)
        async with open_publisher(tls, start_height=4_999) as publisher:
            publisher.put_snapshot(4_999, b"[4999,[]]")
            for item in blocks:
                publisher.offer(item)
            with trio.fail_after(30):
                await publisher.flush()
                await publisher.flush_snapshots()
        async with open_nats(tls) as connection:
            consumer = Consumer(connection, fetch_wait=0.5)
            heights = []
            with trio.fail_after(30):
                async for event in consumer:
                    if isinstance(event, BlockMessage):
                        heights.append(event.block.height)
                        if len(heights) == 3:
                            break
        assert heights == [5_000, 5_001, 5_002]
        # Without the CA the server's certificate is not trusted: no connection, and
        # attempts go on (nats-py alone stops trying after this failure).
        async with open_nats(options(server, attempt_timeout=1.0)) as untrusting:
            with trio.fail_after(30):
                await until(lambda: untrusting.stats.failed_connects >= 3)
            assert not untrusting.connected


async def test_server_restarts_on_the_same_port_and_store(tmp_path: Path) -> None:
    async with nats_server(tmp_path) as server:
        port, store = server.port, server.store_dir
        assert port > 0
        assert server.running
        first_pid = server.pid
        server.kill()
        await server.wait()
        assert not server.running
        await server.start()
        assert (server.port, server.store_dir, server.starts) == (port, store, 2)
        assert server.pid != first_pid
        assert (store / "jetstream").is_dir()
        await server.stop()
        assert not server.running
    assert not server.running


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HLBOOK_NATS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(StartupError, match="HLBOOK_NATS_SERVER"):
        find_nats_server()
    monkeypatch.delenv("HLBOOK_NATS_SERVER")
    assert find_nats_server().name == "nats-server"
