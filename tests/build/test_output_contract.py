"""The output is readable with no project code, and the manifest describes it exactly."""
from __future__ import annotations

import hashlib
import json

import datasets
import pyarrow as pa

from .conftest import run_cli


def test_shards_read_with_pyarrow_and_datasets(tmp_path):
    out = tmp_path / "out"
    run_cli("build", "--chunk", "256", "--tokenizer", "builtin:gpt2", "--limit", "40", "--shard-rows", "50", "-o", str(out), "--no-progress")
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 2  # shard size is honoured
    total = 0
    for shard in manifest["shards"]:
        path = out / shard["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        reader = pa.ipc.open_file(path)  # Arrow IPC *file* format: random access
        table = reader.read_all()
        assert table.num_rows == shard["rows"] <= 50
        assert sum(table["n_tokens"].to_pylist()) == shard["tokens"]
        assert reader.get_batch(reader.num_record_batches - 1).num_rows > 0
        total += table.num_rows
    assert total == manifest["counts"]["accepted"]

    files = [str(out / s["path"]) for s in manifest["shards"]]
    ds = datasets.load_dataset("arrow", data_files=files, split="train")
    assert len(ds) == total
    row = ds[0]
    assert row["text"] and row["sample_id"] and row["n_tokens"] > 0
    assert set(ds["sample_id"]) == set(ds["sample_id"]) and len(set(ds["sample_id"])) == total
