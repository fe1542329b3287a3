"""What a compression returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CompressionResult", "SCCResult"]


@dataclass(frozen=True)
class SCCResult:
    """Semantic connected components of one token set.

    Attributes:
        labels: [n] int64, component of each input token (index into ``tokens``).
        tokens: [c, dim] unweighted mean of each component's members, in output order.
        representatives: [c] int64, the member of highest degree of each component
            (ties: smaller index); components are sorted by it.
        degree: [n] int64, row count of the adjacency (self included).
        threshold: the threshold used (tau, or the one a budget implied).
    """

    labels: torch.Tensor
    tokens: torch.Tensor
    representatives: torch.Tensor
    degree: torch.Tensor
    threshold: float

    @property
    def num_components(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class CompressionResult:
    """The compressed tokens of one video and how they came about.

    Shapes use F = frames, N = tokens per frame, S = spatial tokens, K = output tokens.

    Attributes:
        tokens: [K, dim] what the LLM receives, in order; dtype and device of the input.
        assignment: [F*N] int64, frame-major: output token that each original token
            was merged into (``-1`` only for methods that discard tokens outright).
        representatives: [K] int64, frame-major index of the original token that
            stands for each output token (decides order; used for positions).
        sizes: [K] int64, how many original tokens each output token absorbed.
        frames, tokens_per_frame: F and N of the input.
        spatial_tokens: [S, dim] the spatial step's tokens (None for other methods).
        spatial_labels: [F*N] int64 index into ``spatial_tokens`` (None for other methods).
        temporal_labels: [S] int64 index into ``tokens`` (None for other methods).
        spatial_representatives: [S] int64 original index standing for each spatial token.
        spatial_threshold / temporal_threshold: the threshold used or implied by a budget
            (None when a step was switched off).
        method: name of the method that produced this result.
    """

    tokens: torch.Tensor
    assignment: torch.Tensor
    representatives: torch.Tensor
    sizes: torch.Tensor
    frames: int
    tokens_per_frame: int
    spatial_tokens: torch.Tensor | None = None
    spatial_labels: torch.Tensor | None = None
    temporal_labels: torch.Tensor | None = None
    spatial_representatives: torch.Tensor | None = None
    spatial_threshold: float | None = None
    temporal_threshold: float | None = None
    method: str = "scissor"

    @property
    def num_tokens(self) -> int:
        """K, the number of output tokens."""
        return int(self.tokens.shape[0])

    @property
    def num_input_tokens(self) -> int:
        """F * N, the number of input tokens."""
        return self.frames * self.tokens_per_frame

    @property
    def num_spatial_tokens(self) -> int | None:
        """S, the number of tokens after the spatial step (None for other methods)."""
        return None if self.spatial_tokens is None else int(self.spatial_tokens.shape[0])

    @property
    def retention(self) -> float:
        """K / (F * N)."""
        return self.num_tokens / self.num_input_tokens
