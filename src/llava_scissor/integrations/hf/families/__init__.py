"""Model families, one small module each, registered by ``config.model_type``."""

from . import glm4v, llava_next_video, llava_onevision, qwen2_vl, qwen3_5, qwen3_vl  # noqa: F401  (registration)
from ._base import (
    Family,
    VideoFeatures,
    family_for,
    get_family,
    register_family,
    supported_model_types,
)

__all__ = ["Family", "VideoFeatures", "family_for", "get_family", "register_family", "supported_model_types"]
