"""The paraphrase stage: hand live chunks to the engine, write its answers into the row columns.

`submit_paraphrase` is the non-blocking form for feeders that keep an engine full (executors/local.py); the
blocking `paraphrase_rows` is the same thing waited on. The engine's latency leaves the provenance for a transient
column (`schema.LATENCY_COLUMN`): it becomes run statistics in the manifest, and the shard bytes stay a function
of the rows. With `report` (the pipeline passes `output/running.BatchWork` bound to the build's output dir) each
answer is reported as it arrives, so the build's progress moves inside a task long before the task commits.
"""
from __future__ import annotations

import json
from concurrent.futures import Future
from collections.abc import Callable

import pyarrow as pa

from paraphrase_pipe.engines.base import Engine
from paraphrase_pipe.schema import LATENCY_COLUMN, ROW_SCHEMA, conform, rejoin, split_live


Reporter = Callable[[pa.Table, list[dict]], object]  # (rows, live chunks) -> has .answered(i, n) and .finish(gens)


def paraphrase_rows(rows: pa.Table, engine: Engine, report: Reporter | None = None) -> pa.Table:
    live, rest = split_live(rows)
    if not live:
        return _without_answers(rows)
    work = _batch_work(report, rows, live, engine)
    generations = engine.generate(live, **({"on_answer": work.answered} if work else {}))
    if work:
        work.finish(generations)
    return _with_answers(rows, live, rest, generations, engine)


def submit_paraphrase(rows: pa.Table, engine, report: Reporter | None = None) -> Future:
    """Future of paraphrase_rows(rows, engine); the live chunks are in the engine's in_flight() when this returns."""
    done: Future = Future()
    live, rest = split_live(rows)
    if not live:
        done.set_result(_without_answers(rows))
        return done
    work = _batch_work(report, rows, live, engine)

    def answered(generations: Future) -> None:
        try:
            if work:
                work.finish(generations.result())
            done.set_result(_with_answers(rows, live, rest, generations.result(), engine))
        except BaseException as exc:  # noqa: BLE001 - the waiter re-raises it
            done.set_exception(exc)

    engine.submit(live, **({"on_answer": work.answered} if work else {})).add_done_callback(answered)
    return done


def _batch_work(report: Reporter | None, rows: pa.Table, live: list[dict], engine):
    """Progress reports for engines that answer chunk by chunk (LLMs, where a task takes long); an engine that
    answers a whole batch at once (`none`) adds nothing the commit moments later does not."""
    return report(rows, live) if report and getattr(engine, "reports_answers", False) else None


def _without_answers(rows: pa.Table) -> pa.Table:
    """Every batch leaves with the same columns in the same order (executors concatenate them)."""
    if LATENCY_COLUMN not in rows.column_names:
        rows = rows.append_column(LATENCY_COLUMN, pa.nulls(len(rows), pa.float64()))
    return conform(rows, ROW_SCHEMA)


def _with_answers(rows: pa.Table, live: list[dict], rest, generations, engine) -> pa.Table:
    if len(generations) != len(live):
        raise RuntimeError(f"engine {engine.name} returned {len(generations)} answers for {len(live)} chunks")
    for row, gen in zip(live, generations):
        provenance = dict(gen.provenance)
        row[LATENCY_COLUMN] = provenance.pop("latency_s", None)
        row.update(
            paraphrase=gen.paraphrase,
            finish_reason=gen.finish_reason,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            provenance=json.dumps(provenance, sort_keys=True),
        )
        if gen.error:
            row.update(reject_stage="paraphrase", reject_reason=gen.error, reject_detail=gen.error_detail)
    schema = rows.schema if LATENCY_COLUMN in rows.column_names else rows.schema.append(pa.field(LATENCY_COLUMN, pa.float64()))
    return rejoin(live, rest, schema, rows)
