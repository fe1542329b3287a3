"""Parity with the paper's algorithm: the authors' outputs (tests/data/scc_reference.npz) and
``core/reference.py``, the algorithm written plainly, on those cases and on random videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import llava_scissor
from llava_scissor.core.reference import reference_compress

DATA = Path(__file__).parent / "data"
CASES = json.loads((DATA / "scc_reference.json").read_text())


@pytest.fixture(scope="module")
def reference():
    with np.load(DATA / "scc_reference.npz") as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reference_case(case, reference):
    name = case["name"]
    x = reference[f"{name}/input"]
    assert tuple(x.shape) == (case["frames"], case["tokens_per_frame"], case["dim"])
    r = llava_scissor.compress(x, tau=case["tau"])
    assert r.num_spatial_tokens == case["n_spatial"]
    assert r.num_tokens == case["n_final"]
    assert torch.equal(r.spatial_labels, reference[f"{name}/spatial_labels"])
    assert torch.equal(r.temporal_labels, reference[f"{name}/temporal_labels"])
    assert torch.equal(r.assignment, reference[f"{name}/assignment"])
    torch.testing.assert_close(r.spatial_tokens, reference[f"{name}/spatial_tokens"], atol=1e-5, rtol=0)
    torch.testing.assert_close(r.tokens, reference[f"{name}/tokens"], atol=1e-5, rtol=0)


def test_reference_cases_batched(reference):
    """All cases that share a frame layout, compressed in one call, equal the reference."""
    group = [c for c in CASES if c["tokens_per_frame"] == 196 and c["dim"] == 128 and c["tau"] == 0.9]
    assert len(group) >= 3
    videos = [reference[f"{c['name']}/input"] for c in group]
    results = llava_scissor.compress(videos, tau=0.9)
    for c, r in zip(group, results):
        assert torch.equal(r.assignment, reference[f"{c['name']}/assignment"])
        torch.testing.assert_close(r.tokens, reference[f"{c['name']}/tokens"], atol=1e-5, rtol=0)


def test_approximate_mode_is_exact_below_the_sampling_size(reference):
    """With eps = 0.05, N' = N for N < ~3,300: the sampled mode equals the reference."""
    name = "synth_f8_d128_t090"
    r = llava_scissor.compress(reference[f"{name}/input"], tau=0.9, approximate=True, seed=123)
    assert torch.equal(r.assignment, reference[f"{name}/assignment"])
    torch.testing.assert_close(r.tokens, reference[f"{name}/tokens"], atol=1e-5, rtol=0)


def _assert_matches_reference(x: torch.Tensor, tau: float) -> None:
    ref = reference_compress(x, tau)
    r = llava_scissor.compress(x, tau=tau)
    assert torch.equal(r.spatial_labels, ref.spatial_labels)
    assert torch.equal(r.temporal_labels, ref.temporal_labels)
    assert torch.equal(r.assignment, ref.assignment)
    torch.testing.assert_close(r.tokens, ref.tokens, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES[:4], ids=[c["name"] for c in CASES[:4]])
def test_plain_reference_reproduces_the_authors_outputs(case, reference):
    """The oracle itself is right: core/reference.py gives the authors' labels and tokens."""
    name = case["name"]
    ref = reference_compress(reference[f"{name}/input"], case["tau"])
    assert torch.equal(ref.spatial_labels, reference[f"{name}/spatial_labels"])
    assert torch.equal(ref.temporal_labels, reference[f"{name}/temporal_labels"])
    assert torch.equal(ref.assignment, reference[f"{name}/assignment"])
    torch.testing.assert_close(ref.tokens, reference[f"{name}/tokens"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", range(6))
def test_compress_equals_the_plain_reference_on_random_videos(seed):
    """Random clustered videos, with duplicated tokens (exact ties) and a zero vector."""
    g = torch.Generator().manual_seed(seed)
    frames, n, d = 2 + seed % 3, 30 + 7 * seed, 8 + 4 * seed
    centers = torch.randn(6, d, generator=g)
    x = centers[torch.randint(0, 6, (frames, n), generator=g)] + 0.4 * torch.randn(frames, n, d, generator=g)
    x[0, 1] = x[0, 0]  # an exact duplicate
    x[-1, -1] = 0.0  # a zero vector: cosine 0 with everything
    _assert_matches_reference(x, tau=[0.5, 0.7, 0.8, 0.9, 0.3, -0.2][seed])
