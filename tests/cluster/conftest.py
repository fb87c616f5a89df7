"""Fixtures for the distributed executors: one small real Ray runtime shared by the module, and row-set helpers."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from paraphrase_pipe.build import run_build
from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.schema import OUTPUT_COLUMNS

from ..build.conftest import read_output

# The brief's reference build: the bundled sample, real GPT-2 BPE, 256-token chunks, first 60 records.
SAMPLE_BUILD = dict(tokenizer="builtin:gpt2", chunk=256, limit=60, progress=False)


def build(out: Path, **options) -> dict:
    return run_build(BuildConfig(output=str(out), **{**SAMPLE_BUILD, **options})).counts


def row_set(out: Path) -> frozenset[tuple]:
    """Every accepted row by id and full content; fails on a duplicated sample_id or an unlisted shard file."""
    table = read_output(out).select(list(OUTPUT_COLUMNS))
    ids = Counter(table["sample_id"].to_pylist())
    assert ids and max(ids.values()) == 1, "duplicated rows"
    listed = {s["path"] for s in json.loads((out / "manifest.json").read_text())["shards"]}
    on_disk = {f"shards/{p.name}" for p in (out / "shards").iterdir()}
    assert on_disk == listed, f"not listed: {sorted(on_disk - listed)}; missing: {sorted(listed - on_disk)}"
    return frozenset(tuple(row.items()) for row in table.to_pylist())


@pytest.fixture(scope="package")
def ray_runtime():
    """A real local Ray (2 CPUs) for every test here; the executors join it instead of starting their own."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # an executor elsewhere in the session left its own local Ray running
        ray.shutdown()
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="package")
def local_reference(tmp_path_factory) -> frozenset[tuple]:
    out = tmp_path_factory.mktemp("local")
    build(out, executor="local", workers=1)
    return row_set(out)

