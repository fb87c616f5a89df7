"""Fixtures for the build pipeline: small corpora in SlimPajama's exact format, and a CLI runner."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard

from paraphrase_pipe.sources.files import SAMPLE_DIR

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "paraphrase_pipe.cli"]


def sample_records(n: int | None = None) -> list[dict]:
    raw = (SAMPLE_DIR / "example_train_0.jsonl.zst").read_bytes()
    lines = zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 30).decode().splitlines()
    return [json.loads(line) for line in lines[:n]]


def write_jsonl(path: Path, records: list[dict] | list[bytes]) -> Path:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    payload = b"\n".join(lines) + b"\n"
    if path.name.endswith(".zst"):
        payload = zstandard.ZstdCompressor().compress(payload)
    elif path.name.endswith(".gz"):
        payload = gzip.compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def read_output(out: Path, kind: str = "shards") -> pa.Table:
    manifest = json.loads((out / "manifest.json").read_text())
    tables = [pa.ipc.open_file(pa.memory_map(str(out / s["path"]))).read_all() for s in manifest[kind]]
    return pa.concat_tables(tables) if tables else pa.table({})


def run_cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    kwargs.setdefault("cwd", REPO)
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """60 real documents split over two SlimPajama-style .jsonl.zst files in chunk directories."""
    records = sample_records(60)
    write_jsonl(tmp_path / "corpus" / "chunk1" / "example_train_0.jsonl.zst", records[:30])
    write_jsonl(tmp_path / "corpus" / "chunk2" / "example_train_0.jsonl.zst", records[30:])
    return tmp_path / "corpus"
