"""How the engine learns what only the device knows: by reading it back, or not at all.

Data-sized work (the default; CPUs) reads small values back to the host as it goes:
a buffer's size, whether a loop can stop, whether a rare step is needed. On a GPU each
read waits for the device to finish everything queued before it, so a sync-free call
(``HostReads(sync_free=True)``, the default on CUDA) reads nothing: every such value
takes a bound that holds whatever the data (loops their fixed round counts, buffers
their fixed capacities, rare steps run every time), and where a fixed buffer can be
too small the engine returns a flag for the caller to read once, at the end, and rerun
data-sized (``compress.py``). The two give the same results bit for bit.

This object is the one place the two differ: the engine asks it for each such value
and never branches on the mode itself, except where a sync-free call runs a different
algorithm altogether (``graph.budget_components``, whose comment says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import torch

__all__ = ["HostReads", "DATA_SIZED", "SYNC_FREE"]

T = TypeVar("T")


@dataclass(frozen=True)
class HostReads:
    """Whether the engine may read device values back to the host (module docstring).

    sync_free: False reads what the data says; True reads nothing and takes bounds.
    """

    sync_free: bool = False

    @staticmethod
    def for_device(setting: bool | None, device: torch.device) -> HostReads:
        """The policy of a call on ``device``: ``setting`` if given, else sync-free on CUDA only."""
        return SYNC_FREE if (device.type == "cuda" if setting is None else setting) else DATA_SIZED

    def read(self, bound: T, value: Callable[..., T], *args: object) -> T:
        """``value(*args)`` (it reads the device), or without any read the ``bound`` that holds for all data.

        A bound for a flag that guards work is True (the work runs); for a size, its largest value.
        """
        return bound if self.sync_free else value(*args)

    def iterations(self, fixed: int, data_sized: int) -> int:
        """A loop's count: ``fixed`` when nothing read can end it early, else ``data_sized`` (reads end it)."""
        return fixed if self.sync_free else data_sized

    def capacity(self, fixed: Callable[..., int], *args: object) -> int | None:
        """A buffer's capacity: ``fixed(*args)`` (overflow then raises a flag), or None: sized from the data."""
        return fixed(*args) if self.sync_free else None


DATA_SIZED = HostReads()
SYNC_FREE = HostReads(sync_free=True)
