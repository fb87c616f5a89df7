"""The build as three steps over Arrow tables, so any executor can place them:

  front(task)  read -> chunk -> tag rows with their input range     (CPU, runs where the data is)
  middle(rows) paraphrase with the engine                         (where `engine_site` says)
  back(rows)   filter -> compose -> commit shards, return metadata (CPU)
"""
from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.config import BuildConfig, ConfigError
from paraphrase_pipe.engines import Engine, create_engine, engine_class
from paraphrase_pipe.output.ranges import range_id
from paraphrase_pipe.output.running import BatchWork
from paraphrase_pipe.output.shards import write_rows
from paraphrase_pipe.schema import RANGE_COLUMN, RANGE_ROWS_COLUMN
from paraphrase_pipe.sources import Task, read_task
from paraphrase_pipe.stages.chunk import chunk_documents
from paraphrase_pipe.stages.compose import compose_rows
from paraphrase_pipe.stages.filter import filter_rows
from paraphrase_pipe.stages.paraphrase import paraphrase_rows, submit_paraphrase
from paraphrase_pipe.tokenizer import load_tokenizer


@dataclass
class Pipeline:
    config: BuildConfig
    dry_run: bool = False
    _engines: list[Engine] = field(default_factory=list, init=False, repr=False, compare=False)

    def engine_site(self, executor: str) -> Literal["workers", "driver", "actors"]:
        """Where the engine runs — decided here for every executor:
        - `workers`: one engine inside every CPU worker, which runs whole tasks (`none`; HTTP clients on Ray/Dask);
        - `driver` (local): one engine in the build process for the whole machine, fed request by request so it stays
          full (an in-process GPU engine, or one HTTP client with one in-flight budget for the servers);
        - `actors` (Ray): a pool of engine actors for driver-placed (GPU) engines."""
        cls = engine_class(self.config.engine)
        if executor == "local":
            return "driver" if hasattr(cls, "submit") else "workers"
        if cls.placement == "worker":
            return "workers"
        if executor == "dask":
            raise ConfigError(
                f"engine {self.config.engine!r} runs the model in-process, which the dask executor does not place; "
                "serve the model with vLLM and use the 'openai' engine, or use --executor local/ray")
        return "actors"

    def sharing_clients(self, workers: int) -> Pipeline:
        """For `workers` processes that each hold an HTTP client (Ray/Dask): they split the build's one in-flight
        budget (`concurrency`) between them instead of each taking all of it."""
        probe = create_engine(self.config.engine, self.config.engine_options)  # cheap: nothing is opened
        total = getattr(probe, "concurrency", None)
        if total is None or workers <= 1:
            return self
        options = {**self.config.engine_options, "concurrency": max(1, math.ceil(total() / workers))}
        return replace(self, config=self.config.model_copy(update={"engine_options": options}))

    def make_engine(self) -> Engine:
        workdir = None if self.dry_run else self.config.output  # engines keep their request cache there
        engine = create_engine(self.config.engine, self.config.engine_options, workdir=workdir)
        self._engines.append(engine)
        return engine

    def requests_in_flight(self) -> int | None:
        """Requests sent and not yet answered by the engines of this process, for the progress line: the sum of
        their optional `in_flight()`; None when none of them says (or they live in other processes)."""
        counts = [e.in_flight() for e in self._engines if hasattr(e, "in_flight")]
        return sum(counts) if counts else None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_engines": []}  # engines stay in the process that made them

    def front(self, task: Task) -> pa.Table:
        """The task's rows, tagged with their input range and how many rows it yields, so the driver knows when the
        range is complete (the tags never reach a shard). A resumed range yields all its rows again: they split
        into the same shards, and the driver takes the ones already recorded as no-ops, so a resumed build's shards
        are byte for byte those of an uninterrupted one."""
        rows = chunk_documents(read_task(task, self.config), self.config)
        n = len(rows)
        return rows.append_column(RANGE_COLUMN, pa.array([range_id(*task.range)] * n, pa.string())).append_column(
            RANGE_ROWS_COLUMN, pa.array([n] * n, pa.int64()))

    def middle(self, rows: pa.Table, engine: Engine) -> pa.Table:
        return paraphrase_rows(rows, engine, self._reporter())

    def submit_middle(self, rows: pa.Table, engine: Engine) -> Future:
        """middle() without waiting (engines with `submit`): the rows are in engine.in_flight() on return."""
        return submit_paraphrase(rows, engine, self._reporter())

    def _reporter(self):
        """The paraphrase stage's progress reporter (`output/running.BatchWork` on the output dir), or None."""
        return None if self.progress_dir is None else partial(BatchWork, self.progress_dir)

    @property
    def progress_dir(self) -> Path | None:
        """Where the paraphrase stage reports work inside running tasks (the build's output dir; a dry run has none
        and sends nothing to an engine)."""
        return None if self.dry_run else Path(self.config.output)

    @staticmethod
    def per_task(rows: pa.Table) -> list[pa.Table]:
        """A middle() result of several tasks (or pieces of them), split back into one table per task, each in its
        own row order (middle() keeps the order) — so back() writes the same shards however a feeder cut the calls."""
        ranges = rows[RANGE_COLUMN].unique().to_pylist()
        if len(ranges) <= 1:
            return [rows]
        return [rows.filter(pc.equal(rows[RANGE_COLUMN], r)) for r in ranges]

    def back(self, rows: pa.Table, generation: dict) -> list[dict]:
        """Filter, compose and commit one whole task. Its rows arrive in one piece or several (a feeder cuts calls
        anywhere); one contiguous table first, so the shards' bytes depend on the rows alone."""
        c, tokenizer = self.config, load_tokenizer(self.config.tokenizer)
        rows = rows.combine_chunks()
        if c.engine != "none":  # the gates compare a paraphrase with its source; `none` makes no paraphrase
            rows = filter_rows(rows, c.filter_options, tokenizer)
        rows = compose_rows(rows, generation, layout=c.layout, tokenizer=tokenizer, mix=c.mix, seed=c.seed, options=c.compose_options)
        return write_rows(rows, Path(c.output), c.shard_rows, dry_run=self.dry_run)

    def run_task(self, task: Task, engine: Engine) -> list[dict]:
        return self.back(self.middle(self.front(task), engine), engine.identity())
