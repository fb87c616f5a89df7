"""Bad input never stops a build and is never silently dropped: each bad record is dead-lettered with a reason."""
from __future__ import annotations

import json

import pyarrow.compute as pc

from paraphrase_pipe.build import run_build
from paraphrase_pipe.config import BuildConfig

from .conftest import read_output, sample_records, write_jsonl


def test_each_bad_record_is_dead_lettered_with_its_reason(tmp_path):
    good = sample_records(80)
    big_text = ("A long document sentence that keeps going. " * 120_000)[:5_000_000]  # 5 MB
    lines = [
        json.dumps(good[0]).encode(),
        b'{"text": "unterminated',  # malformed JSON
        b'{"text": "caf\xe9 latin-1 bytes"}',  # invalid UTF-8
        json.dumps({"meta": {"redpajama_set_name": "RedPajamaC4"}}).encode(),  # no text
        json.dumps({"text": "   \n ", "meta": {}}).encode(),  # empty text
        json.dumps({"text": 42}).encode(),  # text not a string
        b"[1, 2, 3]",  # not an object
        json.dumps({"text": big_text, "meta": {"redpajama_set_name": "RedPajamaBook"}}).encode(),
        json.dumps(good[1]).encode(),
    ]
    write_jsonl(tmp_path / "in" / "bad.jsonl", lines)
    # a truncated .zst file: its complete records are read, the cut is reported
    full = write_jsonl(tmp_path / "in" / "cut.jsonl.zst", good[2:])  # > one 128 KiB zstd block
    full.write_bytes(full.read_bytes()[: len(full.read_bytes()) * 2 // 3])

    config = BuildConfig(input=[str(tmp_path / "in")], tokenizer="builtin:gpt2", chunk=512, output=str(tmp_path / "out"), progress=False)
    result = run_build(config)

    rejected = read_output(tmp_path / "out", "rejected").to_pylist()
    by_reason = {}
    for row in rejected:
        by_reason.setdefault(row["reject_reason"], []).append(row)
    assert set(by_reason) == {"malformed_json", "invalid_utf8", "missing_text", "empty_text", "text_not_string", "not_an_object", "truncated_input"}
    assert by_reason["invalid_utf8"][0]["raw"] == b'{"text": "caf\xe9 latin-1 bytes"}'  # replayable
    assert by_reason["malformed_json"][0]["doc_id"] == "bad.jsonl:1"
    assert result.counts["rejects_by_reason"] == {reason: len(rows) for reason, rows in by_reason.items()}

    accepted = read_output(tmp_path / "out")
    big = accepted.filter(pc.equal(accepted["doc_id"], "bad.jsonl:7"))
    assert sum(len(t) for t in big["original"].to_pylist()) == len(big_text)  # the 5 MB document is chunked whole
    assert max(big["n_tokens"].to_pylist()) <= 512  # `chunk` is a maximum
    docs_ok = set(accepted["doc_id"].to_pylist())
    assert {"bad.jsonl:0", "bad.jsonl:8"} <= docs_ok
    assert len({d for d in docs_ok if d.startswith("cut.jsonl.zst:")}) >= 1  # records before the cut survive
