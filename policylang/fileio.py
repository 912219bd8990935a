"""The one atomic file write: a temporary file beside the target, flushed and fsynced,
then renamed over it, so a reader sees the old contents or the new, never half."""

from __future__ import annotations

import os
import stat
import tempfile


def write_atomically(path: str | os.PathLike, text: str, *, mode: int | None = None,
                     keep_mode: bool = False, follow_links: bool = True) -> None:
    """Replace ``path``'s contents with ``text`` (UTF-8) atomically.

    A symlink is followed (its target is replaced, the link kept); with
    ``follow_links=False`` the rename replaces whatever is at ``path`` itself, so nothing
    is ever written through a link (one that appeared after the caller checked included).
    ``mode`` sets the new file's permission bits (``0o600`` for secrets, applied before
    any byte is written); ``keep_mode`` copies the bits of the file being replaced. The
    temporary file is removed on any failure.
    """
    real = os.path.realpath(os.fspath(path)) if follow_links else os.path.abspath(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", suffix=".tmp",
                               dir=os.path.dirname(real) or ".")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        elif keep_mode:
            try:
                old = os.stat(real, follow_symlinks=follow_links)
                if stat.S_ISREG(old.st_mode):  # never a link's bits (follow_links=False)
                    os.fchmod(fd, old.st_mode & 0o7777)
            except OSError:
                pass
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_input(path: str) -> bytes:
    """The bytes of ``path``, or of standard input when ``path`` is ``-`` (the CLI's
    convention). Raises OSError as ``open`` does."""
    if path == "-":
        import sys
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()
