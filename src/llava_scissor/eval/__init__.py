"""Model-free evaluation: synthetic videos with ground truth, fidelity metrics, the runner.

* ``make_video``: a synthetic video with background areas, moving objects and
  short-lived events, and its ground-truth region labels.
* ``fidelity``: region coverage, event coverage and reconstruction of one result.
* ``run_synthetic`` / ``python -m llava_scissor.eval.fidelity``: method x retention x metric.
"""

from .metrics import Regions, coverage, fidelity, pseudo_regions, reconstruction, represented_regions
from .synthetic import SyntheticVideo, make_video

__all__ = [
    "SyntheticVideo",
    "make_video",
    "Regions",
    "fidelity",
    "reconstruction",
    "represented_regions",
    "coverage",
    "pseudo_regions",
]
