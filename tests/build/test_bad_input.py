"""Bad input never stops a build and is never silently dropped: each bad record is dead-lettered with a reason."""
from __future__ import annotations

import json

import pyarrow as pa
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


def test_records_that_used_to_stop_a_build_are_dead_lettered(tmp_path):
    """Lone surrogates, JSON nested 10,000 deep, a corrupt parquet file, an input that cannot be opened, a
    directory that cannot be listed: each a dead-letter row with its reason, the rest of the input built."""
    import os
    import zlib

    import pyarrow.parquet as pq

    good = sample_records(3)
    inp = tmp_path / "in"
    write_jsonl(inp / "odd.jsonl", [
        json.dumps(good[0]).encode(),
        b'{"text": "a lone \\ud800 surrogate in the text"}',
        json.dumps({"text": good[1]["text"], "meta": {"note": "\ud800 in meta", "redpajama_set_name": "RedPajamaBook"}}).encode(),
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a": ' * 10_000 + b"1" + b"}" * 10_000,
    ])
    (inp / "corrupt.parquet").write_bytes(b"PAR1 not a parquet file PAR1")
    pq.write_table(pa.table({"text": [good[2]["text"]]}), inp / "fine.parquet")
    (inp / "gone.jsonl").symlink_to(tmp_path / "deleted.jsonl")  # a dangling link with an input's name
    locked = inp / "locked"
    locked.mkdir()
    write_jsonl(locked / "inside.jsonl", good[:1])
    locked.chmod(0)
    try:
        run_build(BuildConfig(input=[str(inp)], tokenizer="builtin:gpt2", chunk=2048, output=str(tmp_path / "out"), progress=False))
    finally:
        locked.chmod(0o755)
    rows = {r["doc_id"]: r for r in read_output(tmp_path / "out", "rejected").to_pylist()}
    accepted = read_output(tmp_path / "out")
    assert rows["odd.jsonl:1"]["reject_reason"] == "invalid_unicode" and b"\\ud800" in rows["odd.jsonl:1"]["raw"]
    assert rows["odd.jsonl:3"]["reject_reason"] == rows["odd.jsonl:4"]["reject_reason"] == "malformed_json"
    assert "nested too deeply" in rows["odd.jsonl:4"]["reject_detail"]
    meta = accepted.filter(pc.equal(accepted["doc_id"], "odd.jsonl:2"))["meta"].to_pylist()
    assert json.loads(meta[0])["note"] == "\ud800 in meta"  # kept, as escaped JSON
    assert rows["corrupt.parquet:0"]["reject_reason"] == "unreadable_input" and "ArrowInvalid" in rows["corrupt.parquet:0"]["reject_detail"]
    assert rows["gone.jsonl:0"]["reject_reason"] == "unreadable_input" and "FileNotFoundError" in rows["gone.jsonl:0"]["reject_detail"]
    assert {"odd.jsonl:0", "odd.jsonl:2", "fine.parquet:0"} <= set(accepted["doc_id"].to_pylist())
    if os.geteuid() == 0:  # root lists any directory whatever its mode: it is read, not dead-lettered
        assert "locked/inside.jsonl:0" in set(accepted["doc_id"].to_pylist())
    else:
        assert "PermissionError" in rows["locked:0"]["reject_detail"]

    # a .jsonl.gz cut at 3/4: every line that decodes is built, the cut line is kept with the cut
    records = sample_records(300)
    cut = write_jsonl(tmp_path / "gz" / "cut.jsonl.gz", records)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 3 // 4])
    decoded = zlib.decompressobj(31).decompress(cut.read_bytes())
    complete, tail = decoded.count(b"\n"), decoded.rsplit(b"\n", 1)[1]
    result = run_build(BuildConfig(input=[str(tmp_path / "gz")], tokenizer="builtin:gpt2", chunk=2048, docs_per_task=64,
                                   output=str(tmp_path / "gz-out"), progress=False))
    assert result.counts["documents"] == complete + 1  # every decodable record, and the cut
    (truncated,) = read_output(tmp_path / "gz-out", "rejected").filter(
        pc.equal(read_output(tmp_path / "gz-out", "rejected")["reject_reason"], "truncated_input")).to_pylist()
    assert truncated["raw"] == tail and truncated["record_index"] == complete
    assert "gzip stream ends before its end marker" in truncated["reject_detail"]


def test_meta_is_stored_once_per_document(tmp_path):
    record = {"text": sample_records(1)[0]["text"], "meta": {"redpajama_set_name": "RedPajamaBook", "big": "x" * 10_000}}
    write_jsonl(tmp_path / "in" / "one.jsonl", [record])
    run_build(BuildConfig(input=[str(tmp_path / "in")], tokenizer="builtin:gpt2", chunk=64, output=str(tmp_path / "out"), progress=False))
    rows = read_output(tmp_path / "out").sort_by("chunk_index").to_pylist()
    assert len(rows) > 3 and json.loads(rows[0]["meta"]) == record["meta"]
    assert all(r["meta"] is None for r in rows[1:]) and {r["set_name"] for r in rows} == {"RedPajamaBook"}
