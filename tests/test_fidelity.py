"""Synthetic videos with ground truth, the fidelity metrics, and the benchmark command."""

from __future__ import annotations

import json

import pytest
import torch

import llava_scissor
from llava_scissor import ScissorError
from llava_scissor.core.result import CompressionResult
from llava_scissor.eval import Regions, fidelity, make_video, pseudo_regions, reconstruction
from llava_scissor.eval.fidelity import METRICS, format_tables, main, run_features, run_synthetic

SMALL = dict(frames=8, height=6, width=6, dim=32)


def regions_of(video) -> Regions:
    return Regions(video.prototypes, video.labels, tuple(video.regions_of("event")))


def test_generator_is_deterministic_with_known_regions():
    a, b, c = make_video(seed=3, **SMALL), make_video(seed=3, **SMALL), make_video(seed=4, **SMALL)
    assert torch.equal(a.features, b.features) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.features, c.features)
    assert a.features.shape == (8, 36, 32) and a.labels.shape == (8, 36)
    assert a.vision_attention.shape == (8, 36) and a.llm_attention.shape == (8, 36)
    assert set(a.kinds) == {"background", "object", "event"}
    # Events are short-lived; objects move (their token set changes between frames).
    for r in a.regions_of("event"):
        assert 1 <= int((a.labels == r).any(dim=1).sum()) <= 4
    moved = [r for r in a.regions_of("object") if not torch.equal(a.labels[0] == r, a.labels[-1] == r)]
    assert moved
    # Tokens are closer to their own prototype than to any other.
    x = torch.nn.functional.normalize(a.features, dim=-1)
    sim = x.reshape(-1, 32) @ a.prototypes.T
    assert torch.equal(sim.argmax(1), a.labels.reshape(-1))


def test_generator_rejects_bad_sizes():
    with pytest.raises(ScissorError, match="frames must be >= 1"):
        make_video(frames=0)
    with pytest.raises(ScissorError, match="event_frames"):
        make_video(event_frames=(3, 1))


def test_metrics_on_identity_and_single_token():
    v = make_video(seed=1, **SMALL)
    full = llava_scissor.compress(v.features, method="uniform", retention=1.0, merge=False)
    scores = fidelity(full, v.features, regions_of(v))
    assert scores["reconstruction"] == pytest.approx(1.0, abs=1e-5)
    assert scores["region_coverage"] == 1.0 and scores["event_coverage"] == 1.0
    one = llava_scissor.compress(v.features, method="pooling", max_tokens=1)
    scores = fidelity(one, v.features, regions_of(v))
    assert scores["region_coverage"] < 0.5 and scores["event_coverage"] == 0.0
    assert scores["reconstruction"] < 0.9


def test_event_coverage_counts_a_kept_event_token():
    v = make_video(seed=2, **SMALL)
    events = v.regions_of("event")
    assert events
    flat_labels = v.labels.reshape(-1)
    first_event_token = int(torch.nonzero(flat_labels == events[0])[0])
    background_token = int(torch.nonzero(flat_labels == 0)[0])
    kept = torch.tensor(sorted([first_event_token, background_token]))
    flat = v.features.reshape(-1, 32)
    assignment = torch.full((flat.shape[0],), -1, dtype=torch.long)
    assignment[kept] = torch.arange(2)
    result = CompressionResult(
        tokens=flat[kept],
        assignment=assignment,
        representatives=kept,
        sizes=torch.ones(2, dtype=torch.long),
        frames=8,
        tokens_per_frame=36,
    )
    scores = fidelity(result, v.features, regions_of(v))
    assert scores["event_coverage"] == pytest.approx(1 / len(events))
    # Discarded tokens count with their nearest output token.
    assert 0.0 < reconstruction(result, v.features) < 1.0


def test_scissor_keeps_more_events_than_pooling():
    table = run_synthetic(["scissor", "pooling"], retentions=(0.1,), videos=2, seed=0, **SMALL)
    assert set(table) == {"scissor", "pooling"}
    assert set(table["scissor"][0.1]) == set(METRICS)
    assert table["scissor"][0.1]["event_coverage"] >= table["pooling"][0.1]["event_coverage"]
    assert table["scissor"][0.1]["region_coverage"] > table["pooling"][0.1]["region_coverage"]


def test_pseudo_regions_and_real_feature_mode():
    v = make_video(seed=5, **SMALL)
    regions = pseudo_regions(v.features, clusters=12)
    assert regions.labels.shape == (8, 36) and regions.prototypes.shape == (12, 32)
    table = run_features(
        v.features,
        {"vision_attention": v.vision_attention},
        ["uniform", "visionzip", "fastv"],
        retentions=(0.25,),
        clusters=12,
    )
    assert set(table) == {"uniform", "visionzip"}  # fastv's LLM attention is not available


def test_command_prints_method_by_retention_by_metric(capsys):
    argv = [
        "--methods",
        "uniform",
        "dycoke",
        "--retention",
        "0.1",
        "0.05",
        "--videos",
        "1",
        "--frames",
        "8",
        "--grid",
        "6",
        "6",
        "--dim",
        "32",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for metric in METRICS:
        assert f"## {metric}" in out
    assert "| method | 10 % | 5 % |" in out and "| dycoke |" in out
    assert main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["table"]) == {"uniform", "dycoke"} and set(data["table"]["uniform"]) == {"0.1", "0.05"}
    assert main(["--model", "x"]) == 2
    assert "go together" in capsys.readouterr().err


def test_format_tables_empty():
    assert format_tables({}) == "(no results)"
