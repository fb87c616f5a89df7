"""Training-sample composition: the `text` column trainers read, built from the original and its paraphrase."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.ids import sample_id
from paraphrase_pipe.schema import ROW_SCHEMA, conform


def compose_rows(rows: pa.Table, config: BuildConfig, generation: dict) -> pa.Table:
    live_mask = pc.is_null(rows["reject_reason"])
    live = rows.filter(live_mask).to_pylist()
    for row in live:
        row["layout"] = config.layout
        row["text"] = row["original"]
        row["sample_id"] = sample_id(row["chunk_id"], layout=config.layout, generation=generation)
    done = conform(pa.Table.from_pylist(live, schema=rows.schema), ROW_SCHEMA)
    return pa.concat_tables([rows.filter(pc.invert(live_mask)), done])
