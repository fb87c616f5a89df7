"""Thin drivers that place the pipeline's steps on processes or a cluster. No stage logic lives here.

Every executor has the signature `run(pipeline, tasks, on_shard)`: it calls `on_shard(meta)` in the driver
process for each committed shard, as soon as it is committed.
"""
from __future__ import annotations

import importlib

EXECUTORS = {
    "local": "paraphrase_pipe.executors.local:run",
    "ray": "paraphrase_pipe.executors.ray:run",
    "dask": "paraphrase_pipe.executors.dask:run",
}


class WorkerLostError(RuntimeError):
    """A worker process died (killed by the OS for memory, a lost node) more often than its executor re-runs a
    task: one line for the user. Every shard committed before it stands, so re-running the command resumes."""


RESUME_HINT = "the committed shards are kept: re-run the same command to resume"


def get_executor(name: str):
    module, fn = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), fn)
