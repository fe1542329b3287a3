"""A tiny progress display on stderr, shown only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["Progress", "Bar"]

_WIDTH = 24


class Bar:
    """One step: ``update(done, total)`` redraws; ``close()`` prints the elapsed time.

    Does nothing at all when its ``Progress`` is disabled.
    """

    def __init__(self, owner: "Progress", label: str, total: int | None) -> None:
        self._owner = owner
        self._label = label
        self._total = total
        self._done = 0
        self._start = time.perf_counter()
        self._last = 0.0
        self._closed = False
        self._draw(force=True)

    def update(self, done: int, total: int | None = None) -> None:
        """Set the count of finished units (and the total, when it becomes known)."""
        self._done = done
        if total is not None:
            self._total = total
        self._draw()

    def advance(self, units: int = 1) -> None:
        self.update(self._done + units)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owner.enabled:
            elapsed = time.perf_counter() - self._start
            count = f" {self._done}/{self._total}" if self._total else ""
            self._owner.write(f"\r\x1b[2K{self._label}{count} done in {elapsed:.1f} s\n")

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        elif self._owner.enabled and not self._closed:
            self._closed = True
            self._owner.write("\r\x1b[2K")

    def _draw(self, force: bool = False) -> None:
        if not self._owner.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        elapsed = now - self._start
        if self._total:
            frac = min(max(self._done / self._total, 0.0), 1.0)
            filled = int(round(frac * _WIDTH))
            bar = "#" * filled + "." * (_WIDTH - filled)
            text = f"{self._label} [{bar}] {self._done}/{self._total} {elapsed:.1f} s"
        else:
            text = f"{self._label} ... {elapsed:.1f} s"
        self._owner.write(f"\r\x1b[2K{text}")


class Progress:
    """Factory of ``Bar``s; enabled only when not quiet and stdout and stderr are terminals."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = (
            not quiet
            and _isatty(sys.stdout)
            and _isatty(self.stream)
        )

    def bar(self, label: str, total: int | None = None) -> Bar:
        return Bar(self, label, total)

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
