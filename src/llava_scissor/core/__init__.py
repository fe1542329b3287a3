"""The algorithm: pure tensor code that imports only torch.

Nothing in here imports transformers or prints. The one piece of process state is a
cached measurement of whether this CPU multiplies bfloat16 faster than float32
(``_products.py``).
"""

from .config import ScissorConfig
from .result import CompressionResult, SCCResult
from .scc import scc
from .compress import compress
from ._products import ProductPath, bfloat16_products

__all__ = ["ScissorConfig", "CompressionResult", "SCCResult", "scc", "compress", "ProductPath", "bfloat16_products"]
