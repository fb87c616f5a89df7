"""The coverage gates (numbers / names kept and unchanged, ROUGE-L recall, weakest section) on the fixture's real
pairs — not the calibration set (benchmarks/filter_pairs/, see benchmarks/filter_calibration.py) — and on bad input."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from paraphrase_pipe.filters import FilterOptions
from paraphrase_pipe.filters.facts import compare, extract
from paraphrase_pipe.filters.lexical import lcs_length, rouge_l_recall, words
from paraphrase_pipe.stages.filter import filter_rows

from .conftest import rows_table

COVERAGE = ("recall", "fact_changes", "facts", "sections")  # `sections` is off by default (README)


def coverage_only() -> FilterOptions:
    """The coverage gates that are on by default, alone."""
    options = FilterOptions()
    for name in type(options).model_fields:
        getattr(options, name).enabled = name in COVERAGE and getattr(options, name).enabled
    return options


def test_facts_are_normalised_before_they_are_compared():
    assert compare("The limit is 1,200 lines.", "It stops at 1200 lines.") == (1.0, 0.0)
    assert compare("The trail is 3 km long and has twelve signs.", "There are 12 signs on the three kilometres trail.") == (1.0, 0.0)
    assert extract("It takes 5 MB or 16 bit.").numbers == {("5", "megabyte"), ("16", "bit")}
    assert extract("Put it in 3 in a row.").numbers == {("3", None)}  # "in" is a word here, not inches
    kept, changed = compare("The trail is 3 km long.", "The trail is 3 miles long.")
    assert kept == 0.0 and changed == 1.0  # same number, other unit: a changed fact
    kept, changed = compare('Use "write_char" with CTRL-W in Unix.', 'Use "read_char" with CTRL-W in Unix.')
    assert changed > 0 and kept < 1


# Legitimate rewrites that must keep every fact (examples written for this test, not from any labelled set).
SAME_FACTS = [
    ("The bridge cost $2.5 million.", "The bridge cost $2,500,000."),  # scale word
    ("Revenue reached €3bn in 2019.", "In 2019, revenue reached 3 billion euros."),  # scale suffix after a currency
    ("About 12 species and hundreds of thousands of birds were counted.", "Observers counted about 12 species and hundreds of thousands of birds."),  # vague: no number
    ("The law took effect on 2021-03-15.", "The law took effect on 15 March 2021."),  # month name = month number
    ("The European Space Agency launched it in 2009.", "The ESA launched it in 2009."),  # acronym, one way
    ("The U.K. and Canada signed in 2015.", "The United Kingdom and Canada signed in 2015."),  # and the other
    ("The train runs at 80 mph.", "The train runs at 80 miles per hour."),  # a rate and its first unit
    ("Pick 2 colours from 12.", "Pick two colours out of 12."),  # "one" / "two" stay words but keep a digit
    ("Add 1 egg to 200 g of flour.", "Add one egg to 200 grams of flour."),
    ("It sold 12\u202f500 copies.", "It sold 12,500 copies."),  # narrow no-break space as thousands separator
    ("The Berlin-based band toured 14 cities.", "The band, based in Berlin, toured 14 cities."),
    ("Dr. Okafor met Prof. Lindqvist in Oslo.", "Doctor Okafor met Professor Lindqvist in Oslo."),  # titles are no names
    ("x = 0\n# Utility helpers for the 12 months.", "x = 0\n# Helpers for the 12 months."),  # a comment's first word
    ("Cell `k' is above `2k' in the tree.", "In the tree, `2k' is below cell `k'."),  # TeX-style quotes
]
# The same forms with the fact changed: still a change.
CHANGED = [
    ("The bridge cost $2.5 million.", "The bridge cost $3.5 million."),
    ("Revenue reached €3bn in 2019.", "Revenue reached €3m in 2019."),
    ("The law took effect on 2021-03-15.", "The law took effect on 15 May 2021."),
    ("The ESA launched it in 2009.", "The European Southern Observatory launched it in 2009."),
    ("The train runs at 80 mph.", "The train runs at 80 km/h."),
    ("Pick 2 colours from 12.", "Pick three colours from 12."),
    ("The Berlin-based band toured 14 cities.", "The Vienna-based band toured 14 cities."),
]


@pytest.mark.parametrize("original, paraphrase", SAME_FACTS)
def test_legitimate_rewrites_keep_their_facts(original, paraphrase):
    assert compare(original, paraphrase) == (1.0, 0.0)


@pytest.mark.parametrize("original, paraphrase", CHANGED)
def test_changed_facts_in_those_forms_are_still_changes(original, paraphrase):
    assert compare(original, paraphrase)[1] > FilterOptions().fact_changes.max


def test_recall_reads_reordered_sentences_as_kept_but_gives_omissions_nothing():
    """Plain ROUGE-L recall follows one order, so moving the last sentences first loses them; read in the source's
    sentence order the rewrite keeps them. A rewrite already in order (here: two sentences dropped) gains nothing."""
    source = ("The museum opened in the spring. Its first exhibition showed maps of the coast. Visitors came from the "
              "whole region. The entry was free for children. A cafe on the roof served lunch.")
    reordered = ("A cafe on the roof served lunch. Children did not pay for entry. Visitors came from all over the region. "
                 "The museum opened in spring, and its first exhibition displayed maps of the coast.")
    dropped = "The museum opened in the spring. Its first exhibition showed maps of the coast. A cafe on the roof served lunch."
    plain = lcs_length(words(source), words(reordered)) / len(words(source))
    assert plain < FilterOptions().recall.min <= rouge_l_recall(source, reordered)
    assert rouge_l_recall(source, dropped) == lcs_length(words(source), words(dropped)) / len(words(source))


def test_coverage_gates_keep_the_fixture_paraphrases_and_catch_what_was_dropped_or_changed(pairs, tokenizer):
    good = [p for p in pairs if p["kind"] == "paraphrase"]
    changed, dropped = [], []
    for p in good:
        digits = [m for m in re.finditer(r"(?<![\w.,])\d+(?![\w,]|\.\d)", p["paraphrase"])]  # numbers written in digits
        if digits:  # the last one changed, as a careless rewrite does
            m = digits[-1]
            wrong = p["paraphrase"][: m.start()] + str(int(m[0]) + 7) + p["paraphrase"][m.end() :]
            changed.append({**p, "kind": "changed", "paraphrase": wrong})
        words = p["paraphrase"].split()
        dropped.append({**p, "kind": "dropped", "paraphrase": " ".join(words[: len(words) // 2])})
    out = filter_rows(rows_table(good + changed + dropped), coverage_only(), tokenizer).to_pylist()
    reasons = {kind: [r["reject_reason"] for r, p in zip(out, good + changed + dropped) if p["kind"] == kind] for kind in ("paraphrase", "changed", "dropped")}
    assert reasons["paraphrase"] == [None] * len(good)
    assert len(changed) >= 3 and reasons["changed"] == ["facts_changed"] * len(changed)
    assert all(reason in ("content_dropped", "facts_dropped") for reason in reasons["dropped"])


def test_bad_input_gets_clear_scores_never_a_crash(pairs, tokenizer):
    from tests.build.conftest import sample_records

    source = pairs[0]["original"]
    long_text = next(r["text"] for r in sample_records(60) if tokenizer.count([r["text"]])[0] >= 2048)
    long_chunk = tokenizer.backend.decode(tokenizer.backend.encode(long_text, add_special_tokens=False).ids[:2048])
    no_facts = "the cat sat on the mat and looked at the door for a while before it slept"
    cases = [
        (source, ""),  # empty paraphrase
        (source, "Если что-то пойдёт не так, вы получите сообщение об ошибке."),  # another script
        (no_facts, "a cat was sitting on the mat, looking at the door for some time, then it fell asleep"),
        (long_chunk, " ".join(long_chunk.split())),  # a 2,048-token chunk, reflowed
        ("", "text without a source"),
    ]
    options = FilterOptions()
    gates = {name: getattr(options, name) for name in COVERAGE}
    scores = {name: gate.score([o for o, _ in cases], [p for _, p in cases], tokenizer)[gate.column] for name, gate in gates.items()}
    empty, script, plain, long, no_source = zip(*(scores[name] for name in COVERAGE))
    assert (empty[0], empty[2], empty[3]) == (0.0, 0.0, 0.0)  # recall, facts kept, weakest section: nothing kept
    assert script[0] < 0.2 and script[2] < 0.5 and script[3] < 0.5  # nothing of the source survives
    assert math.isnan(plain[1]) and math.isnan(plain[2])  # no numbers or names: the fact gates cannot reject
    assert long[0] == 1.0 and long[1] == 0.0 and long[2] == 1.0 and long[3] > 0.95  # the longer tail section: 0.97
    assert all(math.isnan(v) for v in no_source)  # an empty source has nothing to lose
    for name, gate in gates.items():  # a NaN score is never a reject
        verdicts = gate.judge(np.asarray(scores[name]))
        assert verdicts[2] is None or name in ("recall", "sections")
        assert verdicts[4] is None
    out = filter_rows(rows_table([{"doc_id": "x", "kind": "bad", "original": o or "-", "paraphrase": p} for o, p in cases]), options, tokenizer)
    assert out["reject_reason"].to_pylist()[:2] == ["paraphrase_too_short", "paraphrase_too_short"] or all(out["reject_reason"].to_pylist()[:2])


def test_length_ratio_counts_content_not_layout(pairs, tokenizer):
    """A reflowed copy (tabs, indentation, line breaks made single spaces) is as long as its source; a third of its
    sentences dropped is not — the floor (from the calibration half) sits between the two."""
    gate = FilterOptions().length
    source = next(p["original"] for p in pairs if p["kind"] == "paraphrase" and "\t" in p["original"])
    flat = " ".join(source.split())
    sentences = re.split(r"(?<=[.!?])\s+", flat)
    shortened = " ".join(s for i, s in enumerate(sentences) if i % 3 != 1)  # every third sentence dropped
    ratios = gate.score([source, source], [flat, shortened], tokenizer)[gate.column]
    assert ratios[0] == 1.0
    assert ratios[1] < gate.min and [v and v[0] for v in gate.judge(ratios)] == [None, "paraphrase_too_short"]
