"""One writer per folder."""

import subprocess
import sys
import time

import pytest

from codemix.core.errors import CodemixError
from codemix.core.lock import folder_lock

HOLD = (
    "from codemix.core.lock import folder_lock; import sys, time\n"
    "with folder_lock(sys.argv[1], 'folder'):\n    print('held', flush=True); time.sleep(30)"
)


def test_a_second_process_is_refused_and_the_first_keeps_it(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(CodemixError, match=f"another codemix process \\(pid {proc.pid}"):
            with folder_lock(tmp_path, "folder"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with folder_lock(tmp_path, "folder"):  # a dead holder's lock is gone with it
        pass


def test_the_same_process_may_nest(tmp_path):
    with folder_lock(tmp_path / "run", "--out"), folder_lock(tmp_path / "run", "folder"):
        assert (tmp_path / "run" / ".lock").is_file()
    with folder_lock(tmp_path / "run", "--out"):  # released after the outer block
        time.sleep(0)
