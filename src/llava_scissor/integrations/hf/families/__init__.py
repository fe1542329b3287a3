"""Model families, one small module each, registered by ``config.model_type``."""

from . import llava_next_video, llava_onevision, qwen2_vl  # noqa: F401  (registration)
from ._base import Family, VideoFeatures, get_family, register_family, supported_model_types

__all__ = ["Family", "VideoFeatures", "get_family", "register_family", "supported_model_types"]
