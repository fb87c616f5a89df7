"""Fixtures for the filter / compose / card tests: real paraphrase and non-paraphrase pairs written from the
bundled sample corpus, the real GPT-2 tokenizer, a tiny causal LM trained for a few steps, a paraphrase engine
that replays the pairs."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from paraphrase_pipe.ids import chunk_id
from paraphrase_pipe.schema import ROW_SCHEMA, conform
from paraphrase_pipe.tokenizer import load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
TOK = "builtin:gpt2"


def load_pairs() -> list[dict]:
    """30 pairs: 16 hand-written faithful paraphrases of real chunks, then near copies, unrelated rewrites,
    truncated rewrites and translations (`kind`)."""
    return [json.loads(line) for line in (FIXTURES / "pairs.jsonl").read_text().splitlines()]


def rows_table(pairs: list[dict], **extra) -> pa.Table:
    """Live rows in the build's row schema, as the paraphrase stage leaves them."""
    tok = load_tokenizer(TOK)
    counts = tok.count([p["original"] for p in pairs])
    rows = [
        {
            "doc_id": f"{p['doc_id']}#{i}",
            "chunk_id": chunk_id(f"{p['doc_id']}#{i}", 0, n, tok.fingerprint, 128),
            "source": p["kind"],
            "record_index": i,
            "chunk_index": 0,
            "n_tokens": n,
            "original": p["original"],
            "paraphrase": p["paraphrase"],
            "finish_reason": "stop",
            **extra,
        }
        for i, (p, n) in enumerate(zip(pairs, counts))
    ]
    return conform(pa.Table.from_pylist(rows), ROW_SCHEMA)


@pytest.fixture(scope="session")
def pairs() -> list[dict]:
    return load_pairs()


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(TOK)


@pytest.fixture(scope="session")
def reference_lm(tmp_path_factory) -> Path:
    """A tiny Llama with its own byte-level BPE, trained for a few steps on the sample corpus so that its
    perplexities mean something (word order, character statistics, repetition)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from tests.build.conftest import sample_records
    from tests.engines.tiny_llm import build_tiny_llm

    path = build_tiny_llm(tmp_path_factory.mktemp("reference_lm"), vocab_size=512)
    tokenizer, model = AutoTokenizer.from_pretrained(path), LlamaForCausalLM.from_pretrained(path)
    text = "\n\n".join(r["text"] for r in sample_records(150) if r["meta"]["redpajama_set_name"] != "RedPajamaGithub")
    data = torch.tensor(tokenizer(text)["input_ids"])
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        starts = torch.randint(0, len(data) - 129, (8,), generator=generator)
        batch = torch.stack([data[s : s + 128] for s in starts])
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(path)
    return path
