"""Jensen–Shannon divergence on distributions with known values, and the drift report's bookkeeping."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from paraphrase_pipe.filters.drift import Counts, Drift, js_divergence


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
    assert dict(zip((a + b).keys.tolist(), (a + b).values.tolist())) == {(5 << 32) | 6: 3, (6 << 32) | 5: 2}
    assert (Counts.of([[1, 2]], 1) + Counts.of([[2, 3]], 1)).values.tolist() == [1, 2, 1]


def test_drift_report_before_and_after_per_source_and_overall(tokenizer):
    english = "The expression x and y first evaluates x; if x is false, its value is returned."
    rewrite = "To evaluate x and y, Python evaluates x first and returns it when it is false."
    german = "Der Ausdruck x und y wertet zuerst x aus; ist x falsch, wird sein Wert zurückgegeben."
    pairs = pa.table({
        "source": ["a", "a", "b"],
        "original": [english, english, english],
        "paraphrase": [rewrite, german, rewrite],
        "accepted": [True, False, True],
    })
    drift = Drift(tokenizer)
    drift.add(pairs.slice(0, 2))
    drift.add(pairs.slice(2))  # shards arrive one at a time
    report = drift.report()
    assert (report["rows"], report["accepted"]) == (3, 2)
    a, b = report["per_source"]["a"], report["per_source"]["b"]
    assert a["unigram"]["after"] < a["unigram"]["before"]  # dropping the German "paraphrase" moved closer
    assert b["unigram"]["before"] == b["unigram"]["after"]
    for order in ("unigram", "bigram"):
        assert 0 < report["overall"][order]["after"] < report["overall"][order]["before"] <= 1
    assert report["overall"]["bigram"]["after"] > report["overall"]["unigram"]["after"]  # sparser, further apart
