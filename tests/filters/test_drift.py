"""Jensen–Shannon divergence on distributions with known values, and the drift report's bookkeeping."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from paraphrase_pipe.card.divergence import Counts, TokenDivergence, closeness, js_divergence


def counts(mapping: dict[int, int]) -> Counts:
    keys = np.array(sorted(mapping), dtype=np.int64)
    return Counts(keys, np.array([mapping[k] for k in keys], dtype=np.int64))


def test_known_values():
    assert js_divergence(counts({1: 3, 2: 5}), counts({1: 6, 2: 10})) == 0.0  # same distribution, other scale
    assert js_divergence(counts({1: 1}), counts({2: 7})) == pytest.approx(1.0)  # disjoint supports
    # P = (1/2, 1/2), Q = (1, 0): JS = 1/2 KL(P||M) + 1/2 KL(Q||M), M = (3/4, 1/4)
    expected = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) + 0.5 * math.log2(1 / 0.75)
    assert js_divergence(counts({1: 1, 2: 1}), counts({1: 4})) == pytest.approx(expected)
    assert expected == pytest.approx(0.311278, abs=1e-6)
    p, q = counts({1: 2, 2: 1, 3: 7}), counts({2: 4, 3: 1, 4: 5})
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))  # symmetric
    assert math.isnan(js_divergence(counts({}), q))


def test_ngram_counts_merge_by_addition():
    a, b = Counts.of([[5, 6, 5, 6]], 2), Counts.of([[6, 5], [5, 6]], 2)
    merged = Counts.merge([a, b])
    assert dict(zip(merged.keys.tolist(), merged.values.tolist())) == {(5 << 32) | 6: 3, (6 << 32) | 5: 2}
    parts = [Counts.of([[1, 2]], 1), Counts.of([[2, 3]], 1), Counts.of([[3, 3, 9]], 1)]
    assert (Counts.merge(parts).keys.tolist(), Counts.merge(parts).values.tolist()) == ([1, 2, 3, 9], [1, 2, 3, 1])


def test_drift_report_before_and_after_per_source_and_overall(tokenizer):
    english = "The expression x and y first evaluates x; if x is false, its value is returned."
    rewrite = "To evaluate x and y, Python evaluates x first and returns it when it is false."
    german = "Der Ausdruck x und y wertet zuerst x aus; ist x falsch, wird sein Wert zurückgegeben."
    drift = TokenDivergence(tokenizer)
    drift.POOL_EVERY = 2  # exercise the intermediate merges
    drift.measure("a", pa.table({"original": [english, english], "paraphrase": [rewrite, german], "accepted": [True, False]}))
    drift.measure("b", pa.table({"original": [english], "paraphrase": [rewrite], "accepted": [True]}))
    drift.measure("c", pa.table({"original": [german], "paraphrase": [german], "accepted": [False]}))
    report = drift.report()
    assert (report["rows"], report["accepted"]) == (4, 2)
    a, b, c = (report["per_source"][k] for k in "abc")
    assert a["unigram"]["after"] < a["unigram"]["before"]  # dropping the German "paraphrase" moved closer
    assert b["unigram"]["before"] == b["unigram"]["after"]
    assert c["unigram"] == {"before": 0.0, "after": None}  # identical text; nothing accepted
    ids = lambda texts: [tokenizer.backend.encode(t, add_special_tokens=False).ids for t in texts]  # noqa: E731
    source = [english, english, english, german]
    for order, n in (("unigram", 1), ("bigram", 2)):  # pooled counts, not an average of shard values
        before = js_divergence(Counts.of(ids([rewrite, german, rewrite, german]), n), Counts.of(ids(source), n))
        after = js_divergence(Counts.of(ids([rewrite, rewrite]), n), Counts.of(ids(source), n))
        assert report["overall"][order] == {"before": pytest.approx(before, abs=1e-6), "after": pytest.approx(after, abs=1e-6)}


def test_closeness_is_size_matched_and_reports_its_null(pairs, tokenizer):
    """Known answers: a paraphrase identical to its source sits exactly on the null; reversed token order keeps
    unigram counts (within the null) and breaks bigrams (beyond it). Both sides compare equal-sized halves."""
    ids = [np.asarray(tokenizer.backend.encode(p["original"], add_special_tokens=False).ids) for p in pairs if p["kind"] == "paraphrase"]
    same = closeness([(o, o) for o in ids], 1)
    assert same["chunks"] == len(ids) and same["divergence"] == same["null_mean"] and not same["beyond_null"]
    reversed_unigram, reversed_bigram = (closeness([(o, o[::-1]) for o in ids], n) for n in (1, 2))
    assert reversed_unigram["divergence"] == same["divergence"] and not reversed_unigram["beyond_null"]
    assert reversed_bigram["divergence"] > reversed_bigram["null_p95"] and reversed_bigram["beyond_null"]
    assert closeness([(o, o) for o in ids[:3]], 1) is None  # too few pairs to halve
    drift = TokenDivergence(tokenizer)
    drift.measure("x", pa.table({"original": [p["original"] for p in pairs], "paraphrase": [p["paraphrase"] for p in pairs],
                                 "accepted": [p["kind"] == "paraphrase" for p in pairs]}))
    near = drift.report()["closeness"]
    assert near["accepted"]["unigram"]["chunks"] == len(ids) and near["rejected"]["bigram"]["chunks"] == len(pairs) - len(ids)
