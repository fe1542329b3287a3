"""The one exception type of the library, and its one warning category."""

from __future__ import annotations

__all__ = ["ScissorError", "ScissorWarning"]


class ScissorError(ValueError):
    """Raised for any bad input or configuration.

    The message says what was wrong and what was expected, e.g.
    ``features must be [frames, tokens_per_frame, dim], got shape (3, 4)``.
    """


class ScissorWarning(UserWarning):
    """Issued when the library did something other than what was asked, and says what.

    For example a video whose stream ends before the frame count in its header (the
    frames are sampled from the part that decodes), or a video with fewer frames than
    asked for (each frame is used once). The returned object records the same fact.
    """
