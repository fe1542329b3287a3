"""Output files that cannot destroy what a user owns.

Every file the library writes (``compress``'s safetensors, ``visualize``'s PNG / GIF /
HTML) goes through ``atomic_output``: the bytes go to a temporary file in the output's
own folder, which is renamed over the output only once complete. A reader, or a second
writer, sees the old file or the new one, never a partial one; an error or an interrupt
mid-write leaves the old file as it was and no temporary file behind (removed on every
exit path Python runs: exceptions, KeyboardInterrupt, SystemExit; the command line turns
SIGTERM into SystemExit). A new output gets the permissions of the umask (as ``open``
would), a replaced one keeps its own.

``check_output`` runs before any work: the name's suffix, the folder exists and accepts
a new file (tried by creating one), the output is not a folder or a device, and it is
none of the inputs (compared by device and inode, so links to an input are caught too).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import Iterator, Sequence

from ._errors import ScissorError

__all__ = ["check_output", "atomic_output"]


def check_output(path: str, suffixes: Sequence[str], inputs: Sequence[str | None] = ()) -> None:
    """Raise ScissorError unless ``path`` can be written as an output, before any work.

    suffixes: accepted endings (lower case, with the dot); inputs: paths the command
    reads (None entries skipped), none of which the output may be.
    """
    if not path:
        raise ScissorError("output path is empty")
    if not path.lower().endswith(tuple(suffixes)):
        raise ScissorError(f"output must end in {' or '.join(suffixes)}, got {path!r}")
    target = os.path.realpath(path)  # write through a link to the file it names
    if os.path.isdir(target):
        raise ScissorError(f"output is a directory: {path}")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise ScissorError(f"output folder does not exist: {os.path.dirname(os.path.abspath(path))}")
    if os.path.lexists(target):
        st = os.stat(target)
        if not stat.S_ISREG(st.st_mode):
            raise ScissorError(f"output exists and is not a regular file: {path}")
        if not os.access(target, os.W_OK):
            raise ScissorError(f"output exists and is read-only: {path}")
        for source in inputs:
            if source is not None and os.path.exists(source) and os.path.samestat(st, os.stat(source)):
                raise ScissorError(
                    f"output {path} is the input {source} (the same file); writing it would destroy "
                    "the input: choose another output name"
                )
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    except OSError as exc:
        raise ScissorError(f"cannot write in the output folder {parent}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[str]:
    """``with atomic_output(path) as tmp:`` write the whole output to ``tmp``.

    On a normal exit ``tmp`` replaces ``path`` (one rename, in the same folder); on any
    exception, KeyboardInterrupt included, ``tmp`` is removed and ``path`` is unchanged.
    The temporary name ends in ``.tmp``: writers that pick a format from the suffix must
    be told the format.
    """
    target = os.path.realpath(os.fspath(path))
    folder, name = os.path.split(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    except OSError as exc:
        raise ScissorError(f"cannot write in the output folder {folder}: {exc.strerror or exc}") from None
    try:
        os.close(fd)
        yield tmp
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)  # a replaced file keeps its permissions
        except FileNotFoundError:
            mode = 0o666 & ~_umask()  # mkstemp makes 0600; a new output follows the umask
        os.chmod(tmp, mode)  # after writing: a writer may have replaced tmp with a file of its own
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
