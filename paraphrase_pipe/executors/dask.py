"""`dask`: dask.distributed futures over the tasks, for Slurm/HPC sites that run Dask.

Each task runs whole on a worker (read -> chunk -> paraphrase -> filter -> compose -> commit); the LLM calls go
to vLLM servers through a worker-placed engine (`openai`), one engine per worker process. Futures (rather than
one bag computed at the end) let the driver record every shard in the manifest as soon as it is committed, so a
preempted job resumes from its last shard. A lost worker's tasks are re-run by the scheduler; content-named
shards and the manifest's id check keep that exactly-once. At the end every worker is asked for its engine's
`stats()`; their combination is the manifest's `engine_window`.

`--dask-scheduler ADDRESS` joins a running cluster (e.g. one started by dask-jobqueue); otherwise a LocalCluster
of `--workers` single-threaded worker processes (default: one per core) is started on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from itertools import islice

from paraphrase_pipe.config import BuildConfig, ConfigError
from paraphrase_pipe.engines import Engine
from paraphrase_pipe.engines.llm import combined_stats
from paraphrase_pipe.executors import RESUME_HINT, WorkerLostError
from paraphrase_pipe.pipeline import Pipeline
from paraphrase_pipe.sources import Task

CONNECT_TIMEOUT_S = 30
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _key(pipeline: Pipeline) -> str:
    return json.dumps([pipeline.config.engine, pipeline.config.engine_options], sort_keys=True, default=str)


def _engine(pipeline: Pipeline) -> Engine:
    """This worker process's engine for the pipeline's engine config (created on first use, then reused)."""
    key = _key(pipeline)
    with _lock:
        if key not in _engines:
            _engines[key] = pipeline.make_engine()
        return _engines[key]


def _run_task(pipeline: Pipeline, task: Task) -> list[dict]:
    return pipeline.run_task(task, _engine(pipeline))


def _engine_stats(pipeline: Pipeline) -> dict | None:
    """The `stats()` of this worker process's engine for the pipeline (an LLM engine that ran a task), with where."""
    with _lock:
        engine = _engines.get(_key(pipeline))
    return {"host": socket.gethostname(), "pid": os.getpid(), **engine.stats()} if hasattr(engine, "stats") else None


def _close_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.close()
        _engines.clear()


@contextmanager
def _client(config: BuildConfig):
    from dask.distributed import Client, LocalCluster

    if config.dask_scheduler:
        try:
            client = Client(config.dask_scheduler, timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {config.dask_scheduler}: {exc}") from None
        with client:
            yield client
        return
    cluster = LocalCluster(
        n_workers=config.workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    with cluster, Client(cluster) as client:
        yield client


def run(pipeline: Pipeline, tasks: list[Task], on_shard: Callable[[dict], None]) -> dict | None:
    """Returns the workers' engines' combined generation window (`combined_stats`), for the manifest: asked of every
    worker once the last task is in, before the engines close (a replaced worker's engine reports what it did)."""
    from dask.distributed import KilledWorker, as_completed

    pipeline.engine_site("dask")  # refuses engines this executor cannot place
    with _client(pipeline.config) as client:
        workers = min(len(client.scheduler_info()["workers"]) or 1, pipeline.config.workers or len(tasks) or 1)
        # the pipeline (its config, ~2 KB) travels inside each task: scattered data dies with the workers holding it,
        # and a build whose every worker was lost (preempted nodes, replaced later) must go on, not cancel its tasks
        shared = pipeline.sharing_clients(workers)

        def submit(batch: Iterable[Task]) -> list:
            return [client.submit(_run_task, shared, task, pure=False) for task in batch]

        todo = iter(tasks)
        in_flight = as_completed(submit(islice(todo, pipeline.config.workers or len(tasks))))  # `--workers` caps it
        try:
            for future in in_flight:
                try:
                    metas = future.result()
                except KilledWorker:
                    raise WorkerLostError(
                        "Dask workers died running the same task more often than the scheduler retries it "
                        "(distributed.scheduler.allowed-failures; out of memory? lost nodes?); " + RESUME_HINT) from None
                for meta in metas:
                    on_shard(meta)
                in_flight.update(submit(islice(todo, 1)))
            by_worker = client.run(_engine_stats, shared, on_error="ignore")  # a worker lost just now: its figures with it
            return combined_stats([{"worker": address, **stats} for address, stats in sorted(by_worker.items()) if stats])
        finally:
            client.run(_close_engines, on_error="ignore")  # a worker that died (or is restarting) has none left open
