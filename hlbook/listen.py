"""Opening listening sockets with an error a user can act on."""

import trio

from hlbook.errors import StartupError

__all__ = ["open_listeners"]


async def open_listeners(host: str, port: int, what: str) -> list[trio.SocketListener]:
    """``trio.open_tcp_listeners``, raising :class:`StartupError` naming ``what`` and the
    address when the port cannot be bound (in use, not allowed, unknown host)."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise StartupError(f"{what} cannot listen on {host}:{port}: {why}") from exc
