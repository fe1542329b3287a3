"""Fidelity of every compression method on synthetic videos (or a real video with --model/--video).

    python benchmarks/fidelity.py [--retention 0.5 0.35 0.1 0.05 0.03] [--videos 4] [--json]

Same as ``python -m llava_scissor.eval.fidelity``; see its ``--help``.
"""

from llava_scissor.eval.fidelity import main

if __name__ == "__main__":
    raise SystemExit(main())
