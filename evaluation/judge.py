"""Pairwise LLM-as-judge: the win-rate of one run's answers over another's.

Any OpenAI-compatible chat-completions endpoint judges (vLLM, llama.cpp's server, hosted
APIs), called with the standard library only at temperature 0. Every prompt is judged in
both answer orders to cancel position bias; a prompt scores 1 for a win of run A, 0.5 for a
tie, 0 for a loss, averaged over the two orders, and the win-rate is the mean over prompts
(AlpacaEval's definition) with its standard error. The key travels in a header only and is
masked in every message; verdicts are appended to a cache so an interrupted judging resumes
without asking the judge again.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from codemix.core import interrupt
from codemix.core.errors import CodemixError
from codemix.core.progress import Progress
from codemix.core.secrets import MASK, redact, scrub, split_credentials

DEFAULT_KEY_ENV = "CODEMIX_JUDGE_KEY"
BACKOFF = 1.0  # seconds before the first retry, doubled for each further one
MAX_BACKOFF = 30.0
_RETRY_STATUS = {408, 409, 425, 429}  # and every 5xx

PROMPT_TEMPLATE = "Instruction: {instruction}\n\nResponse:"
PROMPT_TEMPLATE_CONTEXT = "Instruction: {instruction}\n\nContext: {context}\n\nResponse:"

SYSTEM = "You are an impartial judge of how well AI assistants follow instructions."
JUDGE_TEMPLATE = """\
Compare two responses to the instruction below and decide which one better follows it: \
which is more helpful, correct and relevant to the instruction{and_context}. \
Do not let the order of the responses or their length sway you.

<instruction>
{instruction}
</instruction>
{context_block}<response_A>
{a}
</response_A>
<response_B>
{b}
</response_B>

Output exactly one word: "A" if response A is better, "B" if response B is better, \
or "tie" if they are equally good or equally bad."""
RETRY_NUDGE = 'Output exactly one word: "A", "B" or "tie".'

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S)
_VERDICT = re.compile(r"(?<!\w)(A|B|[Tt][Ii][Ee])(?!\w)")


class JudgeError(CodemixError):
    """The judge could not be reached, refused the request or answered out of protocol;
    `status` is the HTTP status of a refusal (None when no answer came)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Prompt:
    """One line of the prompts file: its line number, instruction, context and id."""

    line: int
    instruction: str
    context: str = ""
    id: str | int | None = None


def render_prompt(p: Prompt) -> str:
    """The text both runs continue greedily: instruction, context if any, 'Response:'."""
    if p.context.strip():
        return PROMPT_TEMPLATE_CONTEXT.format(instruction=p.instruction, context=p.context)
    return PROMPT_TEMPLATE.format(instruction=p.instruction)


def read_prompts(path: str | Path) -> list[Prompt]:
    """Every prompt of a jsonl file (`instruction`, optional `context` and `id`), checked
    whole before any work: every bad line is named in one error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CodemixError(f"prompts file {path} does not exist") from None
    except OSError as e:
        raise CodemixError(f"cannot read prompts file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CodemixError(f"{path}:{line}: not UTF-8 text") from None
    prompts: list[Prompt] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON may hold \u2028
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{path}:{n}: not JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{path}:{n}: not a JSON object")
            continue
        instruction, context, pid = obj.get("instruction"), obj.get("context"), obj.get("id")
        if not isinstance(instruction, str) or not instruction.strip():
            errors.append(f'{path}:{n}: no "instruction" (a non-empty string)')
            continue
        if context is not None and not isinstance(context, str):
            errors.append(f'{path}:{n}: "context" must be a string')
            continue
        if pid is not None:
            if isinstance(pid, bool) or not isinstance(pid, str | int):
                errors.append(f'{path}:{n}: "id" must be a string or an integer')
                continue
            if str(pid) in seen:
                errors.append(f"{path}:{n}: id {pid!r} already used on line {seen[str(pid)]}")
                continue
            seen[str(pid)] = n
        prompts.append(Prompt(n, instruction, context or "", pid))
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise CodemixError(f"bad prompts file{more}:\n  " + "\n  ".join(errors[:5]))
    if not prompts:
        raise CodemixError(f'{path} holds no prompts (one JSON object a line with "instruction")')
    return prompts


def judge_messages(p: Prompt, first: str, second: str) -> list[dict]:
    """The chat asking which of two responses (`first` as A, `second` as B) is better."""
    context = p.context.strip()
    user = JUDGE_TEMPLATE.format(
        and_context=" and to its context" if context else "",
        instruction=p.instruction.strip(),
        context_block=f"<context>\n{context}\n</context>\n" if context else "",
        a=first.strip(),
        b=second.strip(),
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(reply: str) -> str | None:
    """'A', 'B' or 'tie': the first standalone such token (reasoning in <think> skipped);
    None for anything else. A lone lower-case 'a' or 'b' counts, an article does not."""
    text = _THINK.sub("", reply or "")
    bare = re.sub(r"[^\w]", "", text).lower()
    if bare in ("a", "b", "tie"):
        return bare.upper() if bare != "tie" else "tie"
    m = _VERDICT.search(text)
    if m is None:
        return None
    return m.group(1) if m.group(1) in "AB" else "tie"


class JudgeClient:
    """A chat-completions endpoint: `url` is the API root (`http://host:8000/v1`) or the full
    `.../chat/completions` URL; a password in it is sent as basic auth, `key` as a bearer
    token. Connection errors, timeouts, 429 and 5xx are retried `retries` times."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        max_tokens: int = 16,
        key_env: str = DEFAULT_KEY_ENV,
        backoff: float | None = None,
    ):
        head, user, password, rest = split_credentials(url)
        parts = urlsplit(url if user is None else head + rest)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CodemixError(f"--judge-url {redact(url)}: not an http(s) URL")
        if key and password is not None:
            raise CodemixError(f"the judge URL carries a password and ${key_env} is set: keep one")
        path = parts.path.rstrip("/")
        base = path.removesuffix("/chat/completions")
        self.endpoint = urlunsplit(parts._replace(path=base + "/chat/completions"))
        self.models_url = urlunsplit(parts._replace(path=base + "/models"))
        self._shown = {self.endpoint: self.endpoint, self.models_url: self.models_url}
        if user is not None:  # messages name the URL as given, its password masked
            cred = user if password is None else f"{user}:{MASK}"
            for u in self._shown:
                self._shown[u] = u.replace("://", f"://{cred}@", 1)
        self.url, self.model, self.key_env = redact(url), model, key_env
        self.timeout, self.retries, self.max_tokens = timeout, retries, max_tokens
        self.backoff = BACKOFF if backoff is None else backoff
        self._raw_url, self._key = url, key or None
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._headers["User-Agent"] = "codemix-judge"
        if self._key:
            self._headers["Authorization"] = f"Bearer {self._key}"
        elif password is not None:
            token = f"{unquote(user or '')}:{unquote(password)}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()

    def describe(self) -> dict:
        """What the output file says about the judge (the URL's password masked, no key)."""
        return {
            "url": self.url,
            "model": self.model,
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }

    def scrub(self, text: str) -> str:
        """`text` with the key and the URL's password masked."""
        text = scrub(text, self._raw_url)
        return text.replace(self._key, MASK) if self._key else text

    def _fail(self, e: urllib.error.HTTPError, url: str, body: str) -> str:
        what = f"HTTP {e.code} {e.reason}" + (f": {body}" if body else "")
        if e.code in (401, 403):
            sent = f"the key from ${self.key_env}" if self._key else f"no key (${self.key_env})"
            if "Basic" in self._headers.get("Authorization", ""):
                sent = "the URL's user and password"
            return f"judge at {url} refused the request ({what}); sent {sent}"
        if e.code == 404:
            return (
                f"judge at {url}: not found ({what}); give the API root (e.g. "
                "http://HOST:8000/v1) or the full .../chat/completions URL, and check "
                "--judge-model"
            )
        return f"judge at {url} rejected the request ({what})"

    def _call(self, target: str, payload: dict | None = None) -> dict:
        url = self._shown[target]
        data = None if payload is None else json.dumps(payload).encode()
        last, delay = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay or min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF))
            delay = 0.0
            request = urllib.request.Request(target, data=data, headers=self._headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                body = _error_body(e)
                if e.code not in _RETRY_STATUS and e.code < 500:
                    raise JudgeError(self.scrub(self._fail(e, url, body)), e.code) from None
                last = f"HTTP {e.code} {e.reason}" + (f": {body}" if body else "")
                delay = _retry_after(e)
                continue
            except TimeoutError:
                last = f"no answer within {self.timeout:g} s"
                continue
            except urllib.error.URLError as e:
                timed_out = isinstance(e.reason, TimeoutError)
                last = f"no answer within {self.timeout:g} s" if timed_out else str(e.reason)
                continue
            except (OSError, http.client.HTTPException) as e:
                last = f"connection failed ({type(e).__name__}: {e})"
                continue
            try:
                return json.loads(raw)
            except ValueError:
                snippet = _snippet(raw.decode("utf-8", "replace"))
                message = f"judge at {url} answered non-JSON: {snippet}"
                raise JudgeError(self.scrub(message), 200) from None
        tries = f"{self.retries + 1} tr{'y' if self.retries == 0 else 'ies'}"
        message = f"no answer from the judge at {url}: {last} ({tries}; see --timeout, --retries)"
        raise JudgeError(self.scrub(message))

    def chat(self, messages: list[dict], max_tokens: int | None = None) -> str:
        """The reply's text to one chat at temperature 0."""
        payload: dict = {"messages": messages, "temperature": 0}
        payload["max_tokens"] = max_tokens or self.max_tokens
        if self.model:
            payload["model"] = self.model
        out = self._call(self.endpoint, payload)
        try:
            content = out["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(
                f"judge at {self._shown[self.endpoint]} answered without "
                "choices[0].message.content: not an OpenAI-compatible chat-completions endpoint?"
            ) from None
        return content if isinstance(content, str) else ""

    def probe(self) -> None:
        """Ask for the model list when no model was named, then one tiny chat: a judge that
        cannot be reached fails here, before anything expensive."""
        if self.model is None:
            try:
                listed = self._call(self.models_url)
            except JudgeError as e:
                if e.status is None:  # unreachable: say so now, not after the chat's retries
                    raise
                listed = {}  # no model list (a server of one model): name none
            data = listed.get("data") if isinstance(listed, dict) else None
            names = [m["id"] for m in data or [] if isinstance(m, dict) and "id" in m]
            if len(names) > 1:
                shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
                raise CodemixError(
                    f"judge at {self.url} serves {len(names)} models ({shown}): "
                    "name one with --judge-model"
                )
            self.model = names[0] if names else None
        self.chat([{"role": "user", "content": "Reply with the word: ok"}], max_tokens=1)


def judge_once(client: JudgeClient, messages: list[dict]) -> dict:
    """One verdict: a reply that is not A, B or tie is asked again (`client.retries` times,
    with a reminder of the format), then counted as an unparsed tie."""
    replies: list[str] = []
    chat = list(messages)
    for _ in range(client.retries + 1):
        reply = client.chat(chat)
        replies.append(reply[:1000])
        verdict = parse_verdict(reply)
        if verdict is not None:
            return {"verdict": verdict, "parsed": True, "replies": replies}
        nudge = [{"role": "assistant", "content": reply}, {"role": "user", "content": RETRY_NUDGE}]
        chat = [*messages, *nudge]
    return {"verdict": "tie", "parsed": False, "replies": replies}


def record_key(model: str | None, p: Prompt, answer_a: str, answer_b: str) -> str:
    """What a cached verdict depends on: the judge model and both chats sent to it."""
    chats = [judge_messages(p, answer_a, answer_b), judge_messages(p, answer_b, answer_a)]
    blob = json.dumps([model, chats], ensure_ascii=False).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def judge_prompt(client: JudgeClient, p: Prompt, answer_a: str, answer_b: str) -> dict:
    """Both orders of one prompt judged: the per-prompt record with run A's score."""
    judgements = []
    for order, first, second in (("a_first", answer_a, answer_b), ("b_first", answer_b, answer_a)):
        j = judge_once(client, judge_messages(p, first, second))
        runs = {"A": "a", "B": "b"} if order == "a_first" else {"A": "b", "B": "a"}
        judgements.append({"order": order, **j, "winner": runs.get(j["verdict"], "tie")})
    key = record_key(client.model, p, answer_a, answer_b)
    return _record(p, answer_a, answer_b, judgements, key)


def _record(p: Prompt, answer_a: str, answer_b: str, judgements: list, key: str) -> dict:
    score = sum({"a": 1.0, "tie": 0.5, "b": 0.0}[j["winner"]] for j in judgements) / 2
    return {
        "key": key,
        "line": p.line,
        "id": p.id,
        "instruction": p.instruction,
        "context": p.context,
        "answer_a": answer_a,
        "answer_b": answer_b,
        "judgements": judgements,
        "score": score,
    }


def _valid(record: object) -> bool:
    js = record.get("judgements") if isinstance(record, dict) else None
    if not isinstance(js, list) or len(js) != 2:
        return False
    return all(
        isinstance(j, dict)
        and j.get("winner") in ("a", "b", "tie")
        and j.get("verdict") in ("A", "B", "tie")
        for j in js
    )


def read_cache(path: str | Path) -> list[dict]:
    """The records of a cache file; a line cut short by a kill is skipped."""
    path, out = Path(path), []
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if _valid(record) and isinstance(record.get("key"), str):
            out.append(record)
    return out


def summarise(records: Sequence[dict]) -> dict:
    """Win-rate of run A in percent with its standard error, counts and position bias."""
    scores = [r["score"] for r in records]
    n = len(scores)
    mean = sum(scores) / n
    se = None
    if n > 1:
        se = 100 * math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) / math.sqrt(n)
    js = [j for r in records for j in r["judgements"]]
    count = {w: sum(j["winner"] == w for j in js) for w in ("a", "tie", "b")}
    return {
        "n_prompts": n,
        "n_judgements": len(js),
        "win_rate": 100 * mean,
        "win_rate_se": se,
        "wins": count["a"],
        "ties": count["tie"],
        "losses": count["b"],
        "prompt_wins": sum(s > 0.5 for s in scores),
        "prompt_ties": sum(s == 0.5 for s in scores),
        "prompt_losses": sum(s < 0.5 for s in scores),
        "position_a_share": 100 * sum(j["verdict"] == "A" for j in js) / len(js),
        "position_b_share": 100 * sum(j["verdict"] == "B" for j in js) / len(js),
        "consistent_share": 100
        * sum(r["judgements"][0]["winner"] == r["judgements"][1]["winner"] for r in records)
        / n,
        "unparsed": sum(not j["parsed"] for j in js),
    }


def judge_pairs(
    prompts: Sequence[Prompt],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    client: JudgeClient,
    *,
    cache: str | Path | None = None,
    known: Iterable[dict] = (),
    parallel: int = 1,
    quiet: bool = True,
) -> dict:
    """Judge every prompt in both orders; `summarise`'s figures plus `records`, one per
    prompt in file order. Records in `cache` (a jsonl file, appended to as prompts finish)
    or in `known` with the same key are reused without asking the judge."""
    if not (len(prompts) == len(answers_a) == len(answers_b)):
        raise ValueError("one answer of each run per prompt")
    reuse = {r["key"]: r for r in [*known, *(read_cache(cache) if cache else [])] if _valid(r)}
    done: dict[int, dict] = {}
    for i, p in enumerate(prompts):
        key = record_key(client.model, p, answers_a[i], answers_b[i])
        if key in reuse:
            done[i] = _record(p, answers_a[i], answers_b[i], reuse[key]["judgements"], key)
    todo = [i for i in range(len(prompts)) if i not in done]
    sink = _open_cache(Path(cache)) if cache and todo else None
    try:
        with Progress(len(prompts), len(done), "judging", not quiet, "prompts") as bar:
            _run(client, prompts, answers_a, answers_b, todo, done, sink, bar, max(parallel, 1))
    finally:
        if sink is not None:
            sink.close()
    records = [done[i] for i in range(len(prompts))]
    return {**summarise(records), "records": records}


def _open_cache(path: Path):
    if not path.parent.is_dir():
        raise CodemixError(f"output folder {path.parent} does not exist")
    f = open(path, "a+b")  # closed by the caller
    if f.tell() > 0:  # a line cut short by a kill must not swallow the next one
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")
    return f


def _run(client, prompts, answers_a, answers_b, todo, done, sink, bar, parallel) -> None:
    def finish(i: int, record: dict) -> None:
        done[i] = record
        if sink is not None:
            sink.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
            sink.flush()
            os.fsync(sink.fileno())
        scores = [r["score"] for r in done.values()]
        bar.set_postfix_str(f"win-rate {100 * sum(scores) / len(scores):.1f}%")
        bar.update(1)

    with interrupt.stop_on_signals(), ThreadPoolExecutor(parallel) as pool:
        futures: dict[Future, int] = {
            pool.submit(judge_prompt, client, prompts[i], answers_a[i], answers_b[i]): i
            for i in todo
        }
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                errors = [f.exception() for f in finished if f.exception() is not None]
                for f in finished:
                    if f.exception() is None:
                        finish(futures[f], f.result())
                if errors:
                    raise errors[0]
                interrupt.check()
        except BaseException:
            for f in pending:
                f.cancel()
            for f in pending:  # requests in flight: keep what they paid for
                if not f.cancelled() and f.exception() is None:
                    finish(futures[f], f.result())
            raise


def _error_body(e: urllib.error.HTTPError) -> str:
    try:
        raw = e.read().decode("utf-8", "replace")
    except Exception:  # a body that cannot be read is no body
        return ""
    try:
        err = json.loads(raw)
        err = err.get("error", err.get("detail", err)) if isinstance(err, dict) else err
        raw = err.get("message", raw) if isinstance(err, dict) else str(err)
    except ValueError:
        pass
    return _snippet(str(raw))


def _snippet(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def _retry_after(e: urllib.error.HTTPError) -> float:
    try:
        return min(float(e.headers.get("Retry-After", "")), 60.0)
    except (TypeError, ValueError):
        return 0.0
