"""Run untrusted Python programs (a model's completions and their tests) in a bubblewrap
sandbox.

Each program gets, through `bwrap`:

- no network: a new network namespace holds only its own loopback;
- a read-only view of the whole file system, and one writable scratch folder: a tmpfs of
  `SCRATCH_MB` mounted on a fresh temporary directory (the working directory, `HOME` and
  `TMPDIR`), gone with the sandbox; the directory itself is removed afterwards;
- no capabilities (`--cap-drop ALL`: as root, bwrap otherwise keeps them all) and no
  privilege gain (bwrap sets no_new_privs), no nested user namespaces;
- limits set inside the sandbox before the program starts: address space (`memory_mb`, a
  limit per process), CPU seconds (the wall timeout rounded up: a backstop, the wall clock
  normally ends a program first), largest file (`FILE_MB`, stderr included);
- at most `MAX_PROCESSES` processes and threads. As a non-root user that is
  RLIMIT_NPROC, which counts the processes of the sandbox's own user namespace. As root it
  is not: the kernel never applies RLIMIT_NPROC to global uid 0, and bwrap's user
  namespace maps the sandbox's uid to 0. Root uses a pids cgroup instead (cgroup v1
  `/sys/fs/cgroup/pids`, or a cgroup v2 root with the pids controller): one per program,
  joined before bwrap starts so nothing forks outside it, removed afterwards. Without one,
  `available()` says so and nothing runs;
- a wall-clock timeout, after which its whole process group is killed (and its pids
  cgroup, and with its PID namespace's init every process left in the namespace, including
  ones that started their own session);
- stdout discarded (the outcome needs only the exit status), stderr kept up to `FILE_MB`
  and its last `DETAIL_CHARS` characters reported.

Nothing runs unsandboxed: when bubblewrap does not work here `run_program` raises.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from codemix.core.errors import CodemixError

MAX_PROCESSES = 32  # processes and threads in one sandbox, bwrap's own two or three included
SCRATCH_MB = 64  # size of the writable tmpfs
FILE_MB = 16  # largest file the program may write (RLIMIT_FSIZE), its stderr included
DETAIL_CHARS = 1000

_CGROUP_BASES = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))  # v1, v2
_CGROUP_PREFIX = "codemix-sandbox-"
_cgroup_seq = itertools.count()

# What the sandbox runs (`python -I -c`): sets the limits, then runs the program as a fresh
# __main__ in the same interpreter (a second interpreter, or runpy, would add much of the
# cost of a short program). Limits are set here rather than on bwrap because RLIMIT_NPROC
# must count the sandbox's user namespace only, not all of the user's processes.
_BOOT = """\
import resource as r, sys
mem, cpu, nproc, fsize = map(int, sys.argv[1:5])
for kind, soft, hard in (
    (r.RLIMIT_AS, mem, mem), (r.RLIMIT_CPU, cpu, cpu + 1), (r.RLIMIT_NPROC, nproc, nproc),
    (r.RLIMIT_FSIZE, fsize, fsize), (r.RLIMIT_CORE, 0, 0),
):
    cap = r.getrlimit(kind)[1]  # without capabilities a hard limit can only go down
    if cap != r.RLIM_INFINITY:
        soft, hard = min(soft, cap), min(hard, cap)
    r.setrlimit(kind, (soft, hard))
sys.argv = sys.argv[5:]
with open(sys.argv[0], "rb") as f:
    code = compile(f.read(), sys.argv[0], "exec")
main = sys.modules["__main__"] = type(sys)("__main__")
main.__file__ = sys.argv[0]
exec(code, vars(main))
"""

# Joins the pids cgroup ($1), then becomes bwrap: the cgroup holds every process from the
# start (a process forked before a later move would stay outside it).
_JOIN_CGROUP = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'


@dataclass(frozen=True)
class Outcome:
    """How one program ended: passed (exit 0), failed (nonzero exit), timeout (wall or CPU
    limit) or error (the sandbox could not start it); detail is a tail of stderr or the
    reason."""

    status: str  # "passed" | "failed" | "timeout" | "error"
    detail: str


@functools.cache
def available() -> str | None:
    """None when programs can be run sandboxed here, else a one-line reason."""
    if _bwrap() is None:
        return (
            "bubblewrap is not installed (Debian package `bubblewrap`: apt-get install bubblewrap)"
        )
    if os.getuid() == 0:
        _sweep_cgroups()
        if _pids_base() is None:
            return (
                "running as root, where RLIMIT_NPROC does not apply, and no writable pids cgroup "
                "(cgroup v1 /sys/fs/cgroup/pids or cgroup v2 with the pids controller) to limit "
                "a sandbox's processes"
            )
    probe = _run("print('ok')", timeout_s=30.0, memory_mb=256)
    if probe.status == "passed":
        return None
    first = probe.detail.strip().splitlines()[0] if probe.detail.strip() else probe.status
    if any(s in probe.detail for s in ("namespace", "not permitted", "Permission denied")):
        return f"bubblewrap cannot create namespaces here (not permitted?): {first}"
    return f"bubblewrap does not work here: {first}"


def run_program(source: str, *, timeout_s: float = 10.0, memory_mb: int = 1024) -> Outcome:
    """Run one Python program in the sandbox."""
    _require()
    return _run(source, timeout_s, memory_mb)


def run_many(
    sources: list[str],
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    workers: int | None = None,
) -> list[Outcome]:
    """Run programs in the sandbox, `workers` at a time (default: one per CPU), outcomes in
    input order."""
    _require()
    if not sources:
        return []
    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
    try:
        return list(pool.map(lambda s: _run(s, timeout_s, memory_mb), sources))
    finally:  # on Ctrl-C, start nothing more; running programs end by their timeouts
        pool.shutdown(wait=True, cancel_futures=True)


def _require() -> None:
    reason = available()
    if reason is not None:
        raise CodemixError(f"cannot run generated programs: {reason}")


@functools.cache
def _bwrap() -> str | None:
    return shutil.which("bwrap")


def _run(source: str, timeout_s: float, memory_mb: int) -> Outcome:
    """One program in a fresh sandbox; never raises for the program's sake."""
    base = _pids_base() if os.getuid() == 0 else None
    tmp = cgroup = None
    status_r = status_w = -1
    try:
        tmp = Path(tempfile.mkdtemp(prefix="codemix-sandbox-"))
        program, work, err_path = tmp / "main.py", tmp / "work", tmp / "stderr"
        program.write_text(source, encoding="utf-8")
        work.mkdir()
        if base is not None:
            cgroup = _new_cgroup(base)
        status_r, status_w = os.pipe()
        cmd = _command(program, work, timeout_s, memory_mb, status_w)
        if cgroup is not None:
            cmd = ["/bin/sh", "-c", _JOIN_CGROUP, "sh", str(cgroup), *cmd]
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(status_w,),
                start_new_session=True,  # its own process group, to kill it whole
            )
        os.close(status_w)
        status_w = -1
        timed_out = not _wait(proc, timeout_s)
        if timed_out:  # still our unreaped child, so its pid (= group id) is not reused
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended just now
                pass
            proc.wait()
        os.set_blocking(status_r, False)
        started = b'"exit-code"' in _read_available(status_r)  # bwrap ran the command
        return _outcome(proc.returncode, timed_out, started, _tail(err_path), timeout_s)
    except OSError as e:
        return Outcome("error", f"sandbox: {e}")
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        if cgroup is not None:
            _remove_cgroup(cgroup)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _command(program: Path, work: Path, timeout_s: float, memory_mb: int, status_fd: int):
    cpu = max(1, math.ceil(timeout_s))
    # fmt: off
    return [
        _bwrap(), "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL",
        "--die-with-parent", "--json-status-fd", str(status_fd),
        "--ro-bind", "/", "/", "--dev", "/dev", "--remount-ro", "/dev", "--proc", "/proc",
        "--size", str(SCRATCH_MB << 20), "--tmpfs", str(work), "--chdir", str(work),
        "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
        "--setenv", "HOME", str(work), "--setenv", "TMPDIR", str(work),
        "--setenv", "LANG", "C.UTF-8",
        "--", sys.executable, "-I", "-c", _BOOT,
        str(memory_mb << 20), str(cpu), str(MAX_PROCESSES), str(FILE_MB << 20), str(program),
    ]
    # fmt: on


def _wait(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for the process to end; False when timeout_s passed first. A pidfd wakes up at
    once (Popen.wait polls every 50 ms, which adds up over thousands of short programs)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
    if not ready:
        return False
    proc.wait()
    return True


def _outcome(rc: int, timed_out: bool, started: bool, tail: str, timeout_s: float) -> Outcome:
    if timed_out:
        return Outcome("timeout", f"wall-clock limit of {timeout_s:g} s")
    if not started:
        return Outcome("error", f"sandbox did not start (exit {rc}): {tail}")
    if rc == 0:
        return Outcome("passed", tail)
    # bwrap exits 128 + the signal that killed the program: SIGXCPU at the soft CPU limit,
    # SIGKILL at the hard one (a program that handles SIGXCPU)
    if rc in (128 + signal.SIGXCPU, 128 + signal.SIGKILL):
        return Outcome("timeout", f"CPU time limit of {max(1, math.ceil(timeout_s))} s")
    return Outcome("failed", tail or f"exit status {rc}")


def _read_available(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4 * DETAIL_CHARS))
        text = f.read().decode("utf-8", errors="replace").strip()
    return text[-DETAIL_CHARS:]


# pids cgroups (root only)


@functools.cache
def _pids_base() -> Path | None:
    """A cgroup hierarchy root where we may create groups with a pids.max, or None."""
    for base in _CGROUP_BASES:
        if not (base / "cgroup.procs").exists():
            continue
        try:
            _remove_cgroup(_new_cgroup(base))
        except OSError:
            continue
        return base
    return None


def _new_cgroup(base: Path) -> Path:
    path = base / f"{_CGROUP_PREFIX}{os.getpid()}-{next(_cgroup_seq)}"
    path.mkdir()
    try:
        (path / "pids.max").write_text(str(MAX_PROCESSES))
    except OSError:  # e.g. cgroup v2 without the pids controller enabled for children
        path.rmdir()
        raise
    return path


def _remove_cgroup(path: Path) -> None:
    """Kill what is left in the group (normally nothing: the PID namespace took it down)
    and remove it; a group is busy until its last member has exited."""
    for _ in range(1000):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            try:
                pids = (path / "cgroup.procs").read_text().split()
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.002)


def _sweep_cgroups() -> None:
    """Remove empty groups left by a codemix process that was killed mid-run."""
    for base in _CGROUP_BASES:
        for path in base.glob(f"{_CGROUP_PREFIX}*-*") if base.is_dir() else ():
            owner = path.name[len(_CGROUP_PREFIX) :].split("-")[0]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                try:
                    path.rmdir()
                except OSError:
                    pass
