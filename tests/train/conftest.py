"""Fixtures: a small build output (manifest.json + Arrow IPC file shards, the build's contract) made from the
bundled sample corpus with pyarrow (several shards, for the data-layer tests), and a tiny hybrid model dir."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard

SAMPLE = Path(__file__).parents[2] / "paraphrase_pipe" / "sample" / "example_train_0.jsonl.zst"


def sample_documents(limit: int) -> list[dict]:
    with open(SAMPLE, "rb") as f:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
        return [json.loads(line) for _, line in zip(range(limit), text)]


def write_build(out: Path, docs: list[dict], chunk_chars: int = 600, shard_rows: int = 64) -> Path:
    """Chunks of each document as `orig` samples, in the shard/manifest format of .ci/CONTRACTS.md."""
    rows = []
    for d, doc in enumerate(docs):
        doc_id = hashlib.sha256(doc["text"].encode()).hexdigest()[:16]
        for c in range(0, len(doc["text"]), chunk_chars):
            piece = doc["text"][c:c + chunk_chars]
            rows.append({"sample_id": f"{doc_id}-{c}-s", "chunk_id": f"{doc_id}-{c}", "doc_id": doc_id,
                         "text": piece, "original": piece, "paraphrase": None, "layout": "orig",
                         "n_tokens": len(piece) // 4, "set_name": doc["meta"]["redpajama_set_name"]})
    (out / "shards").mkdir(parents=True)
    shards = []
    for i in range(0, len(rows), shard_rows):
        table = pa.Table.from_pylist(rows[i:i + shard_rows]).cast(pa.schema([
            ("sample_id", pa.string()), ("chunk_id", pa.string()), ("doc_id", pa.string()), ("text", pa.string()),
            ("original", pa.string()), ("paraphrase", pa.string()), ("layout", pa.string()),
            ("n_tokens", pa.int32()), ("set_name", pa.string())]))
        path = out / "shards" / f"part-{i // shard_rows:05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=16)
        shards.append({"path": f"shards/{path.name}", "rows": len(table),
                       "tokens": sum(r["n_tokens"] for r in rows[i:i + shard_rows]),
                       "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest = {"schema_version": 1, "status": "complete", "shards": shards, "rejected": [],
                "counts": {"documents": len(docs), "chunks": len(rows), "accepted": len(rows), "rejected": 0},
                "config": {"tokenizer": "builtin:gpt2", "layout": "orig"}, "tokenizer": {"name": "builtin:gpt2"}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    return write_build(tmp_path_factory.mktemp("build"), sample_documents(60))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny sequential hybrid (Mamba-2 + attention) with the GPT-2 vocabulary, saved as a model directory."""
    import torch

    from paraphrase_pipe.models import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    build_model("sequential-tiny", vocab_size=50257).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def real_build(tmp_path_factory) -> Path:
    """A real `paraphrase-pipe build` output (engine none, GPT-2 BPE, 40 sample documents)."""
    out = tmp_path_factory.mktemp("real") / "build"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([Path(sys.executable).parent / "paraphrase-pipe", "build", "--chunk", "128", "--tokenizer",
                    "builtin:gpt2", "--limit", "40", "--output", str(out), "--no-progress"], check=True, env=env,
                   capture_output=True)
    return out
