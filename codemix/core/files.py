"""Writing files so that a killed process never leaves half of one behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codemix.core.errors import CodemixError


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    os.umask can only be read by setting it, which for a moment changes the mask of every
    thread; Linux shows it in /proc instead, so that race is left to other systems."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on success it is renamed onto `path`
    with the permissions a plain open() would give, on failure it is removed.

    For writers that want a file name (a tokenizer's save, numpy's tofile)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CodemixError(f"output folder {path.parent} does not exist")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes 0600 files: shared group folders on clusters need the usual mode
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (no partial files)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # so a crash after the rename cannot leave an empty file


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))
