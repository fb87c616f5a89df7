"""(a) vLLM in-process through a full `paraphrase-pipe build`, on the local executor and on Ray (CPU actor); and a
real-engine build with every default gate on."""
from __future__ import annotations

import json
import re

from .conftest import MAX_MODEL_LEN, MAX_TOKENS, VLLM_CPU, build_cmd, comparable, engine_window, rows


def test_inprocess_build_writes_paraphrases_with_provenance(inprocess_build, tiny_llm_dir):
    manifest = json.loads((inprocess_build / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["engine"] == "vllm"
    accepted, rejected = rows(inprocess_build, "shards"), rows(inprocess_build, "rejected")
    assert len(accepted) + len(rejected) == manifest["counts"]["chunks"] == 63
    assert accepted, "some answers must stop on their own"
    for row in accepted:
        prov = json.loads(row["provenance"])
        assert row["paraphrase"] and row["finish_reason"] == "stop"
        assert prov["engine"] == "vllm" and prov["model"] == str(tiny_llm_dir) and prov["template"] == "faithful-paraphrase"
        assert len(prov["template_hash"]) == 32 and prov["sampling"]["max_tokens"] == MAX_TOKENS
        assert isinstance(prov["seed"], int) and "latency_s" not in prov  # timings are run statistics, not shard bytes
        assert prov["prompt_tokens"] == row["prompt_tokens"] and 0 < row["completion_tokens"] <= MAX_TOKENS
        assert row["prompt_tokens"] + MAX_TOKENS <= MAX_MODEL_LEN
    reasons = {r["reject_reason"] for r in rejected}
    assert {"truncated", "context_overflow"} <= reasons <= {"truncated", "context_overflow", "empty"}
    for row in rejected:
        if row["reject_reason"] == "context_overflow":  # rejected up front: never sent
            assert row["prompt_tokens"] + MAX_TOKENS > MAX_MODEL_LEN and row["completion_tokens"] is None
            assert f"> max_model_len {MAX_MODEL_LEN}" in row["reject_detail"]
        elif row["reject_reason"] == "truncated":
            assert row["finish_reason"] == "length" and row["completion_tokens"] == MAX_TOKENS
    assert manifest["counts"]["rejects_by_reason"]["context_overflow"] == sum(r["reject_reason"] == "context_overflow" for r in rejected)
    run = manifest["runs"][-1]
    assert run["generated_tokens"] == sum(r["completion_tokens"] or 0 for r in accepted + rejected) > 0
    assert 0 < run["engine_latency_s"] < 10 * run["elapsed_s"]  # the engine's latency, summed over requests
    assert run["gpus"] == 0 and run["gpu_hours"] == 0  # vLLM's CPU build holds no GPU
    assert not (inprocess_build / "cache").exists(), "the request cache is dropped once every shard is committed"



def test_progress_lines_show_the_engines_requests_in_flight(inprocess_build):
    """The job log of the reference build: progress lines every 0.5 s, with vLLM's requests in flight."""
    lines = [line for line in (inprocess_build.parent / "build.log").read_text().splitlines() if line.startswith("progress ")]
    in_flight = [int(m.group(1).replace(",", "")) for line in lines if (m := re.search(r"([\d,]+) requests in flight", line))]
    assert in_flight and max(in_flight) > 0, lines
    assert re.search(r"63 chunks|\d+/16 documents", lines[-1]), lines[-1]

def test_ray_actor_pool_reproduces_the_local_rows(inprocess_build, tiny_llm_dir, recipe, tmp_path):
    out = tmp_path / "ray"
    build_cmd(out, tiny_llm_dir, recipe, "--engine", "vllm", *VLLM_CPU, "--executor", "ray", "--workers", "2",
              env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert comparable(out) == comparable(inprocess_build)
    assert json.loads((out / "manifest.json").read_text())["runs"][-1]["executor"] == "ray"
    window = engine_window(out, "actor")  # the engine actor's own figures, reported before the actor went away
    assert len(window["engines"]) == 1 and window["engines"][0]["engine"] == "vllm", window
    assert window["engine_counter"]["mean_in_flight"] > 0  # vLLM's own counter, read inside the actor


def test_feeder_keeps_the_engine_full_and_bounded_whatever_the_task_size(inprocess_build, tiny_llm_dir, recipe, tmp_path):
    """Tasks of 8 documents (~32 chunks) and a batch of 2: the feeder keeps 2 x max_num_seqs handed in — never a
    whole task more — cutting calls inside tasks and putting the answers back together per task; vLLM's own
    unfinished-request counter shows a full batch, and the rows are those of the reference build (one call). vLLM's
    figures are sampled every 0.2 s, so that a window of a few seconds (3.1 s on a CI machine) holds enough samples
    for its steady rate to exist."""
    out = tmp_path / "fed"
    big_tasks = tmp_path / "big-tasks.yaml"
    big_tasks.write_text(recipe.read_text() + "docs_per_task: 8\n")
    build_cmd(out, tiny_llm_dir, big_tasks, "--engine", "vllm", *VLLM_CPU, "-E", "max_num_seqs=2",
              "-E", "metrics_every_s=0.2", "--workers", "2", env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert comparable(out) == comparable(inprocess_build)
    window = json.loads((out / "manifest.json").read_text())["runs"][-1]["engine_window"]
    assert window["target_in_flight"] == 4 and window["full_at"] == 2
    assert window["requests"] == sum(1 for r in rows(out) if r["completion_tokens"] is not None)
    assert window["mean_in_flight"] <= 4, window  # bounded by the target, not by a task's 32 chunks
    # a full batch for most of the window (only the last requests drain below it)
    assert window["engine_counter"]["full_fraction"] >= 0.6, window
    assert window["engine_counter"]["mean_in_flight"] >= 2, window
    assert window["start_s"] > 0
    # vLLM's own Prometheus figures: the batch it ran, and a rate over the seconds in which requests waited once
    # the engine had first run its full batch
    counter = window["engine_counter"]
    assert counter["max_running"] == 2 and 0 < counter["kv_cache_peak"] <= 1, counter
    assert 0 < counter["saturated_s"] <= window["window_s"] and counter["saturated_tok_s"] > 0, counter


def test_real_engine_build_with_the_default_gates_writes_a_card(vllm_server, tiny_llm_dir, tmp_path):
    """End to end with the real engine and every default gate on: real (random-model) generations reach the
    filter, each row ends accepted or dead-lettered with a reason and its scores, and the card is written.
    The engine is the shared real vLLM server (no engine start of its own); the in-process engine with the
    default gates is test_vllm_plan.py's build."""
    import pytest
    import yaml

    from paraphrase_pipe.filters import FilterOptions

    recipe = tmp_path / "default-gates.yaml"
    recipe.write_text("layout: orig+para\n")
    out = tmp_path / "out"
    build_cmd(out, tiny_llm_dir, recipe, "--endpoint", vllm_server.url, "--concurrency", "8", "--limit", "6")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    gates = FilterOptions().gates()
    assert {g.name for g in gates} >= {"length", "lexical", "recall", "language", "fact_changes", "facts", "semantic"}
    accepted, rejected = rows(out, "shards"), rows(out, "rejected")
    filtered = [r for r in rejected if r["reject_stage"] == "filter"]
    assert filtered, "random-model paraphrases that stop on their own reach the gates"
    reasons = {reason for g in gates for reason in (g.low_reason, g.high_reason) if reason}
    for row in filtered:
        assert row["reject_reason"] in reasons and row["reject_detail"] and row["score_length_ratio"] is not None
    for row in accepted:
        assert all(row[g.column] is None or row[g.column] == row[g.column] for g in gates)
    card = (out / "README.md").read_text()
    for reason, n in manifest["counts"]["rejects_by_reason"].items():
        assert f"- `{reason}`: {n}" in card
    assert f"| facts | yes | {FilterOptions().facts.min} |" in card
    meta = yaml.safe_load(card.split("---")[1])
    configs = {c["config_name"]: [f["split"] for f in c["data_files"]] for c in meta["configs"]}
    # with no accepted rows the default config holds only the rejected split (never dead letters as "train")
    assert configs == {"default": ["train"] if accepted else ["rejected"], "rejected": ["train"]}
    datasets = pytest.importorskip("datasets")
    got = datasets.load_dataset(str(out), "rejected", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert got.num_rows == len(rejected)
