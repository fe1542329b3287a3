"""Wall-clock timing of device work: the one place that waits for a CUDA device before a clock is read."""

from __future__ import annotations

import torch

__all__ = ["synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait until the work queued on ``device`` has run (CUDA queues it; other devices run it at once)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
