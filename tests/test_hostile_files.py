"""Bad output files on purpose: nothing a user owns is lost.

A table of outputs, options and input files that must be refused, run through the command
line: exit status 2,
exactly one line on stderr, no traceback, no file of the user's changed (contents, mode,
and no file added). Then the writes themselves: atomic (a reader or an interrupted write
never sees a partial file), temporary files removed on every exit path, permissions
from the umask.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("safetensors")
pytest.importorskip("PIL")

from safetensors.torch import save_file  # noqa: E402
from test_video import write_video  # noqa: E402

from llava_scissor import ScissorError  # noqa: E402
from llava_scissor.cli import main  # noqa: E402

FRAMES, TOKENS, DIM = 4, 16, 8
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (links by their target's bytes): contents and mode."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() or path.is_symlink():
            st = os.lstat(path)
            data = path.read_bytes() if path.is_file() else b""
            out[str(path.relative_to(folder))] = (data, st.st_mode)
    return out


@pytest.fixture()
def user(tmp_path: Path) -> dict[str, str]:
    """A folder of the user's files: features, a GIF video, links to both, a FIFO."""
    feats = torch.randn(FRAMES, TOKENS, DIM, generator=torch.Generator().manual_seed(0))
    features = tmp_path / "feats.safetensors"
    save_file({"features": feats}, str(features))
    gif = Path(write_video(str(tmp_path / "clip.gif"), FRAMES, codec="gif", pix_fmt="rgb8", size=(32, 32)))
    (tmp_path / "link.safetensors").symlink_to(features)
    os.link(features, tmp_path / "hard.safetensors")
    (tmp_path / "link.gif").symlink_to(gif)
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    readonly = tmp_path / "readonly.png"
    readonly.write_bytes(b"not yours to replace")
    readonly.chmod(0o444)
    (tmp_path / "earlier.safetensors").write_bytes(b"an earlier result")  # must survive every refusal
    (tmp_path / "earlier.png").write_bytes(b"an earlier picture")
    (tmp_path / "corrupt.safetensors").write_bytes(random.Random(0).randbytes(256))
    return {"root": str(tmp_path), "features": str(features), "gif": str(gif)}


BAD = {
    "compress output is its input": (["compress", "--features", "{features}", "-o", "{features}"], "is the input"),
    "compress output links to its input": (
        ["compress", "--features", "{features}", "-o", "{root}/link.safetensors"],
        "is the input",
    ),
    "compress output is a hard link of its input": (
        ["compress", "--features", "{features}", "-o", "{root}/hard.safetensors"],
        "is the input",
    ),
    "compress input through a link is the output": (
        ["compress", "--features", "{root}/link.safetensors", "-o", "{features}"],
        "is the input",
    ),
    "visualize output is its video": (
        ["visualize", "{gif}", "--features", "{features}", "-o", "{gif}"],
        "is the input",
    ),
    "visualize output links to its video": (
        ["visualize", "{gif}", "--features", "{features}", "-o", "{root}/link.gif"],
        "is the input",
    ),
    "output in an unwritable place": (
        ["compress", "--features", "{features}", "-o", "/proc/x.safetensors"],
        "cannot write in the output folder",
    ),
    # the output is checked before the model is looked for: no model error, no work
    "unwritable output, before any work": (
        ["compress", "{gif}", "--model", "{root}/no-such-model", "-o", "/proc/x.safetensors"],
        "cannot write in the output folder",
    ),
    "output folder missing": (
        ["visualize", "{gif}", "--features", "{features}", "-o", "{root}/nope/x.png"],
        "folder does not exist",
    ),
    "output is a folder": (
        ["visualize", "{gif}", "--features", "{features}", "-o", "{root}/folder.png"],
        "is a directory",
    ),
    "output is not a regular file": (
        ["visualize", "{gif}", "--features", "{features}", "-o", "{root}/fifo.png"],
        "not a regular file",
    ),
    "output with a wrong suffix": (["compress", "--features", "{features}", "-o", "{root}/out.bin"], ".safetensors"),
    # bad options and inputs next to an existing output: refused, the output untouched
    "unknown method": (
        ["compress", "--features", "{features}", "--method", "nope", "-o", "{root}/earlier.safetensors"],
        "unknown method 'nope'",
    ),
    "baseline without a budget": (
        ["visualize", "{gif}", "--features", "{features}", "--method", "dycoke", "-o", "{root}/earlier.png"],
        "needs a budget",
    ),
    "bad method option": (
        [
            "compress",
            "--features",
            "{features}",
            "--method",
            "visionzip",
            "--retention",
            "0.2",
            "--option",
            "dominant_ratio=0",
            "-o",
            "{root}/earlier.safetensors",
        ],
        "dominant_ratio must be > 0",
    ),
    "retention out of range": (
        ["compress", "--features", "{features}", "--retention", "2", "-o", "{root}/earlier.safetensors"],
        "retention must be in (0, 1]",
    ),
    "corrupt features file": (
        ["compress", "--features", "{root}/corrupt.safetensors", "-o", "{root}/earlier.safetensors"],
        "cannot read features file",
    ),
    "features that do not fit the video's grid": (
        ["visualize", "{gif}", "--features", "{features}", "--grid", "3x3", "-o", "{root}/earlier.png"],
        "grid",
    ),
}
if not ROOT:  # root may write anything: permissions cannot refuse it
    BAD["output is read-only"] = (
        ["visualize", "{gif}", "--features", "{features}", "-o", "{root}/readonly.png"],
        "read-only",
    )


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_output_is_refused(capsys: Any, monkeypatch: Any, case: str, user: dict[str, str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv, expected = BAD[case]
    before = _snapshot(Path(user["root"]))
    code = main([a.format(**user) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("llava-scissor: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert _snapshot(Path(user["root"])) == before  # nothing changed, nothing left behind


# --------------------------------------------------------------------------- the writes


@pytest.mark.parametrize("suffix", [".safetensors", ".png", ".gif", ".html"])
def test_interrupted_write_keeps_the_old_file(capsys: Any, monkeypatch: Any, user: dict[str, str], suffix: str) -> None:
    """An interrupt after the bytes are written and before the rename (the last moment):
    the existing output is intact and no temporary file is left."""
    root = Path(user["root"])
    output = root / f"out{suffix}"
    output.write_bytes(b"an earlier result the user keeps" * 1000)
    before = _snapshot(root)

    def interrupted(src: str, dst: str) -> None:
        assert Path(src).parent == Path(dst).parent == root  # same folder: one rename
        assert Path(src).stat().st_size > 0 and output.read_bytes() == before[output.name][0]
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    argv = (
        ["compress", "--features", user["features"]]
        if suffix == ".safetensors"
        else ["visualize", user["gif"], "--features", user["features"]]
    )
    code = main([*argv, "--retention", "0.25", "-o", str(output)])
    _, err = capsys.readouterr()
    assert code == 130 and "interrupted" in err
    assert _snapshot(root) == before


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, OSError, ScissorError])
def test_atomic_output_removes_its_temporary_file(tmp_path: Path, exc: type[BaseException]) -> None:
    from llava_scissor._files import atomic_output

    target = tmp_path / "result.html"
    target.write_text("old")
    with pytest.raises(exc):
        with atomic_output(target) as tmp:
            Path(tmp).write_text("half of a new pa")
            assert target.read_text() == "old"  # readers see the old file meanwhile
            raise exc()
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["result.html"]


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(capsys: Any, tmp_path: Path, user: dict[str, str], mask: int) -> None:
    old = os.umask(mask)
    try:
        out = tmp_path / "c.safetensors"
        assert main(["compress", "--features", user["features"], "-o", str(out)]) == 0
        png = tmp_path / "v.png"
        assert main(["visualize", user["gif"], "--features", user["features"], "-o", str(png)]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    for path in (out, png):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    # a replaced output keeps the permissions its owner gave it
    out.chmod(0o640)
    assert main(["compress", "--features", user["features"], "--retention", "0.5", "-o", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o640


def test_output_through_a_link_writes_the_linked_file(capsys: Any, tmp_path: Path, user: dict[str, str]) -> None:
    real = tmp_path / "real.png"
    real.write_bytes(b"old")
    link = tmp_path / "alias.png"
    link.symlink_to(real)
    assert main(["visualize", user["gif"], "--features", user["features"], "-o", str(link)]) == 0
    capsys.readouterr()
    assert link.is_symlink() and real.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_output_runs_before_anything_is_created(tmp_path: Path) -> None:
    from llava_scissor._files import check_output

    check_output(str(tmp_path / "x.png"), (".png",))
    assert os.listdir(tmp_path) == []  # its probe file is gone
    with pytest.raises(ScissorError, match="cannot write"):
        check_output("/proc/x.png", (".png",))


def test_terminated_command_leaves_no_temporary_file(tmp_path: Path) -> None:
    """SIGTERM during a write (the command line's handler): exit 143, nothing left behind."""
    target = tmp_path / "big.html"
    script = textwrap.dedent(f"""
        import sys, time
        from llava_scissor._files import atomic_output
        from llava_scissor.cli import _exit_on_sigterm
        _exit_on_sigterm()
        with atomic_output({str(target)!r}) as tmp:
            open(tmp, "w").write("x" * 100000)
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    assert any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - start < 30
    assert os.listdir(tmp_path) == []


def test_same_file_check_is_by_inode_not_by_name(tmp_path: Path) -> None:
    from llava_scissor._files import check_output

    a = tmp_path / "a.png"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "b.png")
    with pytest.raises(ScissorError, match="is the input"):
        check_output(str(tmp_path / "b.png"), (".png",), inputs=[str(a)])
    np.save(tmp_path / "c.npy", np.zeros(1))  # a different file of equal size is fine
    check_output(str(a), (".png",), inputs=[str(tmp_path / "c.npy")])
