"""TLS decisions, sans I/O: whether a certificate's dates are good, and how often to log
failed handshakes. Each takes the time as an argument; the shell passes the clock.

Why a few lines of DER reading instead of a library: hlbook's runtime dependencies have
no X.509 parser (``cryptography`` comes with the test tools only), and the standard
library decodes a certificate's dates only for certificates it verified
(``getpeercert``), for CA certificates (``SSLContext.get_ca_certs``, which skips a
server's own) or through a private test hook (``ssl._ssl._test_decode_cert``). The
validity is at a fixed place in every X.509 certificate (RFC 5280 §4.1), so reading it
is a short walk through the outer DER structure.

Why log failed handshakes at all, and why rate-limited: a client that speaks plain HTTP
to the TLS port, or refuses the certificate (expired, unknown CA, wrong name), sees only
a closed connection; the server's log is where an operator can learn why. A port open to
the internet also gets scanners' garbage all day: the first failure is logged at once,
then at most one line per interval with how many failed since and the last one's reason.
"""

import base64
import binascii
import enum
import re
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import attrs

from hlbook.throttle import Report, Throttle

__all__ = [
    "EXPIRY_WARNING",
    "CertificateProblem",
    "CertificateWatch",
    "HandshakeFailureLog",
    "Problem",
    "Validity",
    "certificate_validities",
    "check_certificate",
    "describe_handshake_error",
]

EXPIRY_WARNING = timedelta(days=14)
"""How long before a certificate's notAfter hlbook starts to warn."""

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


@attrs.frozen
class Validity:
    """A certificate's validity period (RFC 5280 ``notBefore`` and ``notAfter``, UTC)."""

    not_before: datetime
    not_after: datetime


def certificate_validities(pem: str) -> list[Validity]:
    """The validity of each certificate in a PEM text, in order (the server's own first,
    then its chain). Raises :class:`ValueError` naming what is wrong."""
    blocks = _PEM.findall(pem)
    if not blocks:
        raise ValueError("no -----BEGIN CERTIFICATE----- block")
    validities = []
    for number, block in enumerate(blocks, 1):
        try:
            der = base64.b64decode(block)  # line breaks are skipped
            validities.append(_validity(der))
        except (binascii.Error, ValueError, IndexError) as exc:
            raise ValueError(f"certificate {number}: {exc or 'truncated'}") from None
    return validities


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """The DER element at ``at``: its tag and where its content starts and ends."""
    tag, length = der[at], der[at + 1]
    start = at + 2
    if length & 0x80:  # long form: the next (length & 0x7F) bytes hold the length
        size = length & 0x7F
        if not 0 < size <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(der[start : start + size], "big")
        start += size
    end = start + length
    if end > len(der):
        raise ValueError("truncated")
    return tag, start, end


_SEQUENCE, _UTC_TIME, _GENERALIZED_TIME, _VERSION = 0x30, 0x17, 0x18, 0xA0


def _validity(der: bytes) -> Validity:
    # Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    # serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ...
    tag, start, _ = _element(der, 0)
    if tag != _SEQUENCE:
        raise ValueError("not an X.509 certificate")
    tag, at, _ = _element(der, start)
    if tag != _SEQUENCE:
        raise ValueError("not an X.509 certificate")
    tag, _, end = _element(der, at)
    if tag == _VERSION:
        at = end
    for _field in ("serialNumber", "signature", "issuer"):
        _, _, at = _element(der, at)
    tag, at, _ = _element(der, at)
    if tag != _SEQUENCE:
        raise ValueError("no validity")
    times = []
    for _bound in ("notBefore", "notAfter"):
        tag, start, at = _element(der, at)
        times.append(_time(tag, der[start:at].decode("ascii")))
    return Validity(times[0], times[1])


def _time(tag: int, text: str) -> datetime:
    # RFC 5280 §4.1.2.5: UTCTime YYMMDDHHMMSSZ (YY >= 50 is 19YY) until 2049, then
    # GeneralizedTime YYYYMMDDHHMMSSZ.
    if tag == _UTC_TIME and len(text) == 13:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME or len(text) != 15:
        raise ValueError(f"bad validity time {text!r}")
    if not text.endswith("Z"):
        raise ValueError(f"bad validity time {text!r}")
    return datetime.strptime(text[:-1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)


class Problem(enum.Enum):
    """What is wrong with a certificate's dates at some moment."""

    NOT_YET_VALID = "not yet valid"
    EXPIRED = "expired"
    EXPIRES_SOON = "expires soon"


@attrs.frozen
class CertificateProblem:
    """A certificate's dates that clients refuse now, or will soon."""

    problem: Problem
    validity: Validity
    now: datetime

    def describe(self, name: str) -> str:
        """One log line about certificate ``name`` (its file, and its place in a chain)."""
        validity = self.validity
        if self.problem is Problem.EXPIRED:
            return (
                f"TLS certificate {name} expired on {_date(validity.not_after)} (notAfter):"
                " clients refuse it; hlbook serves it until it is replaced and hlbook restarted"
            )
        if self.problem is Problem.NOT_YET_VALID:
            return (
                f"TLS certificate {name} is not valid before {_date(validity.not_before)}"
                f" (notBefore), {_span(validity.not_before - self.now)} from now: clients"
                " refuse it until then (or this machine's clock is wrong)"
            )
        return (
            f"TLS certificate {name} expires on {_date(validity.not_after)} (notAfter), in"
            f" {_span(validity.not_after - self.now)}: replace it and restart hlbook"
            " (it reads the file only at start)"
        )


def check_certificate(
    validity: Validity, now: datetime, *, warn_within: timedelta = EXPIRY_WARNING
) -> CertificateProblem | None:
    """What is wrong with ``validity`` at ``now`` (an aware datetime), if anything:
    expired, not valid yet, or expiring within ``warn_within``."""
    if now > validity.not_after:
        return CertificateProblem(Problem.EXPIRED, validity, now)
    if now < validity.not_before:
        return CertificateProblem(Problem.NOT_YET_VALID, validity, now)
    if validity.not_after - now <= warn_within:
        return CertificateProblem(Problem.EXPIRES_SOON, validity, now)
    return None


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.0f} days"
    if hours >= 1:
        return f"{hours:.0f} h"
    return f"{max(delta.total_seconds(), 0) / 60:.0f} min"


@attrs.define
class _Watched:
    name: str
    validity: Validity
    problem: Problem | None = None
    warned_at: datetime | None = None


class CertificateWatch:
    """When to warn about the certificates being served: at the first check, when a
    certificate's state changes (valid, expiring soon, expired), and again every
    ``repeat_every`` while a problem lasts. hlbook reads its certificate only at start,
    so one that expires while it runs is still the one served."""

    def __init__(
        self,
        path: str,
        validities: Sequence[Validity],
        *,
        warn_within: timedelta = EXPIRY_WARNING,
        repeat_every: timedelta = timedelta(days=1),
    ) -> None:
        count = len(validities)
        self._certificates = [
            _Watched(path if number == 1 else f"{path} (chain certificate {number} of {count})", v)
            for number, v in enumerate(validities, 1)
        ]
        self.warn_within = warn_within
        self.repeat_every = repeat_every

    def check(self, now: datetime) -> list[str]:
        """The warnings to log at ``now`` (often none)."""
        lines = []
        for watched in self._certificates:
            found = check_certificate(watched.validity, now, warn_within=self.warn_within)
            problem = found.problem if found is not None else None
            due = problem is not watched.problem or (
                watched.warned_at is not None and now - watched.warned_at >= self.repeat_every
            )
            watched.problem = problem
            if found is not None and due:
                watched.warned_at = now
                lines.append(found.describe(watched.name))
        return lines


# -- failed handshakes ----------------------------------------------------------------------

# OpenSSL's reasons for what a client most often gets wrong, in words.
_REASONS = {
    "HTTP_REQUEST": "plain HTTP sent to the TLS port (use https:// or wss://)",
    "HTTPS_PROXY_REQUEST": "a plain HTTP proxy request sent to the TLS port",
    "WRONG_VERSION_NUMBER": "not TLS, or a TLS version this server does not speak",
    "UNSUPPORTED_PROTOCOL": "a TLS version this server does not accept",
    "NO_SHARED_CIPHER": "no cipher in common with the client",
    "VERSION_TOO_LOW": "a TLS version this server does not accept",
}


def describe_handshake_error(error: BaseException | None) -> str:
    """Why a handshake failed, in words, from the exception under Trio's
    ``BrokenResourceError`` (``None``: the client closed the connection)."""
    if error is None:
        return "the client closed the connection during the handshake"
    if isinstance(error, ssl.SSLError):
        reason = error.reason or ""
        if reason in _REASONS:
            return f"{_REASONS[reason]} ({reason})"
        if "_ALERT_" in reason:
            # The client refused: most often it does not trust, or rejects, the certificate.
            alert = reason.partition("_ALERT_")[2].lower().replace("_", " ")
            return f"the client refused the handshake: alert '{alert}' ({reason})"
        if isinstance(error, ssl.SSLEOFError):
            return "the client closed the connection during the handshake"
        return reason or str(error)
    return str(error) or type(error).__name__


class HandshakeFailureLog:
    """When to log failed TLS handshakes: the first at once, then at most one line per
    ``interval`` seconds, with how many failed since the last line and the last one's
    peer and reason (a :class:`~hlbook.throttle.Throttle`). Feed it :meth:`failed` for
    each failure and :meth:`tick` now and then (the shell calls it every ``interval``),
    so a count never waits for the next failure to be logged."""

    def __init__(self, interval: float = 60.0) -> None:
        self._throttle = Throttle(interval)

    @property
    def interval(self) -> float:
        """The least time between two lines, in seconds."""
        return self._throttle.interval

    def failed(self, now: float, peer: str, reason: str) -> str | None:
        """Record a failure at ``now`` (seconds, any monotonic clock); the line to log
        now, if one is due."""
        return _handshake_line(self._throttle.occurred(now, f"{peer}: {reason}"))

    def tick(self, now: float) -> str | None:
        """The line to log at ``now`` for the failures not logged yet, if one is due."""
        return _handshake_line(self._throttle.tick(now))


def _handshake_line(report: Report | None) -> str | None:
    if report is None:
        return None
    if report.count == 1 or report.seconds is None:
        return f"TLS handshake failed from {report.detail}"
    return (
        f"{report.count} TLS handshakes failed in the last {report.seconds:.0f} s;"
        f" the last from {report.detail}"
    )
