"""Shared test settings."""

import pytest

from llava_scissor.core.engine import products as _products
from llava_scissor.core.engine import sets as _sets
from llava_scissor.core.engine.gram import _TILE


@pytest.fixture(autouse=True)
def _bfloat16_products_everywhere(monkeypatch):
    """Tests that ask for similarity_dtype="bfloat16" get bfloat16 products on every CPU.

    The library takes them only where this CPU multiplies bfloat16 faster (``core/engine/products.py``);
    the bfloat16 code paths (wide error bounds, their bands) must be tested on every
    machine, and the output is the same either way. ``test_core_products.py`` tests the
    decision itself.
    """
    monkeypatch.setattr(_products, "_measured_cpu_speedup", lambda: float("inf"))
    # Nor does a crowded band send them back to float32 products (``sets._crowded``, tested
    # in ``test_core_products.py``): the inputs built to crowd the band test its code.
    monkeypatch.setattr(_sets, "_crowded", lambda *args: False)
    # And sets above one strip (256 tokens) take them, not only those above 1024 (and
    # above _BF16_MIN_WORK / dim): the tests' token sets and dims are small.
    monkeypatch.setattr(_sets, "_BF16_MIN_TOKENS", _TILE + 1)
    monkeypatch.setattr(_sets, "_BF16_MIN_WORK", 0)  # whatever their dim
