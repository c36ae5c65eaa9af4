"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

Only regular files are replaced: a temp file renamed over a device node, a FIFO or a symlink
would destroy it (``-o /dev/null`` as root would replace the system node). Symlinks are
followed (the link stays, its target gets the new content), directories and other special
files are refused with :class:`~hifitrt.errors.OutputError`, and :func:`write_output` writes
through character devices and FIFOs instead of replacing them.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError


def _resolve_target(target: Path) -> tuple[Path, os.stat_result | None]:
    """(path to write, its stat or None when new): symlinks are followed, never replaced."""
    try:
        info = target.stat()  # follows links, /proc/self/fd magic links included
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        return target, info  # a device or FIFO is opened by the name the user gave
    return (Path(os.path.realpath(target)) if target.is_symlink() else target), info


def _is_stream_name(target: Path) -> bool:
    """``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``: an already-open stream, even when it
    leads to a regular file (``> out.wav``, ``>> log``) that an atomic replace would clobber."""
    text = os.path.abspath(target)
    return text.startswith(("/dev/", "/proc/")) and os.path.realpath(target) != text


def _refuse_special(target: Path, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{target} is a directory: name a file to write")
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{target} is not a regular file (a device, FIFO or socket): refusing to replace it")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success it replaces ``target``, else it is removed.

    ``target`` must be new or a regular file (a symlink writes its target); anything else is
    an :class:`OutputError`, as is a directory that cannot be written.
    """
    target, info = _resolve_target(Path(target))
    if info is not None:
        _refuse_special(target, info)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except FileExistsError:
        raise OutputError(f"cannot write {target}: a parent of it is a file, not a directory") from None
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; artifacts are shared like any other file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_output(target: Path, data: bytes) -> None:
    """Write a user-named output file: atomically for a regular or new file, written through
    for a character device or FIFO (``/dev/null``, ``/dev/stdout``, a pipe), refused otherwise."""
    real, info = _resolve_target(Path(target))
    if info is not None and (stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)
                             or _is_stream_name(Path(target))):
        try:
            with open(target, "ab") as handle:  # append: never truncate what a stream leads to
                handle.write(data)
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
        return
    write_bytes(Path(target), data)
