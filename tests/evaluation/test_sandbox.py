"""The sandbox holds: no network, no writes outside its scratch folder, and fork bombs,
memory hogs, endless loops and output floods end without harming the host."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from codemix.core.errors import CodemixError
from codemix.evaluation import sandbox
from codemix.evaluation.sandbox import Outcome, run_many, run_program

needs_sandbox = pytest.mark.skipif(
    sandbox.available() is not None, reason=f"sandbox unavailable: {sandbox.available()}"
)


def _with_marker(marker: str, code: str) -> str:
    """A program that re-executes `code` with `marker` on its command line, so the test
    can find every process it leaves behind (children inherit the command line)."""
    argv = f"[sys.executable, '-c', {code!r}, {marker!r}]"
    return f"import os, sys\nos.execv(sys.executable, {argv})\n"


def _marked(marker: str) -> list[int]:
    """Host processes whose command line holds the marker."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:  # it ended meanwhile
                pass
    return pids


def _gone(marker: str, within_s: float = 3.0) -> bool:
    end = time.monotonic() + within_s
    while _marked(marker):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


@needs_sandbox
def test_exit_status_decides():
    assert run_program("print('hi')") == Outcome("passed", "")
    failed = run_program("assert 1 + 1 == 3, 'arithmetic'")
    assert failed.status == "failed" and "AssertionError: arithmetic" in failed.detail
    assert run_program("import sys; sys.exit(3)") == Outcome("failed", "exit status 3")
    assert run_program("def f(:\n").status == "failed"


@needs_sandbox
def test_runs_as_main_with_limits_set():
    program = f"""
import math, resource as r, sys, __main__
assert __name__ == "__main__" and __main__.__file__ == __file__ == sys.argv[0]
assert r.getrlimit(r.RLIMIT_AS) == ({300 << 20}, {300 << 20})
assert r.getrlimit(r.RLIMIT_CPU) == (3, 4)
assert r.getrlimit(r.RLIMIT_NPROC)[0] <= {sandbox.MAX_PROCESSES}
assert r.getrlimit(r.RLIMIT_FSIZE)[0] == {sandbox.FILE_MB << 20}
caps = [line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff")]
assert int(caps[0], 16) == 0, caps  # no capabilities, even when the host runs as root
"""
    assert run_program(program, timeout_s=2.5, memory_mb=300).status == "passed"


@needs_sandbox
def test_no_network():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable here
        program = f"""
import socket
for address in (("127.0.0.1", {port}), ("1.1.1.1", 80), ("8.8.8.8", 53)):
    try:
        socket.create_connection(address, timeout=3)
    except OSError:
        continue
    raise SystemExit(f"connected to {{address}}")
try:
    socket.getaddrinfo("example.com", 80)
except OSError:
    pass
else:
    raise SystemExit("resolved a name")
"""
        outcome = run_program(program, timeout_s=20)
    finally:
        server.close()
    assert outcome.status == "passed", outcome


@needs_sandbox
def test_writes_only_in_scratch(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    tag = uuid.uuid4().hex
    outside = [
        tmp_path / f"escape-{tag}",
        Path("/tmp") / f"codemix-escape-{tag}",
        repo / f"escape-{tag}",
        Path.home() / f"escape-{tag}",
    ]
    monkeypatch.setenv("CODEMIX_TEST_SECRET", tag)
    program = f"""
import os
from pathlib import Path
for path in {[str(p) for p in outside]!r} + [os.path.join(os.getcwd(), "..", "escape")]:
    try:
        Path(path).write_text("x")
    except OSError:
        continue
    raise SystemExit(f"wrote {{path}}")
Path("inside.txt").write_text("scratch works")
assert Path("inside.txt").read_text() == "scratch works"
assert os.environ["HOME"] == os.environ["TMPDIR"] == os.getcwd()
assert "CODEMIX_TEST_SECRET" not in os.environ
assert {str(repo / "README.md")!r} and Path({str(repo / "README.md")!r}).read_text()  # readable
import sys
print(os.getcwd(), file=sys.stderr)
"""
    outcome = run_program(program)
    assert outcome.status == "passed", outcome
    assert not any(p.exists() for p in outside)
    scratch = Path(outcome.detail.splitlines()[-1])
    assert scratch.name == "work" and not scratch.parent.exists()  # the temp dir is removed


@needs_sandbox
def test_scratch_is_bounded():
    program = """
from pathlib import Path
try:
    for i in range(1000):
        Path(f"f{i}").write_bytes(b"x" * (1 << 20))
except OSError as e:
    print(i, e)
    raise SystemExit(0 if i < 200 else 1)
raise SystemExit("wrote 1 GB")
"""
    assert run_program(program).status == "passed"


@needs_sandbox
def test_process_limit():
    program = """
import os, sys, time
n = 0
try:
    for _ in range(1000):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError:
    pass
print(n, file=sys.stderr)
"""
    outcome = run_program(program, timeout_s=20)
    assert outcome.status == "passed", outcome
    assert 10 < int(outcome.detail) < sandbox.MAX_PROCESSES  # bwrap's processes count too


@needs_sandbox
def test_fork_bomb_is_contained():
    marker = f"forkbomb-{uuid.uuid4().hex}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    peak, result = [0], []
    worker = threading.Thread(
        target=lambda: result.append(run_program(_with_marker(marker, bomb), timeout_s=3))
    )
    start = time.monotonic()
    worker.start()
    while worker.is_alive():
        peak[0] = max(peak[0], len(_marked(marker)))
        time.sleep(0.05)
    worker.join()
    assert time.monotonic() - start < 15
    assert result[0].status == "timeout"
    assert 1 <= peak[0] <= sandbox.MAX_PROCESSES
    assert _gone(marker)


@needs_sandbox
def test_memory_is_limited():
    outcome = run_program("x = bytearray(4 << 30)", memory_mb=256)
    assert outcome.status == "failed" and "MemoryError" in outcome.detail


@needs_sandbox
def test_timeout_kills_everything():
    marker = f"stubborn-{uuid.uuid4().hex}"
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(1000)\n"
    )
    program = f"""
import subprocess, sys
# a child that ignores SIGTERM and leaves the process group
subprocess.Popen([sys.executable, "-c", {stubborn!r}, {marker!r}], start_new_session=True)
while True:
    pass
"""
    seen, result = [], []
    worker = threading.Thread(target=lambda: result.append(run_program(program, timeout_s=2)))
    start = time.monotonic()
    worker.start()
    while worker.is_alive():
        seen += _marked(marker)
        time.sleep(0.05)
    worker.join()
    assert time.monotonic() - start < 10
    assert result[0] == Outcome("timeout", "wall-clock limit of 2 s")
    assert seen, "the child never started"
    assert _gone(marker)


@needs_sandbox
def test_cpu_limit_counts_as_timeout():
    program = "import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)\n"  # what RLIMIT_CPU sends
    assert run_program(program, timeout_s=5).status == "timeout"


@needs_sandbox
def test_output_floods_are_capped():
    start = time.monotonic()
    out = run_program("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", timeout_s=2)
    assert out.status == "timeout"
    err = run_program("import sys\nwhile True:\n    sys.stderr.write('y' * 65536)\n", timeout_s=20)
    assert err.status == "failed" and len(err.detail) <= sandbox.DETAIL_CHARS
    assert time.monotonic() - start < 15  # stderr stopped at FILE_MB, long before 20 s


@needs_sandbox
def test_run_many_keeps_order():
    sources = [
        f"import sys, time\ntime.sleep({0.05 * (5 - i)})\nsys.exit({i % 3})" for i in range(6)
    ]
    outcomes = run_many(sources, workers=3)
    assert [o.status for o in outcomes] == ["passed", "failed", "failed"] * 2
    assert outcomes[1].detail == "exit status 1" and outcomes[5].detail == "exit status 2"
    assert run_many([]) == []


def test_nothing_runs_unsandboxed(monkeypatch):
    monkeypatch.setattr(sandbox, "available", lambda: "bubblewrap is not installed")
    with pytest.raises(CodemixError, match="bubblewrap is not installed"):
        run_program("print(1)")
    with pytest.raises(CodemixError, match="bubblewrap is not installed"):
        run_many(["print(1)"])


def test_reason_names_the_package(monkeypatch):
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    reason = sandbox.available.__wrapped__()
    assert "bubblewrap" in reason and "apt-get install bubblewrap" in reason
