import os
import stat

import pytest

from codemix.core import files
from codemix.core.errors import CodemixError
from codemix.core.files import atomic_path, atomic_write_bytes, atomic_write_text, current_umask


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it(umask_022):
    assert current_umask() == 0o022
    assert current_umask() == 0o022


def test_written_files_get_the_usual_permissions(tmp_path, umask_022):
    atomic_write_text(tmp_path / "manifest.json", "{}")
    atomic_write_bytes(tmp_path / "data.bin", b"\x00\x01")
    assert _mode(tmp_path / "manifest.json") == 0o644
    assert _mode(tmp_path / "data.bin") == 0o644
    assert (tmp_path / "data.bin").read_bytes() == b"\x00\x01"


def test_a_stricter_umask_is_honoured(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private.json") == 0o600


def test_failed_rename_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_writer_that_fails_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "tokenizer.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CodemixError, match="output folder .*no.* does not exist"):
        atomic_write_text(tmp_path / "no" / "out.txt", "x")
