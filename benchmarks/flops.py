"""The paper's FLOPs model (Eq. 9 / Eq. 10) for any model config; reproduces Table 5.

    python benchmarks/flops.py --config qwen2.5-7b
    python benchmarks/flops.py --config /path/to/model --frames 32 --tokens-per-frame 196

Same as ``python -m llava_scissor.flops``; see its ``--help``.
"""

from llava_scissor.flops import main

if __name__ == "__main__":
    raise SystemExit(main())
