"""The one exception type of the library."""

from __future__ import annotations

__all__ = ["ScissorError"]


class ScissorError(ValueError):
    """Raised for any bad input or configuration.

    The message says what was wrong and what was expected, e.g.
    ``features must be [frames, tokens_per_frame, dim], got shape (3, 4)``.
    """
