"""The paraphrase stage: hand live chunks to the engine, write its answers into the row columns."""
from __future__ import annotations

import json

import pyarrow as pa

from paraphrase_pipe.engines.base import Engine
from paraphrase_pipe.schema import rejoin, split_live


def paraphrase_rows(rows: pa.Table, engine: Engine) -> pa.Table:
    live, rest = split_live(rows)
    if not live:
        return rows
    generations = engine.generate(live)
    if len(generations) != len(live):
        raise RuntimeError(f"engine {engine.name} returned {len(generations)} answers for {len(live)} chunks")
    for row, gen in zip(live, generations):
        row.update(
            paraphrase=gen.paraphrase,
            finish_reason=gen.finish_reason,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            provenance=json.dumps(gen.provenance, sort_keys=True),
        )
        if gen.error:
            row.update(reject_stage="paraphrase", reject_reason=gen.error, reject_detail=gen.error_detail)
    return rejoin(live, rest, rows.schema)
