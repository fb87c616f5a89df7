"""The build as three steps over Arrow tables, so any executor can place them:

  front(task)  read -> chunk -> tag rows with their input range     (CPU, runs where the data is)
  middle(rows) paraphrase with the engine                         (worker or GPU actor, per engine placement)
  back(rows)   filter -> compose -> commit shards, return metadata (CPU)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.engines import Engine, create_engine, engine_class
from paraphrase_pipe.output.shards import write_rows
from paraphrase_pipe.output.ranges import range_id
from paraphrase_pipe.schema import RANGE_COLUMN, RANGE_ROWS_COLUMN
from paraphrase_pipe.sources import Task, read_task
from paraphrase_pipe.stages.chunk import chunk_documents
from paraphrase_pipe.stages.compose import compose_rows
from paraphrase_pipe.stages.filter import filter_rows
from paraphrase_pipe.stages.paraphrase import paraphrase_rows
from paraphrase_pipe.tokenizer import load_tokenizer


@dataclass
class Pipeline:
    config: BuildConfig
    dry_run: bool = False

    @property
    def engine_placement(self) -> str:
        return engine_class(self.config.engine).placement

    def make_engine(self) -> Engine:
        workdir = None if self.dry_run else self.config.output  # engines keep their request cache there
        return create_engine(self.config.engine, self.config.engine_options, workdir=workdir)

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
        return paraphrase_rows(rows, engine)

    def back(self, rows: pa.Table, generation: dict) -> list[dict]:
        if self.config.engine != "none":  # the gates compare a paraphrase with its source; `none` makes no paraphrase
            rows = filter_rows(rows, self.config.filter_options, load_tokenizer(self.config.tokenizer))
        rows = compose_rows(rows, self.config, generation)
        return write_rows(rows, Path(self.config.output), self.config.shard_rows, dry_run=self.dry_run)

    def run_task(self, task: Task, engine: Engine) -> list[dict]:
        return self.back(self.middle(self.front(task), engine), engine.identity())
