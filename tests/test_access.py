"""Tokens, origins, per-address limits and TLS: sans-I/O rules, then real clients over loopback."""

import asyncio
import base64
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
import websockets
from fixtures import MainnetSlice
from server_support import replay_server, request, sim_and_server, subscribe
from trio_websocket import ConnectionRejected, open_websocket_url

import hlbook
from hlbook.errors import StartupError
from hlbook.server.access import AccessPolicy, request_token
from hlbook.server.slots import Refusal, Slot, Slots

TOKEN = "s3cret-token"

# -- the rules (sans I/O) -------------------------------------------------------------------


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in values.items()]


def test_tokens_by_header_query_or_basic_auth() -> None:
    basic = base64.b64encode(f"hl:{TOKEN}".encode()).decode()
    assert request_token("", headers(authorization=f"Bearer {TOKEN}")) == TOKEN
    assert request_token(f"a=1&token={TOKEN}", []) == TOKEN
    assert request_token("", headers(authorization=f"Basic {basic}")) == TOKEN
    assert request_token("", headers(authorization="Basic !!!")) is None
    assert request_token("token=", []) is None


def test_the_policy_needs_a_valid_token_except_for_open_health() -> None:
    policy = AccessPolicy(tokens=("a", TOKEN))
    assert policy.decide(b"/info", headers(authorization=f"Bearer {TOKEN}"), scheme="http") is None
    assert policy.decide(b"/ws?token=a", [], scheme="http") is None
    wrong = headers(authorization="Bearer nope")
    for target, given in ((b"/info", []), (b"/ws?token=nope", []), (b"/health", wrong)):
        denial = policy.decide(target, given, scheme="http")
        assert denial is not None
        assert denial.status == 401
    assert policy.decide(b"/", [], scheme="http", page=True) is None  # the page holds no data
    open_health = AccessPolicy(tokens=(TOKEN,), public_health=True)
    assert open_health.decide(b"/health", [], scheme="http") is None
    assert open_health.decide(b"/metrics", [], scheme="http") is None
    assert open_health.decide(b"/info", [], scheme="http") is not None


def test_a_401_says_whether_no_token_came_or_which_one_was_refused() -> None:
    policy = AccessPolicy(tokens=(TOKEN,))
    refusals = {
        "none": policy.decide(b"/info", [], scheme="http"),
        "empty bearer": policy.decide(
            b"/info?token=", headers(authorization="Bearer "), scheme="http"
        ),
        "no scheme": policy.decide(b"/info", headers(authorization="nope"), scheme="http"),
        "bad basic": policy.decide(b"/info", headers(authorization="Basic !!!"), scheme="http"),
        "wrong bearer": policy.decide(
            b"/info", headers(authorization="Bearer nope"), scheme="http"
        ),
        "wrong query": policy.decide(b"/ws?token=nope", [], scheme="http"),
        "wrong basic": policy.decide(
            b"/info",
            headers(authorization="Basic " + base64.b64encode(b"hl:nope").decode()),
            scheme="http",
        ),
    }
    msgs, challenges = {}, {}
    for name, denial in refusals.items():
        assert denial is not None
        assert (denial.status, denial.code) == (401, "unauthorized")  # as before
        assert "nope" not in denial.msg  # a token is never repeated
        msgs[name], challenges[name] = denial.msg, denial.authenticate
    assert msgs["none"].startswith("no token was sent; this server requires one: send")
    assert challenges["none"] == "Bearer"  # RFC 6750: no error without credentials
    assert msgs["empty bearer"].startswith(
        "no token found (the Authorization header: Bearer with no token)"
    )
    assert "(the Authorization header: not Bearer or Basic)" in msgs["no scheme"]
    assert "(the Authorization header: Basic is not base64 of user:password)" in msgs["bad basic"]
    assert msgs["wrong bearer"] == (
        "the token sent (Authorization: Bearer) is not accepted by this server"
    )
    assert msgs["wrong query"] == "the token sent (?token=) is not accepted by this server"
    assert msgs["wrong basic"] == "the token sent (Basic auth) is not accepted by this server"
    assert challenges["wrong query"] == 'Bearer error="invalid_token"'
    # The header comes first: a wrong one is refused even with a good ?token=.
    both = policy.decide(
        f"/ws?token={TOKEN}".encode(), headers(authorization="Bearer x"), scheme="http"
    )
    assert both is not None
    assert "(Authorization: Bearer)" in both.msg


@pytest.mark.parametrize(
    "authorization",
    ["nope", "Bearer", "Basic !!!", "Basic " + base64.b64encode(b":").decode()],
)
def test_an_authorization_header_without_a_token_lets_a_good_query_token_through(
    authorization: str,
) -> None:
    # Malformed or empty Basic had refused a good ?token= ("no token found") while an
    # empty Bearer or an unknown scheme let it through: the same rule for each.
    policy = AccessPolicy(tokens=(TOKEN,))
    found = headers(authorization=authorization)
    assert policy.decide(f"/ws?token={TOKEN}".encode(), found, scheme="http") is None
    denial = policy.decide(b"/ws?token=nope", found, scheme="http")
    assert denial is not None
    assert denial.msg == "the token sent (?token=) is not accepted by this server"


def test_origins_allow_list_and_the_pages_own_origin() -> None:
    policy = AccessPolicy(allow_origins=("https://desk.example/",))
    ok = headers(origin="https://desk.example", host="hl:8000")
    own = headers(origin="http://hl:8000", host="hl:8000")
    other = headers(origin="https://evil.example", host="hl:8000")
    assert policy.decide(b"/ws", ok, scheme="http") is None
    assert policy.decide(b"/ws", own, scheme="http") is None
    assert policy.decide(b"/ws", [], scheme="http") is None  # not a browser
    denial = policy.decide(b"/ws", other, scheme="http")
    assert denial is not None
    assert denial.status == 403
    assert AccessPolicy().decide(b"/ws", other, scheme="http") is None  # no list: any


def test_per_address_limit() -> None:
    slots = Slots(max_connections=10, max_half_open=10, max_per_address=2)
    a1, a2 = slots.admit(lambda: None, "10.0.0.1"), slots.admit(lambda: None, "10.0.0.1")
    assert isinstance(a1, Slot)
    assert isinstance(a2, Slot)
    assert slots.admit(lambda: None, "10.0.0.1") is Refusal.PER_ADDRESS
    assert isinstance(slots.admit(lambda: None, "10.0.0.2"), Slot)
    slots.release(a1)
    assert isinstance(slots.admit(lambda: None, "10.0.0.1"), Slot)


# -- real clients ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_tokens_over_http_and_websocket(tmp_path: Path) -> None:
    from hyperliquid.info import Info
    from hyperliquid.utils.error import ClientError

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    async with sim_and_server(tmp_path, tokens=("other", f"@{token_file}")) as (handle, _):
        async with httpx.AsyncClient(base_url=handle.http_url) as client:
            refused = await client.post("/info", json={"type": "l2Book", "coin": "BTC"})
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in refused.text
            assert (await client.get("/health")).status_code == 401
            page = await client.get("/")  # the live page is open; its requests are not
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            ok = await client.post(
                "/info",
                json={"type": "l2Book", "coin": "BTC"},
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            assert ok.status_code == 200
        # The official SDK cannot set headers: the token as the URL's password works.
        base = handle.http_url.replace("http://", f"http://hl:{TOKEN}@")
        info = await trio.to_thread.run_sync(lambda: Info(base_url=base, skip_ws=True))
        assert (await trio.to_thread.run_sync(info.l2_snapshot, "BTC"))["coin"] == "BTC"
        with pytest.raises(ClientError) as denied:
            await trio.to_thread.run_sync(lambda: Info(base_url=handle.http_url, skip_ws=True))
        assert denied.value.status_code == 401
        # WebSocket: refused before the upgrade without a token; ?token= and headers work.
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(handle.url):
                pass
        assert rejected.value.status_code == 401
        async with open_websocket_url(f"{handle.url}?token={TOKEN}") as ws:
            assert await request(ws, {"method": "ping"}) == {"channel": "pong"}

        async def with_header() -> Any:
            async with websockets.connect(
                handle.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
            ) as client_ws:
                await client_ws.send(json.dumps(subscribe("BTC", "l2Book")))
                return json.loads(await client_ws.recv())

        reply = await trio.to_thread.run_sync(lambda: asyncio.run(with_header()))
        assert reply["channel"] == "subscriptionResponse"
        assert handle.health()["connections"]["denied"] >= 4


@pytest.mark.slow
async def test_public_health_and_wrong_origins(tmp_path: Path, mainnet: MainnetSlice) -> None:
    settings: dict[str, Any] = {
        "tokens": (TOKEN,),
        "public_health": True,
        "allow_origins": ("https://desk.example",),
    }
    async with (
        replay_server(tmp_path, mainnet, **settings) as (handle, _node),
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        assert (await client.get("/health")).status_code == 200
        auth = {"authorization": f"Bearer {TOKEN}"}
        cors = await client.post(
            "/info",
            json={"type": "l2Book", "coin": "BTC"},
            headers=auth | {"origin": "https://desk.example"},
        )
        assert cors.status_code == 200
        assert cors.headers["access-control-allow-origin"] == "https://desk.example"
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(
                f"{handle.url}?token={TOKEN}", extra_headers=[(b"Origin", b"https://evil.example")]
            ):
                pass
        assert rejected.value.status_code == 403


@pytest.mark.slow
async def test_connections_per_address(tmp_path: Path, mainnet: MainnetSlice) -> None:
    async with replay_server(tmp_path, mainnet, max_connections_per_ip=2) as (handle, _node):
        async with (
            open_websocket_url(handle.url),
            open_websocket_url(handle.url),
            httpx.AsyncClient(base_url=handle.http_url) as client,
        ):
            response = await client.get("/health")
            assert response.status_code == 429
            assert response.json()["code"] == "tooManyConnections"
        async with httpx.AsyncClient(base_url=handle.http_url) as client:
            assert (await client.get("/health")).status_code == 200  # room again


def _certificates(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca, cert_path, key_path


@pytest.mark.slow
async def test_tls_serves_https_and_wss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hyperliquid.info import Info

    ca, cert, key = _certificates(tmp_path)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))  # for the SDK's requests
    tls: dict[str, Any] = {"tls_cert": cert, "tls_key": key, "handshake_timeout": 1.0}
    async with sim_and_server(tmp_path, **tls) as (handle, _node):
        assert handle.url.startswith("wss://")
        assert handle.http_url.startswith("https://")
        async with httpx.AsyncClient(
            base_url=handle.http_url, verify=ssl.create_default_context(cafile=str(ca_file))
        ) as client:
            assert (await client.get("/health")).status_code == 200
        context = ssl.create_default_context(cafile=str(ca_file))

        async def over_wss() -> Any:
            async with websockets.connect(handle.url, ssl=context) as ws:
                await ws.send(json.dumps(subscribe("BTC", "l2Book")))
                await ws.recv()
                return json.loads(await ws.recv())

        book = await trio.to_thread.run_sync(lambda: asyncio.run(over_wss()))
        assert book["channel"] == "l2Book"

        def sdk() -> Any:
            # requests verifies against the test CA through the standard variable.
            info = Info(base_url=handle.http_url, skip_ws=True)
            return info.l2_snapshot("BTC")

        assert (await trio.to_thread.run_sync(sdk))["coin"] == "BTC"
        # A plaintext client on the TLS port is closed, and one that stalls the handshake
        # is timed out; neither disturbs anyone.
        plain = await trio.open_tcp_stream("127.0.0.1", handle.port)
        await plain.send_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(5):
            answer = b""
            while chunk := await plain.receive_some(4096):
                answer += chunk
        assert b"HTTP/1.1 200" not in answer
        stalled = await trio.open_tcp_stream("127.0.0.1", handle.port)
        with trio.fail_after(5):
            assert await stalled.receive_some(4096) == b""  # closed after the handshake timeout
        assert handle.health()["connections"]["tls_failures"] >= 2
        async with httpx.AsyncClient(
            base_url=handle.http_url, verify=ssl.create_default_context(cafile=str(ca_file))
        ) as client:
            assert (await client.get("/health")).status_code == 200


async def test_bad_certificate_paths_are_one_startup_error(tmp_path: Path) -> None:
    config = hlbook.Config(
        node_data=tmp_path, port=0, tls_cert=tmp_path / "nope.pem", tls_key=tmp_path / "nope.key"
    )
    async with trio.open_nursery() as nursery:
        with pytest.raises(StartupError, match=r"nope\.pem"):
            await nursery.start(hlbook.serve, config)


@pytest.mark.slow
def test_bad_tls_flags_exit_1_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hlbook",
            "serve",
            "--node-data",
            str(tmp_path),
            "--port",
            "0",
            "--tls-cert",
            str(tmp_path / "missing.pem"),
            "--tls-key",
            str(tmp_path / "missing.key"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "missing.pem" in lines[0]


def test_a_token_file_holds_one_token_a_line(tmp_path: Path) -> None:
    from hlbook.listen import load_tokens

    rotating = tmp_path / "tokens"
    rotating.write_text(
        "# hlbook tokens: add the new one, then remove the old\n\n  new-one  \nold-one\n"
    )
    assert load_tokens([f"@{rotating}", "plain"]) == ("new-one", "old-one", "plain")
    for text in ("", "\n  \n", "# only a comment\n"):
        empty = tmp_path / "empty"
        empty.write_text(text)
        with pytest.raises(StartupError, match=r"token file .*empty has no token"):
            load_tokens([f"@{empty}"])
    with pytest.raises(StartupError, match="a --token is empty"):
        load_tokens([" "])
    # A file saved with a byte-order mark: its first line is still a comment, not a token.
    marked = tmp_path / "marked"
    marked.write_text("# prod\r\nsecret\r\n", encoding="utf-8-sig")
    assert load_tokens([f"@{marked}"]) == ("secret",)


async def test_every_token_of_a_file_opens_the_server_and_refusals_say_why(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# rotating\nnew-token\nold-token\n")
    config = hlbook.Config(
        node_data=tmp_path / "data", port=0, tokens=(f"@{token_file}",), history="none"
    )
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(hlbook.serve, config)
        async with httpx.AsyncClient(base_url=handle.http_url) as client:
            for token in ("new-token", "old-token"):
                answer = await client.get("/health", headers={"authorization": f"Bearer {token}"})
                assert answer.status_code != 401, token
            missing = await client.get("/health")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            assert missing.json()["msg"].startswith("no token was sent")
            wrong = await client.get("/health", headers={"authorization": "Bearer guessed"})
            assert wrong.status_code == 401
            assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert wrong.json()["msg"] == (
                "the token sent (Authorization: Bearer) is not accepted by this server"
            )
            assert "guessed" not in wrong.text
        # The WebSocket upgrade is refused with the same 401s, before it happens.
        for url, expected in (
            (handle.url, "no token was sent"),
            (f"{handle.url}?token=guessed", "the token sent (?token=) is not accepted"),
        ):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(url):
                    pass
            assert rejected.value.status_code == 401
            assert rejected.value.body is not None
            body = json.loads(rejected.value.body)
            assert body["msg"].startswith(expected)
            assert "guessed" not in rejected.value.body.decode()
        async with open_websocket_url(f"{handle.url}?token=old-token") as ws:
            assert await request(ws, {"method": "ping"}) == {"channel": "pong"}
        nursery.cancel_scope.cancel()


def test_a_token_file_that_is_not_text_is_one_startup_error(tmp_path: Path) -> None:
    from hlbook.listen import load_tokens

    binary = tmp_path / "key.der"
    binary.write_bytes(b"\x30\x82\x01\xff\xfe\x00")
    with pytest.raises(StartupError, match=r"key\.der: not text"):
        load_tokens([f"@{binary}"])
    text = tmp_path / "token"
    text.write_text("s3cret\n")
    assert load_tokens([f"@{text}", "plain"]) == ("s3cret", "plain")
