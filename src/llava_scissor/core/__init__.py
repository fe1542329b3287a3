"""The algorithm: pure tensor code that imports only torch.

Nothing in here imports transformers, prints, or keeps global state.

compress.py   the paper's steps: ``scc`` (one token set), ``compress`` (a video)
budget.py     the token budgets K and S, and what fits in memory
reference.py  the paper's algorithm written plainly (threshold mode): the tests' oracle
config.py     ``ScissorConfig``; result.py: what a compression returns
engine/       private: similarity kernels, exact decisions, component search
"""

from .compress import compress, scc
from .config import ScissorConfig
from .result import CompressionResult, SCCResult

__all__ = ["ScissorConfig", "CompressionResult", "SCCResult", "scc", "compress"]
