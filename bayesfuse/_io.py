"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

An interrupted run never leaves a half-written output file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from bayesfuse.errors import BayesfuseError

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "check_overwrite"]


def check_overwrite(path: str | os.PathLike[str], force: bool) -> Path:
    """Refuse to overwrite an existing file unless ``force``."""
    target = Path(path)
    if target.exists() and not force:
        raise BayesfuseError(f"{target} exists; pass --force (force=True) to overwrite it.")
    return target


def _file_mode(target: Path) -> int:
    """The permissions a new file gets (umask applied), or those of the file replaced."""
    if target.exists():
        return stat.S_IMODE(target.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.exists():
        raise BayesfuseError(f"Cannot write {target}: folder {folder} does not exist.")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp",
                                    dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode(target))  # mkstemp's 0600 would hide reports from others
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[Path], None],
                      suffix: str = "") -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path, suffix=suffix) as tmp:
        writer(tmp)
    return Path(path)
