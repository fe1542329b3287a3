"""Bad input raises ScissorError (a ValueError) with a message that says what and what was expected."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import llava_scissor
from llava_scissor import ScissorConfig, ScissorError

GOOD = torch.randn(2, 9, 4)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (torch.randn(9, 4), r"features must be \[frames, tokens_per_frame, dim\] \(rank 3\), got shape \(9, 4\)"),
        (torch.randn(1, 2, 9, 4), r"rank 3\), got shape \(1, 2, 9, 4\)"),
        (torch.randn(0, 9, 4), r"features is empty: shape \(0, 9, 4\)"),
        (torch.randn(2, 0, 4), r"features is empty"),
        (torch.ones(2, 9, 4, dtype=torch.int64), r"must have a floating dtype .* got torch.int64"),
        (torch.tensor([[[1.0, float("nan")]]]), r"contains 1 NaN or Inf value"),
        (torch.tensor([[[1.0, float("inf")], [0.0, -float("inf")]]]), r"contains 2 NaN or Inf value"),
        ("not a tensor", r"features must be a tensor \[frames, tokens_per_frame, dim\] or a list of them, got str"),
        ([], r"features is an empty list"),
        (
            [GOOD, torch.randn(2, 8, 4)],
            r"features\[1\] has tokens_per_frame x dim = \(8, 4\), but features\[0\] has \(9, 4\)",
        ),
        ([GOOD, GOOD.double()], r"features\[1\] is torch.float64 on cpu, but features\[0\] is torch.float32"),
        ([GOOD, torch.randn(9, 4)], r"features\[1\] must be \[frames, tokens_per_frame, dim\]"),
    ],
)
def test_bad_features(features, message):
    with pytest.raises(ScissorError, match=message):
        llava_scissor.compress(features)


def test_finite_values_too_large_to_square_are_accepted_and_nan_in_a_later_video_is_named():
    """The NaN / Inf check reads the tokens' norms: a finite token whose norm overflows
    goes to the value-by-value check, which accepts it; a NaN in the second video of a
    list is reported for that video."""
    big = GOOD.clone()
    big[0, 0] = 3e38  # finite in float32; its square is not
    llava_scissor.compress(big, retention=0.5)
    bad = GOOD.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ScissorError, match=r"features\[1\] contains 1 NaN or Inf value"):
        llava_scissor.compress([GOOD, bad])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tau": 1.5}, r"tau must be in \[-1, 1\], got 1.5"),
        ({"tau": -1.01}, r"tau must be in \[-1, 1\]"),
        ({"tau": float("nan")}, r"tau must not be NaN"),
        ({"tau": "0.9"}, r"tau must be a real number, got '0.9'"),
        ({"epsilon": 0.0}, r"epsilon must be a finite number > 0, got 0.0"),
        ({"epsilon": -1}, r"epsilon must be a finite number > 0"),
        ({"retention": 0.0}, r"retention must be in \(0, 1\], got 0.0"),
        ({"retention": 1.5}, r"retention must be in \(0, 1\], got 1.5"),
        ({"max_tokens": 0}, r"max_tokens must be >= 1, got 0"),
        ({"max_tokens": 2.5}, r"max_tokens must be an int >= 1, got 2.5"),
        ({"spatial_retention": 2.0}, r"spatial_retention must be in \(0, 1\]"),
        ({"seed": 1.5}, r"seed must be an int"),
        ({"similarity_dtype": "int8"}, r"similarity_dtype must be one of"),
        ({"merge": "yes"}, r"merge must be True or False"),
        ({"taus": 0.9}, r"unknown ScissorConfig field\(s\) \['taus'\]"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ScissorError, match=message):
        llava_scissor.compress(GOOD, **overrides)


def test_both_budgets_rejected():
    with pytest.raises(ScissorError, match="either retention or max_tokens, not both"):
        ScissorConfig(retention=0.1, max_tokens=10)


def test_unreachable_budgets():
    with pytest.raises(ScissorError, match=r"needs the spatial or the temporal step"):
        llava_scissor.compress(GOOD, max_tokens=5, spatial=False, temporal=False)
    with pytest.raises(ScissorError, match=r"at least the number of frames \(2\)"):
        llava_scissor.compress(GOOD, max_tokens=1, temporal=False)
    with pytest.raises(ScissorError, match=r"spatial budget \(4 tokens\) must be at least the final budget \(6"):
        llava_scissor.compress(GOOD, max_tokens=6, spatial_max_tokens=4)


def test_scissor_error_is_a_value_error():
    assert issubclass(ScissorError, ValueError)
    with pytest.raises(ValueError):
        llava_scissor.scc(torch.randn(3, 3, 3))


def test_scc_errors():
    with pytest.raises(ScissorError, match=r"tokens must be \[n, dim\] \(rank 2\)"):
        llava_scissor.scc(torch.randn(3))
    with pytest.raises(ScissorError, match=r"tau must be in \[-1, 1\]"):
        llava_scissor.scc(torch.randn(3, 2), tau=2.0)


def test_import_stays_lean():
    """Importing the package (or the core) loads neither transformers nor a video decoder."""
    code = (
        "import sys, llava_scissor, llava_scissor.core; "
        "bad = [m for m in ('transformers', 'av', 'PIL', 'safetensors') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert out.stderr == ""
