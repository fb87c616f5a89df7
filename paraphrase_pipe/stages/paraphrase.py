"""The paraphrase stage: hand live chunks to the engine, write its answers into the row columns.

The engine's latency leaves the provenance for a transient column (`schema.LATENCY_COLUMN`): it becomes run
statistics in the manifest, and the shard bytes stay a function of the rows.
"""
from __future__ import annotations

import json

import pyarrow as pa

from paraphrase_pipe.engines.base import Engine
from paraphrase_pipe.schema import LATENCY_COLUMN, rejoin, split_live


def paraphrase_rows(rows: pa.Table, engine: Engine) -> pa.Table:
    live, rest = split_live(rows)
    if not live:  # every batch leaves with the same columns (executors may concatenate them)
        return rows if LATENCY_COLUMN in rows.column_names else rows.append_column(LATENCY_COLUMN, pa.nulls(len(rows), pa.float64()))
    generations = engine.generate(live)
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
    return rejoin(live, rest, schema)
