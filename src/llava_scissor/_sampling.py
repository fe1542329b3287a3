"""The one frame-sampling rule, shared by the video decoder and the model inputs.

The rule is that of LLaVA-OneVision's evaluation (lmms-eval, ``llava_onevision.load_video``):
``np.linspace(0, total - 1, num_frames, dtype=int)``, evenly spaced positions from the first
frame to the last, truncated (not rounded) to integers. For 11 frames and 4 samples the
positions are 0, 3.33, 6.67, 10, so the frames are 0, 3, 6, 10.

A video is never padded silently: asking for more frames than it has gives each frame
once, unless repetition is asked for (``repeat=True``), which keeps the rule's repeats
(3 frames, 5 samples: 0, 0, 1, 1, 2).
"""

from __future__ import annotations

import numpy as np

from ._errors import ScissorError

__all__ = ["sample_indices"]


def sample_indices(total: int, num_frames: int, *, repeat: bool = False) -> list[int]:
    """[min(num_frames, total)] frame indices in ``[0, total)``, ascending, first and last included.

    With ``repeat=True`` the result has ``num_frames`` entries even when the video is
    shorter (some indices then appear more than once).
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ScissorError(f"a video needs at least 1 frame to sample from, got {total!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ScissorError(f"frames must be an int >= 1, got {num_frames!r}")
    count = num_frames if repeat else min(num_frames, total)
    return [int(i) for i in np.linspace(0, total - 1, count, dtype=np.int64)]
