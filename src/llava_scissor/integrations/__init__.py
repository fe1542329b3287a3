"""Integrations of the compressor with model libraries.

``integrations.hf`` is the Hugging Face transformers integration (``prepare`` / ``apply``).
Nothing here is imported by ``import llava_scissor``; each integration loads on first use,
so the core stays free of transformers.
"""
