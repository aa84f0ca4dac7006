import io

import pytest

from codemix.core import progress as _progress
from codemix.core.progress import Progress


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(_progress, "_now", c)
    return c


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_a_bounded_number_of_plain_lines(clock):
    log = io.StringIO()
    bar = Progress(10_000, desc="training 4 x 2L64d", file=log, interval=30)
    bar.set_postfix({"loss": "3.210", "tok/s": "12,000"})
    for _ in range(10_000):
        clock.t += 0.002  # 20 s in all: the time limit never triggers, the tenths do
        bar.update(1)
    bar.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 10 <= len(lines) <= 12
    assert lines[0].startswith("training 4 x 2L64d: 0/10,000 step (0%)")
    assert lines[-1].startswith("training 4 x 2L64d: 10,000/10,000 step (100%), 500 step/s")
    assert "loss=3.210 tok/s=12,000" in lines[-1]
    assert "ETA 0:10" in lines[5]  # half done at 500 steps a second


def test_a_fast_loop_writes_its_first_and_last_lines_only(clock):
    log = io.StringIO()
    with Progress(10_000, desc="quick", file=log, interval=30) as bar:
        for _ in range(10_000):
            clock.t += 0.00005  # half a second in all
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "quick: 0/10,000 step",
        "quick: 10,000/10,000 step",
    ]


def test_a_line_every_interval_between_the_tenths(clock):
    log = io.StringIO()
    bar = Progress(1000, desc="slow", file=log, interval=30)
    for _ in range(50):  # 5 % of the total, 10 s apart: 500 s, a line every 30 s
        clock.t += 10
        bar.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 + 50 // 3
    assert lines[-1].startswith("slow: 48/1,000 step (4%), 0.1 step/s, ETA 2:38:40")


def test_the_interval_comes_from_the_environment(clock, monkeypatch):
    monkeypatch.setenv("CODEMIX_PROGRESS_INTERVAL", "0")
    log = io.StringIO()
    bar = Progress(1000, desc="each", file=log)
    for _ in range(5):
        bar.update(1)
    assert len(log.getvalue().splitlines()) == 6


def test_bytes_context_manager_and_postfix_string(clock):
    log = io.StringIO()
    with Progress(3 << 20, desc="tokenizing", unit="B", file=log, interval=30) as bar:
        bar.set_postfix_str("code")
        clock.t += 2
        bar.update(1 << 20)
    lines = log.getvalue().splitlines()
    assert lines[0] == "tokenizing: 0 B/3.0 MiB (0%)"
    assert lines[1] == (
        "tokenizing: 1.0 MiB/3.0 MiB (33%), 512.0 KiB/s, ETA 0:04, elapsed 0:02, code"
    )
    assert len(lines) == 2  # closing at the last written count adds nothing


def test_resumed_progress_rates_only_the_new_work(clock):
    log = io.StringIO()
    bar = Progress(100, initial=50, desc="resumed", file=log, interval=30)
    clock.t += 5
    bar.update(10)
    bar.close()
    assert "60/100 step (60%), 2 step/s, ETA 0:20" in log.getvalue().splitlines()[-1]


def test_disabled_writes_nothing():
    log = io.StringIO()
    with Progress(10, enabled=False, file=log) as bar:
        bar.update(10)
    assert log.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar():
    pytest.importorskip("tqdm")
    term = Terminal()
    with Progress(100, desc="bar", file=term) as bar:
        bar.update(100)
    assert "\r" in term.getvalue() and "100/100" in term.getvalue()
