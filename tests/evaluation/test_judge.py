"""The LLM-as-judge win-rate against small chat-completions servers run in the test."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from codemix.cli import main
from codemix.core.errors import CodemixError
from codemix.evaluation import judge
from codemix.evaluation.judge import (
    JudgeClient,
    Prompt,
    judge_pairs,
    parse_verdict,
    read_cache,
    read_prompts,
    render_prompt,
)

KEY = "sk-test-SECRET-4f9a1c0d"
_PAIR = re.compile(r"<response_A>\n(.*?)\n</response_A>\n<response_B>\n(.*?)\n</response_B>", re.S)


def _pair(body: dict) -> tuple[str, str] | None:
    users = [m["content"] for m in body["messages"] if m["role"] == "user"]
    m = _PAIR.search(users[0])
    return m.groups() if m else None


def longer(srv, body):
    pair = _pair(body)
    return 200, "ok" if pair is None else ("A" if len(pair[0]) > len(pair[1]) else "B")


def always_a(srv, body):
    return 200, "A"


def nonsense(srv, body):
    return 200, "Both responses have merits; I cannot decide."


def unauthorized(srv, body):  # echoes the key, as a careless server might
    return 401, {"error": {"message": f"bad key {srv.calls[-1]['auth']}"}}


def slow(srv, body):
    srv.release.wait(20)
    return 200, "A"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": m} for m in self.server.models]})
        else:
            self._send(404, {"error": {"message": "no such route"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            srv.calls.append(
                {"path": self.path, "body": body, "auth": self.headers["Authorization"]}
            )
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": "no such route"}})
        status, reply = srv.behaviour(srv, body)
        try:
            if status != 200:
                return self._send(status, reply)
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": reply}}]})
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            pass


@pytest.fixture
def serve():
    """start(behaviour) -> a server on 127.0.0.1 implementing /v1/chat/completions."""
    servers = []

    def start(behaviour, models=("test-judge",)):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.daemon_threads = True
        srv.behaviour, srv.models, srv.calls = behaviour, list(models), []
        srv.lock, srv.release = threading.Lock(), threading.Event()
        srv.url = f"http://127.0.0.1:{srv.server_port}/v1"
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


def _judged(srv) -> list[dict]:
    return [c for c in srv.calls if c["path"].endswith("/chat/completions") and _pair(c["body"])]


PROMPTS = [Prompt(i + 1, f"Say something about topic {i}.") for i in range(5)]
LONG = [f"A long and careful answer about topic {i}, with detail." for i in range(5)]
SHORT = [f"Short {i}." for i in range(5)]


def test_a_judge_preferring_longer_answers(serve):
    srv = serve(longer)
    client = JudgeClient(srv.url, "test-judge")
    out = judge_pairs(PROMPTS, LONG, SHORT, client)
    assert (out["win_rate"], out["win_rate_se"]) == (100.0, 0.0)
    assert (out["wins"], out["ties"], out["losses"], out["unparsed"]) == (10, 0, 0, 0)
    assert (out["n_prompts"], out["prompt_wins"], out["consistent_share"]) == (5, 5, 100.0)
    assert out["position_a_share"] == 50.0
    assert [r["score"] for r in out["records"]] == [1.0] * 5
    assert [j["order"] for j in out["records"][0]["judgements"]] == ["a_first", "b_first"]
    assert len(srv.calls) == 10
    for call in srv.calls:
        assert call["body"]["temperature"] == 0 and call["body"]["model"] == "test-judge"
        assert call["auth"] is None  # no key, no header
    back = judge_pairs(PROMPTS, SHORT, LONG, client)
    assert (back["win_rate"], back["win_rate_se"], back["losses"]) == (0.0, 0.0, 10)


def test_a_judge_always_saying_a_shows_position_bias(serve):
    out = judge_pairs(PROMPTS, LONG, SHORT, JudgeClient(serve(always_a).url, "m"))
    assert (out["win_rate"], out["win_rate_se"]) == (50.0, 0.0)
    assert (out["position_a_share"], out["consistent_share"]) == (100.0, 0.0)
    assert (out["wins"], out["losses"], out["prompt_ties"]) == (5, 5, 5)


def test_nonsense_is_asked_again_then_counted_as_an_unparsed_tie(serve):
    srv = serve(nonsense)
    out = judge_pairs(PROMPTS[:2], LONG[:2], SHORT[:2], JudgeClient(srv.url, "m", retries=2))
    assert (out["win_rate"], out["unparsed"], out["ties"]) == (50.0, 4, 4)
    assert len(srv.calls) == 2 * 2 * 3
    assert srv.calls[1]["body"]["messages"][-1]["content"] == judge.RETRY_NUDGE
    assert out["records"][0]["judgements"][0]["replies"][0].startswith("Both responses")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A", "A"),
        ("B.", "B"),
        ("tie", "tie"),
        ("Tie", "tie"),
        ("**B**", "B"),
        ("b", "B"),
        ("Response A is better.", "A"),
        ("<think>B looks wrong</think>\nA", "A"),
        ("a response that is unsure", None),
        ("Neither", None),
        ("ABBA", None),
        ("", None),
    ],
)
def test_verdicts_are_parsed_from_the_first_standalone_token(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_prompts_render_with_and_without_context(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"instruction": "Name a colour.", "context": "", "category": "open_qa"},
        {"instruction": "Summarise.", "context": "A text.", "id": "x1"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ps = read_prompts(path)
    assert [(p.line, p.id) for p in ps] == [(1, None), (2, "x1")]
    assert render_prompt(ps[0]) == "Instruction: Name a colour.\n\nResponse:"
    assert render_prompt(ps[1]) == "Instruction: Summarise.\n\nContext: A text.\n\nResponse:"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no prompts"),
        ('{"instruction": "a"}\n{not json\n', "p.jsonl:2: not JSON"),
        ('{"instruction": "a"}\n{"context": "b"}\n', 'p.jsonl:2: no "instruction"'),
        ('{"instruction": "  "}\n', 'p.jsonl:1: no "instruction"'),
        ("[1, 2]\n", "p.jsonl:1: not a JSON object"),
        (
            '{"instruction": "a", "id": 7}\n{"instruction": "b", "id": 7}\n',
            "already used on line 1",
        ),
        ('{"instruction": "a", "context": 3}\n', '"context" must be a string'),
    ],
)
def test_bad_prompt_files_are_refused_with_line_numbers(tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(CodemixError, match=re.escape(message)):
        read_prompts(path)


def test_urls_credentials_and_model_lookup(serve):
    srv = serve(longer)
    for url in (srv.url, srv.url + "/", srv.url + "/chat/completions"):
        assert JudgeClient(url).endpoint == srv.url + "/chat/completions"
    client = JudgeClient(srv.url.replace("http://", "http://me:pa%40ss@"))
    assert client.url == srv.url.replace("http://", "http://me:***@")
    client.probe()  # the model list names one model: it is used
    assert client.model == "test-judge"
    assert srv.calls[-1]["auth"].startswith("Basic ") and srv.calls[-1]["body"]["max_tokens"] == 1
    with pytest.raises(CodemixError, match="name one with --judge-model"):
        JudgeClient(serve(longer, models=("m1", "m2")).url).probe()
    with pytest.raises(CodemixError, match="not an http"):
        JudgeClient("ftp://host/v1")
    with pytest.raises(CodemixError, match="carries a password"):
        JudgeClient("http://u:p@host/v1", key=KEY)


def _kill_script(tmp_path: Path, url: str, cache: Path) -> Path:
    script = tmp_path / "judge_some.py"
    script.write_text(
        "from codemix.evaluation.judge import JudgeClient, Prompt, judge_pairs\n"
        f"prompts = [Prompt(i + 1, f'Say something about topic {{i}}.') for i in range(5)]\n"
        f"judge_pairs(prompts, {LONG!r}, {SHORT!r}, JudgeClient({url!r}, 'm'), "
        f"cache={str(cache)!r})\n"
    )
    return script


def test_a_killed_judging_resumes_from_its_cache(serve, tmp_path):
    k = 2

    def stalls_after_k_prompts(srv, body):
        if len(_judged(srv)) > 2 * k:
            srv.release.wait(20)
        return longer(srv, body)

    srv = serve(stalls_after_k_prompts)
    cache = tmp_path / "judge.json.partial.jsonl"
    proc = subprocess.Popen([sys.executable, str(_kill_script(tmp_path, srv.url, cache))])
    deadline = time.time() + 20
    while len(read_cache(cache)) < k or len(_judged(srv)) <= 2 * k:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [r["line"] for r in read_cache(cache)] == [1, 2]
    with cache.open("a") as f:
        f.write('{"key": "cut sho')  # a line cut short by the kill

    again = serve(longer)
    out = judge_pairs(PROMPTS, LONG, SHORT, JudgeClient(again.url, "m"), cache=cache)
    asked = {_pair(c["body"])[0] for c in again.calls} | {_pair(c["body"])[1] for c in again.calls}
    assert len(again.calls) == 2 * (5 - k)
    assert not asked & {LONG[0], LONG[1]}
    whole = judge_pairs(PROMPTS, LONG, SHORT, JudgeClient(serve(longer).url, "m"))
    assert out == whole
    assert len(read_cache(cache)) == 5


def _fake_runs(monkeypatch) -> list:
    """load_run/generate_text stand-ins: run folder 'long' answers at length, others briefly."""
    monkeypatch.delenv("CODEMIX_JUDGE_KEY", raising=False)
    generated = []
    checkpoint = types.ModuleType("codemix.evaluation.checkpoint")
    checkpoint.load_run = lambda run_dir, step=None: types.SimpleNamespace(
        name=Path(run_dir).name, step=None, cfg=types.SimpleNamespace(seq_len=1024)
    )
    generate = types.ModuleType("codemix.evaluation.generate")

    def generate_text(run, prompts, max_new_tokens=256, stop=("\n\n",), *, progress=True):
        generated.append((run.name, len(prompts), max_new_tokens))
        return [f" {run.name}: " + ("detail " * 8 if run.name == "long" else "no") for _ in prompts]

    generate.generate_text = generate_text
    monkeypatch.setitem(sys.modules, "codemix.evaluation.checkpoint", checkpoint)
    monkeypatch.setitem(sys.modules, "codemix.evaluation.generate", generate)
    return generated


def _cli(tmp_path, url, *extra, runs=None):
    """`codemix judge` arguments; without `runs`, empty folders 'long' and 'short' (for
    _fake_runs)."""
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        rows = [{"instruction": f"Explain {w}.", "id": w} for w in ("rain", "tides", "wind")]
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if runs is None:
        runs = (tmp_path / "long", tmp_path / "short")
        for run in runs:
            run.mkdir(exist_ok=True)
    return [
        "judge",
        *map(str, runs),
        "--prompts",
        str(prompts),
        "--judge-url",
        url,
        "-o",
        str(tmp_path / "judge.json"),
        "--quiet",
        *extra,
    ]


def _no_key_anywhere(tmp_path, captured):
    assert KEY not in captured.out and KEY not in captured.err
    for path in tmp_path.iterdir():
        if path.is_file():
            assert KEY not in path.read_text(errors="replace")


def test_cli_end_to_end_with_a_key(serve, tmp_path, monkeypatch, capsys):
    generated = _fake_runs(monkeypatch)
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    srv = serve(longer)
    argv = _cli(tmp_path, srv.url, "--key-env", "MY_JUDGE_KEY", "--max-new-tokens", "32")
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "win-rate 100.0 % (SE 0.0) on 3 prompts" in captured.out
    assert generated == [("long", 3, 32), ("short", 3, 32)]
    assert {c["auth"] for c in srv.calls} == {f"Bearer {KEY}"}
    doc = json.loads((tmp_path / "judge.json").read_text())
    assert doc["judge"] == {
        "url": srv.url,
        "model": "test-judge",
        "temperature": 0,
        "max_tokens": 16,
    }
    assert (doc["win_rate"], doc["win_rate_se"], doc["wins"], doc["n_judgements"]) == (100, 0, 6, 6)
    assert [r["id"] for r in doc["records"]] == ["rain", "tides", "wind"]
    assert doc["records"][0]["answer_a"].startswith("long: detail")
    assert not (tmp_path / "judge.json.partial.jsonl").exists()
    _no_key_anywhere(tmp_path, captured)
    calls = len(srv.calls)
    assert main(argv) == 0  # run again: only the probe reaches the judge
    assert len(srv.calls) == calls + 1


def test_cli_resumes_an_interrupted_judging(serve, tmp_path, monkeypatch, capsys):
    _fake_runs(monkeypatch)

    def refuses_after_one_prompt(srv, body):  # the probe, then two judgements
        return (400, {"error": "quota exhausted"}) if len(srv.calls) > 3 else longer(srv, body)

    srv = serve(refuses_after_one_prompt)
    argv = _cli(tmp_path, srv.url, "--parallel", "1")
    assert main(argv) == 2
    assert "HTTP 400" in capsys.readouterr().err
    assert [r["id"] for r in read_cache(tmp_path / "judge.json.partial.jsonl")] == ["rain"]
    again = serve(longer)
    assert main(_cli(tmp_path, again.url)) == 0
    assert len(again.calls) == 1 + 2 * 2  # the probe, then the two prompts not judged
    assert json.loads((tmp_path / "judge.json").read_text())["n_prompts"] == 3


def test_cli_judge_that_times_out(serve, tmp_path, monkeypatch, capsys):
    generated = _fake_runs(monkeypatch)
    monkeypatch.setenv("CODEMIX_JUDGE_KEY", KEY)
    monkeypatch.setattr(judge, "BACKOFF", 0.01)
    srv = serve(slow)
    t0 = time.monotonic()
    assert (
        main(_cli(tmp_path, srv.url, "--judge-model", "m", "--timeout", "0.3", "--retries", "1"))
        == 2
    )
    assert time.monotonic() - t0 < 5
    captured = capsys.readouterr()
    assert captured.err.startswith("codemix: error: no answer from the judge at ")
    assert srv.url + "/chat/completions" in captured.err and "within 0.3 s (2 tries" in captured.err
    assert "Traceback" not in captured.err and generated == []
    assert len(srv.calls) == 2 and srv.calls[0]["auth"] == f"Bearer {KEY}"
    assert not (tmp_path / "judge.json").exists()
    _no_key_anywhere(tmp_path, captured)


def test_cli_judge_that_refuses_the_key(serve, tmp_path, monkeypatch, capsys):
    generated = _fake_runs(monkeypatch)
    monkeypatch.setenv("CODEMIX_JUDGE_KEY", KEY)
    srv = serve(unauthorized)
    assert main(_cli(tmp_path, srv.url, "--judge-model", "m")) == 2
    captured = capsys.readouterr()
    assert "refused the request (HTTP 401" in captured.err
    assert (
        "the key from $CODEMIX_JUDGE_KEY" in captured.err and "bad key Bearer ***" in captured.err
    )
    assert "Traceback" not in captured.err and generated == [] and len(srv.calls) == 1
    _no_key_anywhere(tmp_path, captured)


def test_cli_judge_that_cannot_be_reached(tmp_path, monkeypatch, capsys):
    _fake_runs(monkeypatch)
    monkeypatch.setattr(judge, "BACKOFF", 0.01)
    with ThreadingHTTPServer(("127.0.0.1", 0), _Handler) as srv:
        url = f"http://user:{KEY}@127.0.0.1:{srv.server_port}/v1"  # nobody listens once closed
    assert main(_cli(tmp_path, url, "--retries", "0")) == 2
    captured = capsys.readouterr()
    assert "no answer from the judge at http://user:***@127.0.0.1:" in captured.err
    assert "Connection refused" in captured.err
    _no_key_anywhere(tmp_path, captured)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--key-env", "CODEMIX_NO_SUCH_VAR"), "CODEMIX_NO_SUCH_VAR: that environment variable"),
        (("--retries", "-1"), "--retries -1: must be at least 0"),
        (("--timeout", "0"), "--timeout 0.0: must be more than 0"),
        (("-o", "/nonexistent/j.json"), "output folder /nonexistent does not exist"),
    ],
)
def test_cli_bad_arguments(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.delenv("CODEMIX_NO_SUCH_VAR", raising=False)
    monkeypatch.delenv("CODEMIX_JUDGE_KEY", raising=False)
    assert main(_cli(tmp_path, "http://127.0.0.1:9/v1", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("codemix: error:") and message in err


def test_cli_with_two_trained_runs(
    tiny_run, small_store, train_tiny, serve, tmp_path, monkeypatch, capsys
):
    """Real runs of `codemix train` (10 steps, and 5 from another seed), real greedy answers,
    the judge preferring the longer."""
    monkeypatch.delenv("CODEMIX_JUDGE_KEY", raising=False)
    short = train_tiny(small_store, cooldown=0, seed=1)
    srv = serve(longer)
    assert main(_cli(tmp_path, srv.url, "--max-new-tokens", "64", runs=(tiny_run, short))) == 0
    assert "answers are cut at 32 new tokens" in capsys.readouterr().err  # a context of 64
    doc = json.loads((tmp_path / "judge.json").read_text())
    assert (doc["step_a"], doc["step_b"], doc["n_prompts"]) == (10, 5, 3)
    for r in doc["records"]:
        a, b = r["answer_a"], r["answer_b"]
        assert (
            a and b and r["score"] == (1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5)
        )
    assert len(_judged(srv)) == 6
