"""The algorithm: pure tensor code that imports only torch.

Nothing in here imports transformers or prints; the one piece of process state is noted below.

compress.py   the paper's steps: ``scc`` (one token set), ``compress`` (a video)
budget.py     the token budgets K and S, and what fits in memory
reference.py  the paper's algorithm written plainly (threshold mode): the tests' oracle
config.py     ``ScissorConfig``; result.py: what a compression returns
engine/       private: similarity kernels, exact decisions, component search, and which
              dtype a product runs in (``engine/products.py``: the core's one piece of
              process state, a cached measurement of this CPU's bfloat16 speed)
"""

from .compress import compress, scc
from .config import ScissorConfig
from .engine.products import ProductPath, bfloat16_products
from .result import CompressionResult, SCCResult

__all__ = ["ScissorConfig", "CompressionResult", "SCCResult", "scc", "compress", "ProductPath", "bfloat16_products"]
