"""`local`: a process pool on one machine (the embedded default).

`none` runs whole tasks inside each worker. Any LLM engine (vLLM in-process on the local GPU, or one HTTP client
for the servers) runs once, in this process, and is fed continuously: CPU workers read/chunk ahead of it and
filter/write behind it, and the feeder keeps `engine.target_in_flight()` chunks handed in — refilled as answers
arrive, in calls cut at any row, whatever the task size — so the engine never waits for a task to finish or start
and never holds much more than its target. Answers are put back together into whole tasks, in the task's own row
order, before filter/write, so the shards do not depend on how the engine was fed (a resumed build writes the
same bytes).
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.executors import RESUME_HINT, WorkerLostError
from paraphrase_pipe.pipeline import Pipeline
from paraphrase_pipe.schema import RANGE_COLUMN, RANGE_ROWS_COLUMN
from paraphrase_pipe.sources import Task

_state: dict = {}
POLL_S = 0.05  # the feeder looks at the engine's in-flight count this often while it waits
READ_AHEAD = 2  # chunks kept read and waiting, in units of the engine's in-flight target


def _init(pipeline: Pipeline) -> None:
    _state["pipeline"] = pipeline
    _state["engine"] = pipeline.make_engine() if pipeline.engine_site("local") == "workers" else None


def _whole(task: Task) -> list[dict]:
    return _state["pipeline"].run_task(task, _state["engine"])


def _front(task: Task):
    return _state["pipeline"].front(task)


def _back(rows, generation: dict) -> list[dict]:
    return _state["pipeline"].back(rows, generation)


def run(pipeline: Pipeline, tasks: list[Task], on_shard: Callable[[dict], None]) -> dict | None:
    """Returns the engine's generation-window statistics (driver-fed engines), for the manifest."""
    workers = pipeline.config.workers or os.cpu_count() or 1
    in_workers = pipeline.engine_site("local") == "workers"
    if workers == 1 and in_workers:
        _init(pipeline)
        try:
            for task in tasks:
                for meta in _whole(task):
                    on_shard(meta)
        finally:
            _state["engine"].close()
        return None
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init, initargs=(pipeline,)) as pool:
            if in_workers:
                _drain({pool.submit(_whole, t) for t in tasks}, on_shard)
                return None
            return _feed_driver_engine(pool, workers, pipeline, tasks, on_shard)
    except BrokenProcessPool:  # a pool cannot replace a dead worker
        raise WorkerLostError(f"a worker process died while running a task (killed by the OS: out of memory?); {RESUME_HINT}") from None


def _drain(pending: set[Future], on_shard) -> None:
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            for meta in future.result():
                on_shard(meta)


def _feed_driver_engine(pool, workers: int, pipeline: Pipeline, tasks: list[Task], on_shard) -> dict:
    engine = pipeline.make_engine()
    generation = engine.identity()
    todo = deque(tasks)
    ready: deque[pa.Table] = deque()  # chunk rows read and chunked, waiting for room in the engine
    fronts: set[Future] = set()
    middles: dict[Future, dict[str, int]] = {}  # engine call -> where each of its task pieces sits in its task
    backs: set[Future] = set()
    tasks_back = _Reassembly()
    read_rows, read_tasks = 0, 0  # how many rows a task yields, on average so far
    try:
        while todo or fronts or ready or middles or backs:
            target = engine.target_in_flight()
            rows_per_task = read_rows / read_tasks if read_tasks else target / workers
            waiting = sum(t.num_rows for t in ready) + rows_per_task * len(fronts)
            # read ahead just enough that the engine can always be refilled (bounded memory at any corpus size)
            while todo and len(fronts) < workers and waiting < READ_AHEAD * target:
                fronts.add(pool.submit(_front, todo.popleft()))
                waiting += rows_per_task
            room = target - engine.in_flight()
            # refill in calls of at least a quarter of the target, or the last rows once they all fit: few, large calls
            if ready and (room >= max(target // 4, 1) or (not (todo or fronts) and room >= sum(t.num_rows for t in ready))):
                batch = _take(ready, room)
                middles[pipeline.submit_middle(batch, engine)] = tasks_back.send(batch)
                continue
            done, _ = wait(fronts | middles.keys() | backs, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                if future in fronts:
                    fronts.discard(future)
                    rows = future.result()
                    read_rows, read_tasks = read_rows + rows.num_rows, read_tasks + 1
                    if rows.num_rows:
                        ready.append(rows)
                elif future in middles:
                    places = middles.pop(future)
                    for task_rows in tasks_back.add(pipeline.per_task(future.result()), places):
                        backs.add(pool.submit(_back, task_rows, generation))
                else:
                    backs.discard(future)
                    for meta in future.result():
                        on_shard(meta)
        return engine.stats()
    finally:
        engine.close()


def _take(ready: deque[pa.Table], rows: int) -> pa.Table:
    """The first `rows` rows waiting (or all of them), cut at any row: the rest of a task stays at the front."""
    taken, count = [], 0
    while ready and count < rows:
        table = ready.popleft()
        if count + table.num_rows > rows:
            table, rest = table.slice(0, rows - count), table.slice(rows - count)
            ready.appendleft(rest)
        taken.append(table)
        count += table.num_rows
    return pa.concat_tables(taken) if len(taken) > 1 else taken[0]


class _Reassembly:
    """Answered pieces of tasks -> whole tasks. A task's pieces are sent in order but their calls may finish out of
    order, so each piece keeps its place: how many of the task's rows were sent before it."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}  # task range -> its rows sent so far
        self.answered: dict[str, int] = {}  # task range -> its rows answered so far
        self.pieces: dict[str, list[tuple[int, pa.Table]]] = {}

    def send(self, batch: pa.Table) -> dict[str, int]:
        """The place of each task piece in a call (a call holds one contiguous piece per task)."""
        places = {}
        for key, rows in zip(*pc.value_counts(batch[RANGE_COLUMN]).flatten()):
            key, rows = key.as_py(), rows.as_py()
            places[key] = self.sent.get(key, 0)
            self.sent[key] = places[key] + rows
        return places

    def add(self, answered: list[pa.Table], places: dict[str, int]) -> list[pa.Table]:
        """The answered pieces of one call (one table per task, `Pipeline.per_task`); returns the tasks now whole."""
        whole = []
        for piece in answered:
            key, total = piece[RANGE_COLUMN][0].as_py(), piece[RANGE_ROWS_COLUMN][0].as_py()
            self.pieces.setdefault(key, []).append((places[key], piece))
            self.answered[key] = self.answered.get(key, 0) + piece.num_rows
            if self.answered[key] == total:
                parts = sorted(self.pieces.pop(key), key=lambda part: part[0])
                del self.sent[key], self.answered[key]
                whole.append(pa.concat_tables([p for _, p in parts], promote_options="default") if len(parts) > 1 else parts[0][1])
        return whole
