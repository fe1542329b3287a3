"""The algorithm: pure tensor code that imports only torch.

Nothing in here imports transformers, prints, or keeps global state.
"""

from .config import ScissorConfig
from .result import CompressionResult, SCCResult
from .scc import scc
from .compress import compress

__all__ = ["ScissorConfig", "CompressionResult", "SCCResult", "scc", "compress"]
