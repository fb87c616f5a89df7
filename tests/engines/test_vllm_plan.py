"""`paraphrase-pipe plan` against the real server: its counts match what `build --dry-run` counts, its engine
figures are measured."""
from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO, build_cmd


def test_plan_projects_the_build_from_a_measured_sample(vllm_server, tiny_llm_dir, recipe, tmp_path):
    common = ["--chunk", "256", "--tokenizer", "builtin:gpt2", "--limit", "16"]
    plan = subprocess.run(
        [sys.executable, "-m", "paraphrase_pipe.cli", "plan", *common, "--model", str(tiny_llm_dir), "--endpoint", vllm_server.url,
         "-E", "max_tokens=24", "--max-model-len", "560", "--sample-docs", "8", "--sample-chunks", "12",
         "-E", "gpus_per_endpoint=2", "--gpu-hour-cost", "3", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert plan.returncode == 0, plan.stderr
    result = json.loads(plan.stdout)
    dry = build_cmd(tmp_path / "dry", tiny_llm_dir, recipe, "--dry-run", "--endpoint", vllm_server.url)  # counts only
    chunks = int(next(line.split("│")[2].replace(",", "") for line in dry.stdout.splitlines() if "│ chunks" in line))
    assert result["documents"] == 16 and not result["documents_estimated"]
    assert abs(result["chunks"] - chunks) <= 0.35 * chunks  # 8 of 16 documents sampled: a projection, not a count
    assert result["sample_chunks"] == 12 and result["output_tok_s"] > 0
    assert 0 < result["output_tokens_per_chunk"] <= 24 and result["prompt_tokens_per_chunk"] > 100
    assert result["gpus"] == 2 and result["gpu_hours"] == result["wall_hours"] * 2
    assert abs(result["cost"] - 3 * result["gpu_hours"]) < 1e-9
    assert result["engine_hours"] > 0
