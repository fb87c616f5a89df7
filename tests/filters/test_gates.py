"""The pairwise gates on real text pairs: the defaults are calibrated on the fixture (accept every real
paraphrase, reject every non-paraphrase), and each gate alone catches the failure it exists for."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from paraphrase_pipe.config import ConfigError, resolve_config
from paraphrase_pipe.filters import FilterError, FilterOptions
from paraphrase_pipe.filters.lexical import lcs_length, rouge_l
from paraphrase_pipe.stages.filter import filter_rows

from .conftest import rows_table

# the gate that must catch each kind of non-paraphrase on its own, with its reason
CATCHES = {
    "near_copy": ("lexical", "near_copy"),
    "unrelated": ("semantic", "semantic_drift"),
    "truncated": ("length", "paraphrase_too_short"),
    "other_language": ("language", "language_mismatch"),
}


def only(gate: str) -> FilterOptions:
    options = FilterOptions()
    for name in type(options).model_fields:
        getattr(options, name).enabled = name == gate
    return options


def test_defaults_accept_real_paraphrases_and_reject_the_rest(pairs, tokenizer):
    out = filter_rows(rows_table(pairs), FilterOptions(), tokenizer).to_pylist()
    for pair, row in zip(pairs, out):
        if pair["kind"] == "paraphrase":
            assert row["reject_reason"] is None, (pair["doc_id"], row["reject_detail"])
        else:
            assert row["reject_stage"] == "filter" and row["reject_reason"], (pair["kind"], pair["note"])
            assert row["reject_detail"]  # the score and the bound it crossed
    accepted = [r for r in out if r["reject_reason"] is None]
    # every accepted row carries every default score; margins to the bands are real, not razor-thin
    assert min(r["score_semantic"] for r in accepted) > FilterOptions().semantic.min + 0.05
    assert max(r["score_rouge_l"] for r in accepted) < FilterOptions().lexical.max - 0.05
    assert {r["lang_source"] for r in accepted} == {"en"}


@pytest.mark.parametrize("kind", sorted(CATCHES))
def test_each_gate_alone_catches_its_failure(pairs, tokenizer, kind):
    gate, reason = CATCHES[kind]
    table = rows_table([p for p in pairs if p["kind"] in (kind, "paraphrase")])
    out = filter_rows(table, only(gate), tokenizer).to_pylist()
    kinds = [r["source"] for r in out]
    assert [r["reject_reason"] for r, k in zip(out, kinds) if k == kind] == [reason] * kinds.count(kind)
    assert all(r["reject_reason"] is None for r, k in zip(out, kinds) if k == "paraphrase")


def test_rouge_l_matches_the_reference_implementation(pairs):
    rouge_score = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_score.RougeScorer(["rougeL"])
    for p in (p for p in pairs if p["kind"] != "other_language"):  # rouge-score drops non-ASCII letters
        assert rouge_l(p["original"], p["paraphrase"]) == pytest.approx(scorer.score(p["original"], p["paraphrase"])["rougeL"].fmeasure)
    rng = np.random.default_rng(0)
    for _ in range(200):  # bit-parallel LCS against the textbook dynamic programme
        a, b = (list(rng.choice(list("abcd"), size=rng.integers(0, 25))) for _ in range(2))
        table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1, j + 1] = table[i, j] + 1 if x == y else max(table[i, j + 1], table[i + 1, j])
        assert lcs_length(a, b) == table[-1, -1]


def test_dead_rows_and_rows_without_paraphrase_pass_through_unscored(pairs, tokenizer):
    table = rows_table(pairs[:3])
    reasons = pa.array([None, "truncated", None], pa.string())
    table = table.set_column(table.column_names.index("reject_reason"), "reject_reason", reasons)
    paraphrase = pa.array([pairs[0]["paraphrase"], pairs[1]["paraphrase"], None], pa.string())
    table = table.set_column(table.column_names.index("paraphrase"), "paraphrase", paraphrase)
    out = filter_rows(table, FilterOptions(), tokenizer)
    assert out["reject_reason"].to_pylist() == [None, "truncated", None]
    for column in ("score_length_ratio", "score_rouge_l", "score_language", "score_semantic"):
        values = out[column].to_pylist()
        assert values[0] is not None and values[1] is None and values[2] is None


def test_gate_options_are_validated_up_front():
    with pytest.raises(ConfigError, match="filter_options.semantic.minimum"):
        resolve_config(filter_options={"semantic": {"minimum": 0.9}})
    with pytest.raises(ConfigError, match="min 2.0 > max 1.0"):
        resolve_config(filter_options={"length": {"min": 2, "max": 1}})


def test_a_model_that_does_not_load_is_one_clear_error(pairs, tokenizer, tmp_path):
    options = only("semantic")
    options.semantic.model = str(tmp_path / "no-such-model")
    with pytest.raises(FilterError, match="semantic gate: cannot load embedding model"):
        filter_rows(rows_table(pairs[:1]), options, tokenizer)
