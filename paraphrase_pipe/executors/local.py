"""`local`: a process pool on one machine (the embedded default).

Worker-placed engines (none, HTTP clients) run the whole task inside each worker. A driver-placed engine (vLLM
in-process on the local GPU) stays in this process: workers read/chunk and filter/write around it.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait

from paraphrase_pipe.pipeline import Pipeline
from paraphrase_pipe.sources import Task

_state: dict = {}
ENGINE_BATCHES_IN_FLIGHT = 2


def _init(pipeline: Pipeline) -> None:
    _state["pipeline"] = pipeline
    _state["engine"] = pipeline.make_engine() if pipeline.engine_placement == "worker" else None


def _whole(task: Task) -> list[dict]:
    return _state["pipeline"].run_task(task, _state["engine"])


def _front(task: Task):
    return _state["pipeline"].front(task)


def _back(rows, generation: dict) -> list[dict]:
    return _state["pipeline"].back(rows, generation)


def run(pipeline: Pipeline, tasks: list[Task], on_shard: Callable[[dict], None]) -> None:
    workers = pipeline.config.workers or os.cpu_count() or 1
    if workers == 1 and pipeline.engine_placement == "worker":
        _init(pipeline)
        try:
            for task in tasks:
                for meta in _whole(task):
                    on_shard(meta)
        finally:
            _state["engine"].close()
        return
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init, initargs=(pipeline,)) as pool:
        if pipeline.engine_placement == "worker":
            _drain({pool.submit(_whole, t) for t in tasks}, on_shard)
        else:
            _around_driver_engine(pool, pipeline, tasks, on_shard)


def _drain(pending: set[Future], on_shard) -> None:
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            for meta in future.result():
                on_shard(meta)


def _around_driver_engine(pool, pipeline: Pipeline, tasks: list[Task], on_shard) -> None:
    engine = pipeline.make_engine()
    generation = engine.identity()
    try:
        fronts = {pool.submit(_front, t) for t in tasks}
        middles: set[Future] = set()
        backs: set[Future] = set()
        # two batches in the engine at once: the next one fills it while the previous one drains (engines are thread-safe)
        with ThreadPoolExecutor(ENGINE_BATCHES_IN_FLIGHT) as feeder:
            while fronts or middles or backs:
                done, _ = wait(fronts | middles | backs, return_when=FIRST_COMPLETED)
                for future in done:
                    if future in fronts:
                        fronts.discard(future)
                        middles.add(feeder.submit(pipeline.middle, future.result(), engine))
                    elif future in middles:
                        middles.discard(future)
                        backs.add(pool.submit(_back, future.result(), generation))
                    else:
                        backs.discard(future)
                        for meta in future.result():
                            on_shard(meta)
    finally:
        engine.close()
