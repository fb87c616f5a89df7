"""Token-exact chunking with the real GPT-2 BPE."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest
from tokenizers import Tokenizer

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
    config = BuildConfig(**{"tokenizer": TOK, **cfg})
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
    # `chunk` is a maximum, the merged tail included
    assert max(r["n_tokens"] for r in kept) <= size


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
    assert [r["n_tokens"] for r in merge] == [100, 65, 65]  # the short tail rebalances the last two pieces
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


def _cut_contexts(texts: list[str], rows: list[dict]) -> list[tuple[str, str]]:
    """(text before, text after) at every cut inside a document."""
    return [(texts[int(r["doc_id"][2:])][: r["char_end"]], texts[int(r["doc_id"][2:])][r["char_end"]:])
            for r in rows if r["char_end"] < len(texts[int(r["doc_id"][2:])])]


def test_no_cut_inside_decimals_identifiers_or_urls_on_real_text():
    """The bundled sample (prose, Vim help, Python docs) and a code-heavy file (CPython's urllib.parse, full of
    URLs and dotted names): chunk 512 is a maximum and no cut follows a `.` that no whitespace follows."""
    import urllib.parse

    code = Path(urllib.parse.__file__).read_text()
    texts = [r["text"] for r in sample_records()] + [code]
    rows = chunks_of(texts, chunk=512)
    kept = [r for r in rows if r["reject_reason"] is None]
    assert max(r["n_tokens"] for r in kept) <= 512
    assert load_tokenizer(TOK).count([r["original"] for r in kept]) == [r["n_tokens"] for r in kept]
    contexts = _cut_contexts(texts, rows)
    assert len(contexts) > 600
    inside = [(b[-20:], a[:20]) for b, a in contexts if b.endswith(".") and a[:1].strip()]
    assert not inside, inside[:5]
    assert not [(b[-20:], a[:20]) for b, a in contexts if re.search(r"\d[.,]?$", b) and re.match(r"[.,]?\d", a)]
    urls = [m.span() for t in texts for m in re.finditer(r"https?://\S+", t)]
    assert len(urls) > 20
    code_cuts = [r["char_end"] for r in rows if r["doc_id"] == f"t:{len(texts) - 1}"][:-1]
    code_urls = [m.span() for m in re.finditer(r"https?://\S+", code)]
    assert not [c for c in code_cuts for s, e in code_urls if s < c < e]


def test_a_sentence_end_needs_whitespace_after_it():
    text = ("Python 3.10 adds structural pattern matching to the language. " * 3 + "See docs.python.org/3.10 for it. ") * 20
    for size in (40, 57, 64):
        rows = chunks_of([text], chunk=size, boundary_tolerance=0.3, min_chunk_tokens=8)
        for before, after in _cut_contexts([text], rows):
            assert not (before.endswith(".") and after[:1].strip()), (before[-15:], after[:15])
            assert before.endswith(". ") or before.endswith(".") and after.startswith(" "), (before[-15:], after[:15])


def test_a_stretch_without_an_exact_cut_is_dead_lettered_with_its_true_length():
    """A run of emoji is one pre-token for GPT-2: no exact cut inside it. It is never cut (that would change
    its tokens): it runs to the next exact cut and is dead-lettered; every n_tokens re-tokenizes exactly."""
    text = "An introduction of a few words. " + "😀🎉" * 150 + " And then the story goes on for a while, at length, in words."
    tok = load_tokenizer(TOK)
    rows = chunks_of([text], chunk=64, min_chunk_tokens=4)
    assert "".join(r["original"] for r in rows) == text
    assert tok.count([r["original"] for r in rows]) == [r["n_tokens"] for r in rows]
    reasons = [r["reject_reason"] for r in rows]
    assert "no_exact_cut" in reasons
    dead = rows[reasons.index("no_exact_cut")]
    assert dead["n_tokens"] > 64 and "😀" in dead["original"]
    assert all(r["n_tokens"] <= 64 for r in rows if r["reject_reason"] is None)
    assert any(r["reject_reason"] is None for r in rows)


def test_tail_drop_dead_letters_a_document_shorter_than_chunk():
    text = "word" + " word" * 79  # 80 tokens
    assert [(r["n_tokens"], r["reject_reason"]) for r in chunks_of([text], chunk=100, tail="drop", min_chunk_tokens=10)] == [(80, "short_tail")]
    assert [(r["n_tokens"], r["reject_reason"]) for r in chunks_of([text], chunk=100, tail="merge", min_chunk_tokens=10)] == [(80, None)]


def test_merge_rebalances_at_sentence_ends_and_never_exceeds_chunk():
    sentence = "The quick brown fox jumps over the lazy dog near the river bank. "  # 14 tokens
    for repeats in range(8, 30):
        rows = chunks_of([sentence * repeats], chunk=100, boundary_tolerance=0.2, min_chunk_tokens=30)
        assert all(r["reject_reason"] is None and r["n_tokens"] <= 100 for r in rows), [r["n_tokens"] for r in rows]
        assert all(r["original"].endswith(".") for r in rows[:-1])
        assert rows[-1]["n_tokens"] >= 30 or len(rows) == 1


def test_a_tokenizer_saved_with_truncation_and_padding_counts_every_token(tmp_path):
    backend = load_tokenizer(TOK).backend
    saved = Tokenizer.from_str(backend.to_str())
    saved.enable_truncation(16)
    saved.enable_padding(length=32, pad_id=0, pad_token="!")
    path = tmp_path / "tokenizer.json"
    saved.save(str(path))
    text = sample_records(1)[0]["text"]
    tok = load_tokenizer(str(path))
    assert tok.count([text]) == load_tokenizer(TOK).count([text]) and tok.count([text])[0] > 200
    assert tok.count(["a word"]) == [2]
    rows = chunks_of([text], chunk=64, min_chunk_tokens=8, tokenizer=str(path))
    assert "".join(r["original"] for r in rows) == text and max(r["n_tokens"] for r in rows) <= 64
    assert tok.fingerprint == load_tokenizer(TOK).fingerprint  # the same tokenizer once counting is set up
