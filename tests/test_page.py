"""The live book page as shipped and served: one document, a strict CSP, caching, HEAD.

The page in a real browser is tests/test_browser_page.py.
"""

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import h11
import httpx
import pytest
import trio

import hlbook
from hlbook.web import Page, load_page

FILES = ("index.html", "style.css", "app.js")


def shipped(name: str) -> str:
    return resources.files("hlbook.web").joinpath(name).read_text(encoding="utf-8")


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@asynccontextmanager
async def bare_server(tmp_path: Path) -> AsyncIterator[hlbook.ServerHandle]:
    """hlbook with no node behind it: the page needs no books to be served."""
    config = hlbook.Config(
        node_data=tmp_path / "nothing", info_url="http://127.0.0.1:9/info", port=0
    )
    async with trio.open_nursery() as nursery:
        yield await nursery.start(hlbook.serve, config)
        nursery.cancel_scope.cancel()


def test_the_shipped_files_load_nothing_from_anywhere() -> None:
    for name in FILES:
        text = shipped(name)
        # No absolute URL of any scheme, and no scheme-relative one in a string.
        assert not re.search(r"(?i)\b[a-z][a-z0-9+.-]*://", text), name
        assert not re.search(r"""["'(`]\s*//[\w[]""", text), name
    html = shipped("index.html")
    assert sorted(re.findall(r'\b(?:src|href)="([^"]*)"', html)) == [
        "app.js",
        "data:,",
        "style.css",
    ]
    css = shipped("style.css")
    assert "@import" not in css
    assert "url(" not in css
    js = shipped("app.js")
    assert not re.search(r"\b(?:importScripts|eval|Function)\s*\(", js)
    assert "innerHTML" not in js  # text goes in as text: the server's strings are data


def test_the_document_inlines_its_files_and_allows_only_them() -> None:
    page = load_page()
    document = page.body.decode()
    (style,) = re.findall(r"<style>(.*?)</style>", document, re.S)
    (script,) = re.findall(r"<script>(.*?)</script>", document, re.S)
    assert style == shipped("style.css")
    assert script == shipped("app.js")
    assert 'href="style.css"' not in document
    assert 'src="app.js"' not in document
    csp = csp_directives(page.csp)
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == [sha256(script)]
    assert csp["style-src"] == [sha256(style)]
    assert csp["connect-src"] == ["'self'"]  # POST /info and the WebSocket on this origin
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert load_page() == page  # built the same way every time: the ETag is stable


def test_a_page_that_cannot_be_inlined_is_refused() -> None:
    html = '<link rel="stylesheet" href="style.css"><script src="app.js"></script>'
    assert Page.build(html, "b{}", "x()").body == b"<style>b{}</style><script>x()</script>"
    with pytest.raises(ValueError, match="exactly once"):
        Page.build("<p>no links</p>", "", "")
    with pytest.raises(ValueError, match="exactly once"):
        Page.build(html + '<script src="app.js"></script>', "", "")
    with pytest.raises(ValueError, match="</script"):
        Page.build(html, "", "s = '</script>'")
    with pytest.raises(ValueError, match="</style"):
        Page.build(html, "/* </STYLE> */", "")


def test_if_none_match_answers_304() -> None:
    page = load_page()

    def get(*headers: tuple[str, str]) -> int:
        request = h11.Request(method="GET", target="/", headers=[("host", "x"), *headers])
        response = page.respond(request)
        assert dict(response.headers)["etag"] == page.etag
        return response.status

    assert get() == 200
    assert get(("if-none-match", page.etag)) == 304
    assert get(("if-none-match", f'"other", W/{page.etag}')) == 304
    assert get(("if-none-match", "*")) == 304
    assert get(("if-none-match", '"other"')) == 200


async def test_get_slash_serves_the_page_with_its_headers(tmp_path: Path) -> None:
    page = load_page()
    async with (
        bare_server(tmp_path) as handle,
        httpx.AsyncClient(base_url=handle.http_url) as client,
    ):
        response = await client.get("/")
        assert response.status_code == 200
        assert response.content == page.body
        headers = response.headers
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["content-security-policy"] == page.csp
        assert headers["etag"] == page.etag
        assert headers["cache-control"] == "no-cache"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        # A query string (or a fragment, which browsers never send) is the same page.
        assert (await client.get("/?coin=BTC")).content == page.body

        again = await client.get("/", headers={"if-none-match": page.etag})
        assert again.status_code == 304
        assert again.content == b""
        assert "content-length" not in again.headers  # RFC 9110: not 0 for a 304
        assert again.headers["etag"] == page.etag

        # HEAD: the headers of GET, no body, and the connection still works afterwards.
        head = await client.head("/")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(page.body))
        assert head.headers["content-security-policy"] == page.csp
        health = await client.head("/health")
        assert health.status_code == 503  # no node: not live
        assert int(health.headers["content-length"]) > 0
        preflight = await client.options("/info")
        assert preflight.status_code == 204
        assert "content-length" not in preflight.headers
        assert (await client.get("/")).content == page.body


async def test_head_on_a_raw_socket_ends_after_the_headers(tmp_path: Path) -> None:
    """The bytes themselves: a HEAD answer carries no body, so the next answer on the same
    connection starts right after its headers."""
    async with bare_server(tmp_path) as handle:
        stream = await trio.open_tcp_stream("127.0.0.1", handle.port)
        async with stream:
            await stream.send_all(
                b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\nGET /nope HTTP/1.1\r\nhost: x\r\n\r\n"
            )
            received = b""
            with trio.fail_after(10):
                while b'"notFound"' not in received:
                    received += await stream.receive_some(65536)
        first, rest = received.split(b"\r\n\r\n", 1)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert rest.startswith(b"HTTP/1.1 404 ")
