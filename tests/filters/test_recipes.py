"""Recipes in pipelines/: each resolves to a valid build configuration, the sweeps expand to the paper's
comparisons, and `paraphrase-pipe sweep` runs real builds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from paraphrase_pipe.config import ConfigError, resolve_config
from paraphrase_pipe.sweep import expand

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def test_paper_default_recipe():
    config = resolve_config(PIPELINES / "slimpajama-paraphrase.yaml")
    assert (config.chunk, config.layout, config.engine) == (2048, "orig+para", "vllm")
    assert config.filter_options.perplexity.enabled and config.filter_options.semantic.min == 0.8


@pytest.mark.parametrize(
    "recipe, field, values",
    [
        ("chunk-sweep.yaml", "chunk", [512, 1024, 2048, 4096]),
        ("compare-datasets.yaml", "layout", ["orig", "repeat", "para", "orig+para"]),
        ("dataset-size-sweep.yaml", "sample_fraction", [0.125, 0.25, 0.5, 1.0]),
    ],
)
def test_sweeps_expand_to_valid_builds(recipe, field, values):
    points = expand(PIPELINES / recipe)
    configs = [resolve_config(None, **v) for _, v in points]
    assert [getattr(c, field) for c in configs] == values
    assert len({c.output for c in configs}) == len(configs)
    assert len({c.config_hash() for c in configs}) == len(configs)


def test_bad_sweep_recipes_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a sweep recipe"):
        expand(PIPELINES / "slimpajama-paraphrase.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: out/{chunk}\nsweep:\n  layout: [orig]\n")
    with pytest.raises(ConfigError, match="output template names 'chunk'"):
        expand(bad)


def test_sweep_command_builds_comparison_datasets_from_the_same_chunks(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "paraphrase_pipe.cli", "sweep", str(PIPELINES / "compare-datasets.yaml"), "--only", "original-only",
           "--only", "repeat", "--tokenizer", "builtin:gpt2", "--limit", "5", "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=tmp_path)
    shards = {}
    for name in ("original-only", "repeat"):
        out = tmp_path / "out" / "compare" / name
        manifest = json.loads((out / "manifest.json").read_text())
        shards[name] = pa.concat_tables([pa.ipc.open_file(out / s["path"]).read_all() for s in manifest["shards"]]).to_pylist()
        assert (out / "README.md").is_file()
    assert [r["chunk_id"] for r in shards["original-only"]] == [r["chunk_id"] for r in shards["repeat"]]
    for orig, rep in zip(shards["original-only"], shards["repeat"]):
        assert orig["text"] == orig["original"] and rep["text"] == rep["original"] + "\n\n" + rep["original"]
    bad = subprocess.run([*cmd[:5], "--only", "nope"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "no sweep point named nope" in bad.stderr
