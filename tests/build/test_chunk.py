"""Token-exact chunking with the real GPT-2 BPE."""
from __future__ import annotations

import pyarrow as pa
import pytest

from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.schema import DOCUMENT_SCHEMA
from paraphrase_pipe.stages.chunk import chunk_documents
from paraphrase_pipe.tokenizer import load_tokenizer

from .conftest import sample_records

TOK = "builtin:gpt2"


def docs_table(texts: list[str]) -> pa.Table:
    rows = [
        {"doc_id": f"t:{i}", "source": "t", "record_index": i, "set_name": None, "meta": None, "text": text}
        for i, text in enumerate(texts)
    ]
    return pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)


def chunks_of(texts, **cfg) -> list[dict]:
    config = BuildConfig(tokenizer=TOK, **cfg)
    return chunk_documents(docs_table(texts), config).to_pylist()


@pytest.mark.parametrize("size", [64, 200, 512])
def test_chunks_are_token_exact_and_tile_the_document(size):
    texts = [r["text"] for r in sample_records(40)]
    rows = chunks_of(texts, chunk=size, min_chunk_tokens=8)
    tok = load_tokenizer(TOK)
    kept = [r for r in rows if r["reject_reason"] is None]
    assert kept
    # n_tokens is exact: re-tokenizing each chunk alone gives the same count as its span in the document
    assert tok.count([r["original"] for r in kept]) == [r["n_tokens"] for r in kept]
    assert all(r["n_tokens"] == r["token_end"] - r["token_start"] for r in kept)
    # chunks (kept + rejected pieces) tile each document exactly, in order
    for i, text in enumerate(texts):
        pieces = sorted((r for r in rows if r["doc_id"] == f"t:{i}"), key=lambda r: r["chunk_index"])
        assert "".join(p["original"] for p in pieces) == text
    # merge policy: no chunk is longer than size + min_chunk_tokens
    assert max(r["n_tokens"] for r in kept) < size + 8


def test_cuts_prefer_sentence_ends_within_tolerance():
    sentence = "The quick brown fox jumps over the lazy dog near the river bank. "
    text = sentence * 60
    rows = chunks_of([text], chunk=100, boundary_tolerance=0.2, min_chunk_tokens=8)
    for r in rows[:-1]:
        assert r["original"].endswith("."), repr(r["original"][-20:])
        assert 80 <= r["n_tokens"] <= 100
    no_tolerance = chunks_of([text], chunk=100, boundary_tolerance=0.0, min_chunk_tokens=8)
    assert [r["n_tokens"] for r in no_tolerance[:-1]] == [100] * (len(no_tolerance) - 1)


def test_never_splits_a_multibyte_character():
    # emoji and CJK become several byte-level tokens each; a hard cut must not fall between them
    text = "".join(f"{i} 😀🎉 漢字テキスト " for i in range(400))
    tok = load_tokenizer(TOK)
    for size in (8, 13, 50):
        rows = chunks_of([text], chunk=size, boundary_tolerance=0.0, min_chunk_tokens=1, tail="keep")
        assert "".join(r["original"] for r in rows) == text
        assert tok.count([r["original"] for r in rows]) == [r["n_tokens"] for r in rows]
        assert all("\ufffd" not in r["original"] for r in rows)


def test_tail_policies():
    text = "word" + " word" * 229  # 230 tokens: two chunks of 100 and a 30-token tail
    merge = chunks_of([text], chunk=100, min_chunk_tokens=50, tail="merge", boundary_tolerance=0)
    assert [r["n_tokens"] for r in merge] == [100, 130]
    keep = chunks_of([text], chunk=100, min_chunk_tokens=20, tail="keep", boundary_tolerance=0)
    assert [r["n_tokens"] for r in keep] == [100, 100, 30]
    keep_short = chunks_of([text], chunk=100, min_chunk_tokens=50, tail="keep", boundary_tolerance=0)
    assert [(r["n_tokens"], r["reject_reason"]) for r in keep_short] == [(100, None), (100, None), (30, "too_short")]
    drop = chunks_of([text], chunk=100, min_chunk_tokens=10, tail="drop", boundary_tolerance=0)
    assert [(r["n_tokens"], r["reject_reason"]) for r in drop] == [(100, None), (100, None), (30, "short_tail")]
    tiny_doc = chunks_of(["just four tokens here"], chunk=100, min_chunk_tokens=10)
    assert tiny_doc[0]["reject_reason"] == "too_short"


def test_chunk_ids_are_stable_and_depend_on_size_and_tokenizer():
    text = sample_records(1)[0]["text"]
    a = [r["chunk_id"] for r in chunks_of([text], chunk=128)]
    b = [r["chunk_id"] for r in chunks_of([text], chunk=128)]
    c = [r["chunk_id"] for r in chunks_of([text], chunk=256)]
    assert a == b and len(set(a)) == len(a)
    assert not set(a) & set(c)
