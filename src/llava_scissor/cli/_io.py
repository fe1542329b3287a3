"""Files the command line reads and writes: features in, compressed tokens out."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Mapping

import torch

from .._errors import ScissorError
from .._files import atomic_output

if TYPE_CHECKING:
    from ..core.result import CompressionResult

__all__ = ["load_features", "save_result", "FEATURE_SUFFIXES"]

FEATURE_SUFFIXES = (".safetensors", ".pt", ".pth", ".npy")

#: tensors of a ``CompressionResult`` written by ``compress`` (None-valued ones are skipped).
RESULT_TENSORS = (
    "tokens",
    "assignment",
    "spatial_labels",
    "temporal_labels",
    "spatial_tokens",
    "representatives",
    "sizes",
    "spatial_representatives",
)


def load_features(path: str) -> torch.Tensor:
    """[frames, tokens, dim] float tensor from ``.safetensors`` (key ``features`` or the
    file's only tensor), ``.pt``/``.pth`` (a tensor, or a dict with ``features``) or ``.npy``."""
    if not os.path.exists(path):
        raise ScissorError(f"features file not found: {path}")
    if os.path.isdir(path):
        raise ScissorError(f"expected a features file, got a directory: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FEATURE_SUFFIXES:
        raise ScissorError(f"features file must end in one of {', '.join(FEATURE_SUFFIXES)}, got {path!r}")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            tensor = _pick(load_file(path), path)
        elif suffix == ".npy":
            import numpy as np

            tensor = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            tensor = _pick(loaded, path) if isinstance(loaded, Mapping) else loaded
    except ScissorError:
        raise
    except ImportError as exc:
        raise ScissorError(f"reading {suffix} files needs {exc.name}: pip install 'llava-scissor[hf]'") from None
    except Exception as exc:  # every loader has its own error types for a damaged file
        raise ScissorError(f"cannot read features file {path}: {_first_line(exc)}") from None
    if not isinstance(tensor, torch.Tensor):
        raise ScissorError(f"features file {path} holds a {type(tensor).__name__}, expected a tensor")
    if tensor.ndim != 3 or min(tensor.shape) < 1:
        raise ScissorError(f"features must be [frames, tokens, dim], got shape {tuple(tensor.shape)} in {path}")
    if not tensor.is_floating_point():
        raise ScissorError(f"features must be floating point, got {tensor.dtype} in {path}")
    return tensor


def _pick(tensors: Mapping[str, Any], path: str) -> Any:
    if "features" in tensors:
        return tensors["features"]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise ScissorError(
        f"features file {path} holds {sorted(tensors)}; expected a tensor named 'features' or a single tensor"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def save_result(path: str, result: CompressionResult, metadata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Write ``result``'s tensors to a safetensors file (atomically: ``_files.atomic_output``).

    Every ``metadata`` value is stored as a JSON document, except ``format`` (a plain
    string, as safetensors' own ``format`` entry).

    Returns the tensors written (name -> tensor on the CPU).
    """
    if not path.lower().endswith(".safetensors"):
        raise ScissorError(f"output must end in .safetensors, got {path!r}")
    from safetensors.torch import save_file

    tensors = {}
    for name in RESULT_TENSORS:
        value = getattr(result, name, None)
        if value is not None:
            tensors[name] = value.detach().to("cpu").contiguous()
    meta = {key: value if key == "format" else json.dumps(value) for key, value in metadata.items()}
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata=meta)
    return tensors
