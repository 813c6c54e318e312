"""A sans-I/O line splitter: feed bytes in, get complete lines out.

The node appends lines of JSON and is often in the middle of one when we
read. The splitter keeps the partial tail (never dropping or re-reading a
byte) and does not rescan it: the bulk of each chunk is split by
``bytes.split`` in C, and a long line that arrives in many chunks is joined
once, when its newline arrives.
"""

__all__ = ["LineSplitter", "LineTooLongError"]

DEFAULT_MAX_LINE = 256 * 1024 * 1024


class LineTooLongError(ValueError):
    """A line grew past the splitter's limit without a newline.

    ``lines`` are the complete lines the same :meth:`LineSplitter.feed` call
    split off before it: they are good and must still be used.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lines: list[bytes] = []


class LineSplitter:
    """Split a byte stream into lines; empty lines are skipped.

    A line longer than ``max_line`` raises :class:`LineTooLongError` once and
    is then discarded up to its newline, so the stream can continue.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._parts: list[bytes] = []
        self._size = 0
        self._discarding = False
        self.consumed = 0
        """Bytes handed out as lines (or discarded) so far, newlines included."""

    @property
    def pending(self) -> int:
        """Bytes of the incomplete last line held back."""
        return self._size

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the lines it completed, without their newlines."""
        newline = data.find(b"\n")
        if newline < 0:
            self._keep(data)
            return []
        held = self._size
        head = data[:newline]
        if self._parts:
            self._parts.append(head)
            head = b"".join(self._parts)
            self._parts.clear()
        self._size = 0
        lines = [] if self._discarding or not head else [head]
        self._discarding = False
        rest = data[newline + 1 :].split(b"\n")
        tail = rest.pop()
        lines.extend(line for line in rest if line)
        self.consumed += held + len(data) - len(tail)
        try:
            self._keep(tail)
        except LineTooLongError as exc:
            exc.lines = lines
            raise
        return lines

    def skip_line(self) -> None:
        """Discard everything up to the next newline (reading began mid-line)."""
        self.reset()
        self._discarding = True

    def reset(self) -> bytes:
        """Forget the partial line (e.g. when abandoning a file); return its bytes."""
        held = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._discarding = False
        return held

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        if self._discarding:
            self.consumed += len(data)
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size > self.max_line:
            size = self._size
            self.consumed += size
            self._parts.clear()
            self._size = 0
            self._discarding = True
            raise LineTooLongError(f"line longer than {self.max_line} bytes ({size} so far)")
