"""The perplexity gate with a tiny local causal LM: batched, padded scoring is exact, and the gate rejects text
the reference model finds far less natural than the source."""
from __future__ import annotations

import random

import numpy as np
import pytest

from paraphrase_pipe.filters import FilterOptions
from paraphrase_pipe.filters.perplexity import PerplexityGate, load_reference, mean_nll
from paraphrase_pipe.stages.filter import filter_rows

from .conftest import rows_table


def test_batched_padded_nll_equals_unbatched_model_loss(pairs, reference_lm):
    import torch

    model, tokenizer = load_reference(str(reference_lm), "cpu", "float32")
    texts = [p["paraphrase"] for p in pairs[:6]] + ["x"]
    # a small token budget forces several batches of different widths with right padding
    batched = mean_nll(texts, model, tokenizer, max_tokens=512, batch_tokens=300)
    for text, value in zip(texts, batched):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        if ids.shape[1] < 2:
            assert np.isnan(value)
            continue
        with torch.inference_mode():
            assert value == pytest.approx(model(input_ids=ids, labels=ids).loss.item(), rel=1e-4)
    assert load_reference(str(reference_lm), "cpu", "float32")[0] is model  # loaded once per process


def test_gate_rejects_what_the_reference_model_finds_unnatural(pairs, tokenizer, reference_lm):
    real = [p for p in pairs if p["kind"] == "paraphrase"]
    rng = random.Random(0)

    def variant(kind: str, text: str) -> str:
        words = text.split()
        if kind == "salad":  # the same words in a random order
            return " ".join(rng.sample(words, len(words)))
        if kind == "garbage":  # random characters: off-distribution text
            return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in text)
        return " ".join(["the"] * len(words))  # degenerate repetition

    kinds = ("salad", "garbage", "degenerate")
    rows = real + [{**p, "kind": kind, "paraphrase": variant(kind, p["paraphrase"])} for kind in kinds for p in real]
    options = FilterOptions()
    for name in type(options).model_fields:
        getattr(options, name).enabled = False
    # the band suits this 30-step toy model; the default band is for a real reference model
    options.perplexity = PerplexityGate(enabled=True, model=str(reference_lm), device="cpu", min=0.5, max=1.4)
    out = filter_rows(rows_table(rows), options, tokenizer).to_pylist()
    by_kind = {kind: [r for r in out if r["source"] == kind] for kind in ("paraphrase", *kinds)}
    ratio = {kind: [r["score_ppl_ratio"] for r in group] for kind, group in by_kind.items()}
    assert all(s > p for s, p in zip(ratio["salad"], ratio["paraphrase"]))  # word order matters to the model
    assert all(r["reject_reason"] is None for r in by_kind["paraphrase"])
    assert {r["reject_reason"] for r in by_kind["garbage"]} == {"perplexity_high"}
    assert {r["reject_reason"] for r in by_kind["degenerate"]} == {"perplexity_low"}
    for r in out:
        assert r["score_ppl_ratio"] == pytest.approx(r["ppl_paraphrase"] / r["ppl_original"])
