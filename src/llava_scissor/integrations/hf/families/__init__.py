"""Model families, one small module each, registered by ``config.model_type``."""

from ._base import Family, VideoFeatures, family_for, get_family, register_family, supported_model_types
from . import glm4v, llava_next_video, llava_onevision, qwen2_vl, qwen3_5, qwen3_vl  # noqa: F401  (registration)

__all__ = ["Family", "VideoFeatures", "family_for", "get_family", "register_family", "supported_model_types"]
