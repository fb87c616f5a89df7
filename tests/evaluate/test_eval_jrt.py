"""JRT/Based recall: row layouts, truncation before the question, contains-match, and the metric on models whose
right answer is known (a copying model scores 1.0, a model that cannot see the document 0.0)."""

from __future__ import annotations

import pytest

from .conftest import FIXTURES
from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.evaluate.recall_jrt import contains, evaluate_jrt, load_items, to_item
from paraphrase_pipe.evaluate.tokens import encode, fit

JRT = FIXTURES / "jrt"
SOURCES = {"swde": JRT / "based-swde-v2", "fda": JRT / "based-fda", "squad": JRT / "based-squad",
           "triviaqa": JRT / "triviaqa.jsonl", "nq": JRT / "nq.jsonl", "drop": JRT / "drop.jsonl"}


def test_contains_is_case_insensitive_substring_match():
    assert contains(" Lana WACHOWSKI, 1999", ["lana wachowski"])
    assert contains("in 1931", ["Hilde Baum", "1931 "])  # any answer; answers are stripped
    assert not contains("Lana", ["Lana Wachowski"])
    assert not contains("anything", ["", "  "])  # an empty answer never matches


def test_rows_of_both_published_layouts():
    text = to_item({"text": "Title: X\nDirector: Ann Lee\nYear: 1990. More text.\nDirector:", "value": "Ann Lee"})
    assert (text.document, text.question, text.answers) == (
        "Title: X\nDirector: Ann Lee\nYear: 1990. More text.\n", "Director:", ("Ann Lee",))
    qa = to_item({"context": "[DOC] [TLE] Facts [PAR] Bo was born in Ur. Where was Bo born?",
                  "question": "Where was Bo born?", "answers": ["Ur"]})
    assert qa.document == "Facts  Bo was born in Ur." and qa.question == " Where was Bo born?"
    with pytest.raises(EvalError, match="neither the JRT text layout"):
        to_item({"prompt": "x", "answer": "y"})


def test_fit_cuts_the_document_before_the_question():
    assert fit([1], [10, 11, 12, 13], [20, 21], 5) == [1, 10, 11, 20, 21]
    assert fit([1], [10, 11], [20, 21], 50) == [1, 10, 11, 20, 21]  # short prompts are left whole
    assert fit([1], [10, 11], [20, 21, 22], 3) == [1, 21, 22]  # a question over budget keeps its end


def test_fixture_files_load_in_the_published_format():
    for task, source in SOURCES.items():
        items = load_items(str(source))
        assert items and all(any(a in it.document for a in it.answers) for it in items), task
    with pytest.raises(EvalError, match="no such file"):
        load_items(str(JRT / "missing.jsonl"))


def test_copy_model_recalls_exactly_what_survives_the_cut(load, copy_dir, tokenizer):
    m = load(copy_dir)
    lengths = (40, 120, 2048)
    results = evaluate_jrt(m.model, m.tokenizer, "copy", {t: str(s) for t, s in SOURCES.items()}, lengths)
    got = {(r.task, r.length, r.metric): r for r in results}
    for task in SOURCES:
        assert got[(task, 2048, "contains")].value == 1.0, task  # whole documents: every answer recalled
        for length in lengths:
            hit, ceiling = (got[(task, length, m)].value for m in ("contains", "answer_in_context"))
            # nobody beats the answers left in the input; a perfect copier of "key: value" reaches that ceiling
            assert hit == ceiling if task in ("swde", "fda", "squad") else hit <= ceiling
            assert got[(task, length, "input_tokens")].value <= length
    assert min(got[(t, 40, "answer_in_context")].value for t in SOURCES) < 1.0  # the sweep does cut answers off
    assert got[("swde", 2048, "contains")].n == 4


def test_model_that_cannot_see_the_document_scores_zero(load, blind_dir):
    m = load(blind_dir)
    results = evaluate_jrt(m.model, m.tokenizer, "blind", {t: str(s) for t, s in SOURCES.items()}, (2048,))
    assert {r.value for r in results if r.metric == "contains"} == {0.0}
    assert {r.value for r in results if r.metric == "answer_in_context"} == {1.0}


def test_answer_lookup_uses_token_exact_prompts(tokenizer):
    item = load_items(str(SOURCES["fda"]))[0]
    prompt = fit([], encode(tokenizer, item.document), encode(tokenizer, item.question), 10_000)
    assert tokenizer.decode(prompt) == item.document + item.question
