"""Fault tolerance of the Ray build: Ray worker processes killed mid-run are replaced, their work re-run, and the
build still commits exactly the rows of an undisturbed build (nothing lost, nothing duplicated)."""
from __future__ import annotations

import os
import signal

import psutil

import paraphrase_pipe.build as build_module

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


def test_killed_ray_workers_mid_run_lose_and_duplicate_nothing(tmp_path, local_reference, ray_runtime, monkeypatch):
    seen = {"before": 0, "after": 0, "killed": []}
    real_get_executor = build_module.get_executor

    def killing_executor(name):
        run = real_get_executor(name)

        def run_and_kill(pipeline, tasks, on_shard):
            def on_shard_then_kill(meta):
                on_shard(meta)
                if seen["killed"]:
                    seen["after"] += 1
                    return
                seen["before"] += 1
                for proc in _our_ray_workers():  # SIGKILL: no clean-up, like a lost machine
                    os.kill(proc.pid, signal.SIGKILL)
                    seen["killed"].append(proc.name())

            run(pipeline, tasks, on_shard_then_kill)

        return run_and_kill

    monkeypatch.setattr(build_module, "get_executor", killing_executor)
    counts = build(tmp_path / "ray", executor="ray", workers=2, docs_per_task=4)  # 15 tasks: work left after the kill
    assert seen["killed"], "no Ray worker process was running when the first shard committed"
    assert seen["after"] > 0, "the build had nothing left to do after the kill; make it longer"
    assert row_set(tmp_path / "ray") == local_reference
    assert counts["accepted"] == len(local_reference)
