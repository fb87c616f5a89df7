"""Readers for every supported input layout, set filter, sampling and limits, through real builds."""
from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from paraphrase_pipe.build import run_build
from paraphrase_pipe.config import BuildConfig

from .conftest import read_output, sample_records, write_jsonl


def build(tmp_path, name, **cfg):
    config = BuildConfig(tokenizer="builtin:gpt2", chunk=256, output=str(tmp_path / name), progress=False, **cfg)
    return run_build(config)


def texts_by_doc(out) -> dict[int, str]:
    table = read_output(out).to_pylist()
    docs: dict[int, list] = {}
    for row in sorted(table, key=lambda r: (r["record_index"], r["chunk_index"])):
        docs.setdefault(row["record_index"], []).append(row["original"])
    return {k: "".join(v) for k, v in docs.items()}


def test_all_formats_give_the_same_documents(tmp_path):
    records = sample_records(25)
    write_jsonl(tmp_path / "zst" / "part.jsonl.zst", records)
    write_jsonl(tmp_path / "gz" / "part.jsonl.gz", records)
    write_jsonl(tmp_path / "plain" / "part.jsonl", records)
    flat = [{"text": r["text"], "meta": r["meta"]} for r in records]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "part.parquet", row_group_size=7)
    (tmp_path / "hf").mkdir()
    datasets.Dataset.from_list(flat).save_to_disk(str(tmp_path / "hf" / "ds"))

    expected = {i: r["text"] for i, r in enumerate(records)}
    for name, inp in [("zst", "zst"), ("gz", "gz"), ("plain", "plain"), ("pq", "part.parquet"), ("hf", "hf/ds")]:
        result = build(tmp_path, f"out-{name}", input=[str(tmp_path / inp)])
        assert result.counts["documents"] == 25, name
        assert texts_by_doc(tmp_path / f"out-{name}") == expected, name


def test_sets_filter_sample_fraction_and_limit(tmp_path):
    records = sample_records(120)
    write_jsonl(tmp_path / "in" / "a.jsonl.zst", records)
    inp = [str(tmp_path / "in")]
    github = sum(r["meta"]["redpajama_set_name"] == "RedPajamaGithub" for r in records)
    assert github > 0

    excluded = build(tmp_path, "no-github", input=inp, sets=["-RedPajamaGithub"])
    assert excluded.counts["exclusions_by_reason"] == {"excluded_by_set": github}
    out_sets = set(read_output(tmp_path / "no-github")["set_name"].to_pylist())
    assert "RedPajamaGithub" not in out_sets and out_sets
    assert excluded.counts["documents"] == 120  # every record accounted for

    only_books = build(tmp_path, "books", input=inp, sets=["RedPajamaBook"])
    assert set(read_output(tmp_path / "books")["set_name"].to_pylist()) == {"RedPajamaBook"}
    assert only_books.counts["excluded"] == 120 - sum(r["meta"]["redpajama_set_name"] == "RedPajamaBook" for r in records)

    half = build(tmp_path, "half", input=inp, sample_fraction=0.5)
    again = build(tmp_path, "half-again", input=inp, sample_fraction=0.5, workers=1, docs_per_task=7)
    kept = set(read_output(tmp_path / "half")["doc_id"].to_pylist())
    assert kept == set(read_output(tmp_path / "half-again")["doc_id"].to_pylist())  # deterministic by id
    assert 30 < len(kept) < 90 and half.counts["excluded"] == again.counts["excluded"]

    limited = build(tmp_path, "limit", input=inp, limit=10)
    assert limited.counts["documents"] == 10
    assert set(read_output(tmp_path / "limit")["record_index"].to_pylist()) <= set(range(10))


def test_manifest_records_provenance(tmp_path):
    build(tmp_path, "m", limit=5)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["schema_version"] == 1
    assert manifest["tokenizer"]["name"] == "builtin:gpt2" and len(manifest["tokenizer"]["fingerprint"]) == 16
    assert manifest["config"]["chunk"] == 256 and "output" not in manifest["config"]
    assert {"pyarrow", "tokenizers", "python"} <= set(manifest["versions"])
