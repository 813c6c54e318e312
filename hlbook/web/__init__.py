"""The live book page at ``GET /``: one HTML document with its CSS and JavaScript inlined.

``index.html``, ``style.css`` and ``app.js`` next to this module are the page's
source, shipped in the wheel as they are: no build step, nothing fetched from
the internet. The page is an ordinary client of hlbook's public API on the
same port — ``POST /info {"type":"hlbookCoins"}`` for the coin picker, then a
WebSocket at ``/ws`` subscribing ``l2Book``, ``bbo`` and ``trades`` and asking
``{"method":"health"}`` every second. A token in the URL fragment
(``#token=T``, never sent to the server by the browser) is sent as
``?token=T`` on the WebSocket URL and as ``Authorization: Bearer T`` on
``fetch``.

Why one document: one request and one route to leave open when access tokens
are required (the page itself holds no data), and a strict Content-Security-
Policy by hash — the document may run only its own script and style
(``'sha256-…'``), connect only to its own origin (``connect-src 'self'``,
which covers ``ws:``/``wss:`` of the same host in current browsers: Chromium
71+, Firefox, Safari 16+), and load nothing else.
"""

import base64
import hashlib
from importlib import resources

import attrs
import h11

from hlbook.server.routes import Response

__all__ = ["Page", "load_page"]

_STYLE_TAG = '<link rel="stylesheet" href="style.css">'
_SCRIPT_TAG = '<script src="app.js"></script>'


def _sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


@attrs.frozen
class Page:
    """The page, built once: the document's bytes and the headers it is served with."""

    body: bytes
    etag: str
    """A strong validator of :attr:`body` (quoted, as sent)."""
    csp: str
    """The ``Content-Security-Policy`` header."""

    @classmethod
    def build(cls, html: str, css: str, js: str) -> "Page":
        """The document ``html`` with ``css`` and ``js`` inlined where it links them.

        ``html`` must contain ``<link rel="stylesheet" href="style.css">`` and
        ``<script src="app.js"></script>`` exactly once each (raises ``ValueError``).
        """
        for tag in (_STYLE_TAG, _SCRIPT_TAG):
            if html.count(tag) != 1:
                raise ValueError(f"index.html must contain {tag} exactly once")
        # Either would end the inline element early (and change what the hash covers).
        if "</style" in css.lower() or "</script" in js.lower():
            raise ValueError("style.css and app.js must not contain </style or </script")
        document = html.replace(_STYLE_TAG, f"<style>{css}</style>").replace(
            _SCRIPT_TAG, f"<script>{js}</script>"
        )
        body = document.encode()
        csp = "; ".join(
            (
                "default-src 'none'",
                f"script-src {_sha256(js)}",
                f"style-src {_sha256(css)}",
                "connect-src 'self'",
                "img-src data:",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            )
        )
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(body, etag, csp)

    def respond(self, request: h11.Request) -> Response:
        """The page, or ``304 Not Modified`` if ``request`` already holds this version."""
        headers = (
            ("etag", self.etag),
            # Revalidate every time: a new hlbook version must not run yesterday's script.
            ("cache-control", "no-cache"),
            ("content-security-policy", self.csp),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
        )
        if _matches(request, self.etag):
            return Response(304, b"", content_type="text/html; charset=utf-8", headers=headers)
        return Response(200, self.body, content_type="text/html; charset=utf-8", headers=headers)


def _matches(request: h11.Request, etag: str) -> bool:
    for name, value in request.headers:
        if name == b"if-none-match":
            tags = [tag.strip().removeprefix("W/") for tag in value.decode("latin-1").split(",")]
            return etag in tags or "*" in tags
    return False


def load_page() -> Page:
    """The page built from the files shipped in this package."""
    files = resources.files(__name__)
    html, css, js = (
        files.joinpath(name).read_text(encoding="utf-8")
        for name in ("index.html", "style.css", "app.js")
    )
    return Page.build(html, css, js)
