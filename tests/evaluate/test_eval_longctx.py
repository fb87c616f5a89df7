"""Long-context LM: per-token NLL against a direct computation, windows and position buckets, the document
sources (PG-19 .txt books, a build output), and NLL by position on a text whose second half a copier predicts."""

from __future__ import annotations

import json
import math
import random

import pyarrow as pa
import pytest
import torch

from .conftest import FIXTURES
from paraphrase_pipe.evaluate.data import read_texts
from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.evaluate.longctx import evaluate_longctx, position_buckets, token_nll, windows


def test_token_nll_matches_a_direct_computation(load, llama_dir):
    model = load(llama_dir).model
    seqs = torch.randint(1, 512, (3, 70), generator=torch.Generator().manual_seed(0)).tolist()
    nll = token_nll(model, seqs, batch_tokens=140, chunk=16)  # several batches and chunks
    ids = torch.tensor(seqs)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), -1)
        direct = -logp[:, :-1].gather(2, ids[:, 1:, None])[..., 0]
        loss = model(ids, labels=ids).loss
    assert nll.shape == (3, 69)
    torch.testing.assert_close(nll, direct, rtol=1e-5, atol=1e-5)
    assert nll.mean().item() == pytest.approx(loss.item(), rel=1e-5)


def test_windows_are_exact_and_round_robin():
    docs = [list(range(10)), list(range(100, 125))]
    got = windows(docs, [7], 5, limit=5)
    assert got == [[7, 0, 1, 2, 3], [7, 100, 101, 102, 103], [7, 4, 5, 6, 7], [7, 104, 105, 106, 107],
                   [7, 108, 109, 110, 111]]
    assert position_buckets(300) == [(0, 64), (64, 128), (128, 256), (256, 300)]


def test_perplexity_and_position_curve_on_pg19_books(load, llama_dir):
    m = load(llama_dir)
    results = evaluate_longctx(m.model, m.tokenizer, "llama", str(FIXTURES / "pg19"), lengths=(64, 300),
                               max_windows=4)
    ppl = {r.length: r for r in results if r.metric == "perplexity"}
    assert set(ppl) == {64, 300} and ppl[300].n == 4 and ppl[300].task == "pg19"
    curve = [r for r in results if r.metric == "nll" and r.length == 300]
    assert [r.position for r in curve] == [0, 64, 128, 256]
    weights = [63, 64, 128, 44]  # predicted tokens per bucket: indices 1..63, 64..127, 128..255, 256..299
    mean_nll = sum(w * r.value for w, r in zip(weights, curve)) / sum(weights)
    assert math.exp(mean_nll) == pytest.approx(ppl[300].value, rel=1e-4)
    with pytest.raises(EvalError, match="no document has 100000 tokens"):
        evaluate_longctx(m.model, m.tokenizer, "llama", str(FIXTURES / "pg19"), lengths=(100_000,))


def test_copier_profits_from_long_context(load, copy_dir, tokenizer, tmp_path):
    """A text that repeats itself: the second copy is predictable only from far back in the window."""
    rng = random.Random(0)
    words = " ".join(rng.choice(["river", "hill", "bell", "market", "wind", "house"]) + str(rng.randrange(99))
                     for _ in range(400))
    (tmp_path / "book.txt").write_text(words + " " + words)
    m = load(copy_dir)
    half = len(tokenizer(words)["input_ids"])
    length = 2 * half - 8
    results = evaluate_longctx(m.model, m.tokenizer, "copy", str(tmp_path / "book.txt"), lengths=(length,),
                               max_windows=1)
    curve = {r.position: r.value for r in results if r.metric == "nll"}
    late = [v for p, v in curve.items() if p >= half + 8]
    assert curve[0] > 5 and late and max(late) < 0.01


def test_documents_of_a_build_output(tmp_path):
    (tmp_path / "shards").mkdir()
    table = pa.table({"doc_id": ["a", "a", "b", "a"], "original": ["One ", "two.", "Three.", "One "],
                      "text": ["x", "y", "z", "w"]})
    with pa.OSFile(str(tmp_path / "shards" / "s0.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "status": "complete",
                                                        "shards": [{"path": "shards/s0.arrow", "rows": 4}]}))
    # a chunk written twice (two layouts of one chunk) counts once
    assert read_texts(str(tmp_path)) == ["One two.", "Three."]
