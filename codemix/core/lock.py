"""One writer per folder: a run folder, or a population's checkpoints, belongs to the
process that holds its lock (an advisory `flock` on FOLDER/.lock, released when the process
ends, however it ends)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codemix.core.errors import CodemixError

_held: dict[Path, int] = {}  # folders this process holds -> nesting depth


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold FOLDER/.lock for the block, or fail at once if another process holds it."""
    folder = Path(folder).absolute()
    if folder in _held:  # the same process nests (a run locks its folder, then its trainer)
        _held[folder] += 1
        try:
            yield
        finally:
            _held[folder] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise CodemixError(
            f"{what} {folder} is being written by another codemix process{holder}; wait for "
            "it to finish or use another folder (nothing was changed)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode())
    _held[folder] = 1
    try:
        yield
    finally:
        del _held[folder]
        os.close(fd)  # closing drops the flock; the file stays, harmless


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 256, 0) or b"{}")
        since = time.strftime("%H:%M:%S", time.localtime(info["since"]))
        return f" (pid {info['pid']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
