"""TLS as an operator sees it: certificate dates warned about, failed handshakes logged.

Sans-I/O rules with chosen times first (certificates from ``trustme`` with chosen
validity, handshakes through real OpenSSL over memory BIOs), then hlbook serving over
loopback: in-process, and as a process whose stderr is what an operator reads.
"""

import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
from test_cli import hlbook_process

import hlbook
from hlbook.server.tls import (
    CertificateWatch,
    HandshakeFailureLog,
    Problem,
    Validity,
    certificate_validities,
    check_certificate,
    describe_handshake_error,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _cert(
    ca: trustme.CA,
    not_before: datetime,
    not_after: datetime,
    key_type: trustme.KeyType = trustme.KeyType.ECDSA,
) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", not_before=not_before, not_after=not_after, key_type=key_type)


def _write(tmp_path: Path, cert: trustme.LeafCert) -> tuple[Path, Path]:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


# -- certificate dates (sans I/O) -----------------------------------------------------------


@pytest.mark.parametrize("key_type", [trustme.KeyType.ECDSA, trustme.KeyType.RSA])
def test_the_validity_of_each_certificate_in_a_chain_is_read(key_type: trustme.KeyType) -> None:
    root = trustme.CA(key_type=key_type)
    intermediate = root.create_child_ca(key_type=key_type)
    # 2051: after 2049, RFC 5280 dates are GeneralizedTime instead of UTCTime.
    start, end = datetime(1999, 12, 31, 23, 59, 58, tzinfo=UTC), datetime(2051, 2, 3, tzinfo=UTC)
    leaf = _cert(intermediate, start, end, key_type=key_type)
    pem = leaf.private_key_and_cert_chain_pem.bytes().decode()
    validities = certificate_validities(pem)
    assert len(validities) == 2  # the leaf and the intermediate; the key is skipped
    assert validities[0] == Validity(start, end)
    assert validities[1].not_after > NOW  # the intermediate's own dates, trustme's defaults


def test_what_is_not_a_certificate_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no -----BEGIN CERTIFICATE"):
        certificate_validities("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="certificate 1"):
        certificate_validities("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")


def test_expired_not_yet_valid_and_expiring_soon_at_a_given_time() -> None:
    validity = Validity(NOW - 300 * DAY, NOW + 13 * DAY)
    soon = check_certificate(validity, NOW)
    assert soon is not None
    assert soon.problem is Problem.EXPIRES_SOON
    text = soon.describe("/etc/hlbook/cert.pem")
    assert "/etc/hlbook/cert.pem expires on 2026-03-14 12:00:00 UTC (notAfter), in 13 days" in text
    assert check_certificate(validity, NOW - 2 * DAY) is None  # 15 days left
    assert check_certificate(validity, NOW - 2 * DAY, warn_within=20 * DAY) is not None
    expired = check_certificate(validity, NOW + 14 * DAY)
    assert expired is not None
    assert expired.problem is Problem.EXPIRED
    assert "cert.pem expired on 2026-03-14 12:00:00 UTC (notAfter)" in expired.describe("cert.pem")
    early = check_certificate(validity, NOW - 301 * DAY)
    assert early is not None
    assert early.problem is Problem.NOT_YET_VALID
    assert "not valid before 2025-05-05 12:00:00 UTC (notBefore), 24 h from now" in (
        early.describe("cert.pem")
    )


def test_the_watch_warns_at_start_on_each_change_and_daily_while_it_lasts() -> None:
    leaf = Validity(NOW - 300 * DAY, NOW + 20 * DAY)
    chain = Validity(NOW - 300 * DAY, NOW + 3 * DAY)  # an intermediate that ends first
    watch = CertificateWatch("cert.pem", [leaf, chain])
    first = watch.check(NOW)
    assert len(first) == 1
    assert "cert.pem (chain certificate 2 of 2) expires on" in first[0]
    assert watch.check(NOW + timedelta(hours=1)) == []  # checked hourly: said once a day
    assert len(watch.check(NOW + DAY)) == 1
    expired = watch.check(NOW + 3 * DAY + timedelta(hours=1))  # a change: at once
    assert len(expired) == 1
    assert "(chain certificate 2 of 2) expired on" in expired[0]
    assert watch.check(NOW + 3 * DAY + timedelta(hours=2)) == []
    both = watch.check(NOW + 6 * DAY + timedelta(hours=2))  # the leaf now within 14 days
    assert [line.split(" expire")[0] for line in both] == [
        "TLS certificate cert.pem",
        "TLS certificate cert.pem (chain certificate 2 of 2)",
    ]
    assert CertificateWatch("ok.pem", [leaf]).check(NOW) == []


# -- failed handshakes (sans I/O) -----------------------------------------------------------


def test_failed_handshakes_the_first_at_once_then_one_line_a_minute() -> None:
    failures = HandshakeFailureLog(interval=60.0)
    assert failures.tick(0.0) is None  # nothing failed
    first = failures.failed(100.0, "10.0.0.1:5000", "plain HTTP")
    assert first == "TLS handshake failed from 10.0.0.1:5000: plain HTTP"
    assert failures.failed(101.0, "10.0.0.2:5001", "bad") is None
    assert failures.failed(130.0, "10.0.0.3:5002", "worse") is None
    assert failures.tick(159.0) is None
    assert failures.tick(160.0) == (
        "2 TLS handshakes failed in the last 60 s; the last from 10.0.0.3:5002: worse"
    )
    assert failures.tick(220.0) is None  # none since
    # After a quiet minute, the next is logged at once again.
    assert failures.failed(400.0, "10.0.0.4:5003", "again") == (
        "TLS handshake failed from 10.0.0.4:5003: again"
    )
    assert failures.failed(420.0, "10.0.0.5:5004", "one more") is None
    assert failures.tick(460.0) == "TLS handshake failed from 10.0.0.5:5004: one more"


def _handshake_error(server: ssl.SSLContext, client: ssl.SSLContext | None, sent: bytes) -> Any:
    """The server side's error in a real OpenSSL handshake over memory BIOs, with a
    ``client`` context (its alert included) or, without one, the bytes ``sent``."""
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    if client is None:
        server_in.write(sent)
        with pytest.raises(ssl.SSLError) as caught:
            server_side.do_handshake()
        return caught.value
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    for _ in range(5):
        for side, out, peer_in in (
            (client_side, client_out, server_in),
            (server_side, server_out, client_in),
        ):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if side is server_side:
                    return exc
            if data := out.read():
                peer_in.write(data)
    raise AssertionError("the handshake did not fail")


def test_handshake_errors_in_words(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _cert(ca, NOW - 900 * DAY, NOW - 500 * DAY).configure_cert(server)  # expired
    plain = _handshake_error(server, None, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    assert describe_handshake_error(plain) == (
        "plain HTTP sent to the TLS port (use https:// or wss://) (HTTP_REQUEST)"
    )
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    refused = describe_handshake_error(_handshake_error(server, trusting, b""))
    assert refused == (
        "the client refused the handshake: alert 'certificate expired'"
        " (SSLV3_ALERT_CERTIFICATE_EXPIRED)"
    )
    unknown = describe_handshake_error(_handshake_error(server, ssl.create_default_context(), b""))
    assert "alert 'unknown ca'" in unknown
    assert describe_handshake_error(None) == "the client closed the connection during the handshake"


# -- hlbook serving -------------------------------------------------------------------------


async def _plain_http(port: int) -> bytes:
    """What a plain-HTTP client gets from the TLS port (the connection closes)."""
    plain = await trio.open_tcp_stream("127.0.0.1", port)
    async with plain:
        await plain.send_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = b""
        with trio.fail_after(10):
            while chunk := await plain.receive_some(4096):
                answer += chunk
    return answer


def _unverified() -> ssl.SSLContext:
    # A client that takes any certificate: the one served here is expired on purpose.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def test_an_expired_certificate_is_served_with_a_warning_and_failures_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hlbook.server")
    ca = trustme.CA()
    now = datetime.now(UTC)
    ended = (now - 40 * DAY).replace(microsecond=0)
    cert, key = _write(tmp_path, _cert(ca, now - 400 * DAY, ended))
    # trio's client raises on the certificate before its alert reaches the server, which
    # then counts the failure when the handshake times out: 1 s here, not the default 10.
    config = hlbook.Config(
        node_data=tmp_path / "data",
        port=0,
        tls_cert=cert,
        tls_key=key,
        history="none",
        handshake_timeout=1.0,
    )
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(hlbook.serve, config)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert f"TLS certificate {cert} expired on {ended:%Y-%m-%d %H:%M:%S} UTC (notAfter)" in (
            "\n".join(warnings)
        )
        assert b"HTTP/1.1" not in await _plain_http(handle.port)
        # The server closed that connection after logging why.
        failed = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
        assert len(failed) == 1
        assert failed[0].startswith("TLS handshake failed from 127.0.0.1:")
        assert failed[0].endswith(
            ": plain HTTP sent to the TLS port (use https:// or wss://) (HTTP_REQUEST)"
        )
        # A client that checks the certificate refuses it: counted, not logged again within
        # the minute. The server keeps serving those that accept it.
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        checking = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", handle.port, ssl_context=trusting
        )
        with pytest.raises(trio.BrokenResourceError) as refused:
            await checking.do_handshake()
        assert "certificate has expired" in str(refused.value.__cause__)
        with trio.fail_after(10):  # the server closes it once it has counted the failure
            while await checking.transport_stream.receive_some(4096):
                pass
        await checking.aclose()
        async with httpx.AsyncClient(verify=_unverified()) as client:
            response = await client.get(f"{handle.http_url}/health")
            assert response.status_code in (200, 503)  # no node here: books not loaded
        assert handle.health()["connections"]["tls_failures"] == 2
        assert len([r for r in caplog.records if "TLS handshake" in r.getMessage()]) == 1
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_an_operator_reads_both_on_stderr(tmp_path: Path) -> None:
    ca = trustme.CA()
    now = datetime.now(UTC)
    starts = (now + 3 * DAY).replace(microsecond=0)  # a clock, or a certificate, off
    cert, key = _write(tmp_path, _cert(ca, starts, now + 400 * DAY))
    async with hlbook_process(
        "serve",
        "--node-data", str(tmp_path / "data"),
        "--history", "none",
        "--port", "0",
        "--tls-cert", str(cert),
        "--tls-key", str(key),
    ) as proc:  # fmt: skip
        port = int((await proc.wait_for(r"serving wss://127\.0\.0\.1:(\d+)/ws")).group(1))
        warning = await proc.wait_for(r"WARNING .*TLS certificate (\S+) is not valid before (.*)")
        assert warning.group(1) == str(cert)
        assert warning.group(2).startswith(f"{starts:%Y-%m-%d %H:%M:%S} UTC (notBefore)")
        assert b"HTTP/1.1" not in await _plain_http(port)
        await proc.wait_for(
            r"INFO .*TLS handshake failed from 127\.0\.0\.1:\d+: plain HTTP sent to the TLS port"
        )
        async with httpx.AsyncClient(verify=_unverified()) as client:
            response = await client.get(f"https://127.0.0.1:{port}/health")
            assert response.status_code in (200, 503)
        assert not any("Traceback" in line for line in proc.lines)
