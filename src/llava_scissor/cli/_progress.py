"""Progress bars on stderr (tqdm), shown only on a terminal and never with ``--quiet``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO, Any

from tqdm import tqdm

__all__ = ["Progress", "Bar"]


class Bar:
    """One step; ``update(done, total)`` sets the count of finished units (and the total, once known)."""

    def __init__(self, bar: tqdm | None) -> None:
        self._bar = bar

    def update(self, done: int, total: int | None = None) -> None:
        if self._bar is None:
            return
        if total is not None and total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)


class Progress:
    """Factory of ``Bar``s; enabled only when not quiet and stdout and stderr are terminals."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not quiet and _isatty(sys.stdout) and _isatty(self.stream)

    @contextlib.contextmanager
    def bar(self, label: str, total: int | None = None) -> Iterator[Bar]:
        if not self.enabled:
            yield Bar(None)
            return
        # Steps without a count show their label and elapsed time only.
        fmt = None if total else "{desc} ... {elapsed}"
        with tqdm(total=total, desc=label, file=self.stream, bar_format=fmt, dynamic_ncols=True) as bar:
            yield Bar(bar)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
