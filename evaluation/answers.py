"""TriviaQA (no context) and NaturalQuestions-Open as generation tasks: 0-shot exact match.

The items are the ones the likelihood tasks score (`proxy_train.tasks.read_items`: the same
installed Arrow files, the same hash order and `max_items`), with the same prompt
(`Question: ...\\nAnswer:`), and every alias of the answer: TriviaQA's `aliases`,
`normalized_aliases` and `value`, NQ-Open's answer list. A generation is cut at its first
newline and matched after SQuAD's normalisation (lowercase, no punctuation, no articles
a/an/the, single spaces) against any alias.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from codemix.core.errors import CodemixError

__all__ = ["QA_TASKS", "QAItem", "exact_match", "normalize", "qa_items", "score"]

QA_TASKS = ("triviaqa", "nq_open")
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class QAItem:
    id: str
    prompt: str
    answers: tuple[str, ...]


def normalize(text: str) -> str:
    """SQuAD's answer normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def first_line(generation: str) -> str:
    """What counts as the answer: the generation up to its first newline."""
    return generation.split("\n", 1)[0]


def exact_match(generation: str, answers: tuple[str, ...] | list[str]) -> bool:
    """Whether the generation's first line equals any answer after normalisation."""
    guess = normalize(first_line(generation))
    return any(guess == normalize(a) for a in answers)


def _aliases(task: str, rows: list[dict]) -> dict[str, tuple[str, ...]]:
    """Item id (as the likelihood readers number them) -> every alias of its answer."""
    out = {}
    for i, r in enumerate(rows):
        if task == "triviaqa":
            a = r["answer"]
            names = [a["value"], *(a["aliases"] or []), *(a["normalized_aliases"] or [])]
            out[r["question_id"]] = tuple(dict.fromkeys(n for n in names if n))
        else:
            out[str(i)] = tuple(dict.fromkeys(n for n in r["answer"] if n))
    return out


def qa_items(task: str, max_items: int | None) -> list[QAItem]:
    """The task's first `max_items` items in the likelihood tasks' hash order."""
    from codemix.proxy_train.tasks import TASKS, _arrow, read_items, source_file

    if task not in QA_TASKS:
        raise CodemixError(f"{task!r} is not a question-answering task ({', '.join(QA_TASKS)})")
    t = TASKS[task]
    items = read_items(t, max_items)
    aliases = _aliases(task, list(_arrow(source_file(t))))
    return [QAItem(it.id, it.requests[0][0], aliases[it.id]) for it in items]


def score(items: list[QAItem], generations: list[str]) -> dict:
    """Exact match over items, and the item count."""
    hits = [exact_match(g, it.answers) for it, g in zip(items, generations, strict=True)]
    return {"exact_match": sum(hits) / len(hits) if hits else None, "items": len(hits)}
