"""The same build on every executor and worker count yields the same rows (by id and content)."""
from __future__ import annotations

from paraphrase_pipe.build import run_build
from paraphrase_pipe.config import BuildConfig

from .conftest import read_output

COLUMNS = ["sample_id", "chunk_id", "doc_id", "text", "n_tokens", "token_start", "token_end"]


def rows(out) -> set[tuple]:
    table = read_output(out).select(COLUMNS)
    return set(zip(*(table[c].to_pylist() for c in COLUMNS)))


def test_local_and_ray_executors_agree(tmp_path, corpus):
    base = dict(input=[str(corpus)], tokenizer="builtin:gpt2", chunk=200, progress=False, docs_per_task=8)
    results = {}
    for name, extra in {
        "local1": dict(executor="local", workers=1),
        "local2": dict(executor="local", workers=2, docs_per_task=5),
        "ray": dict(executor="ray", workers=2),
    }.items():
        out = tmp_path / name
        result = run_build(BuildConfig(output=str(out), **{**base, **extra}))
        results[name] = (rows(out), result.counts)
    reference, counts = results["local1"]
    assert len(reference) == counts["accepted"] > 60
    for name, (got, got_counts) in results.items():
        assert got == reference, name
        assert got_counts == counts, name
