"""Versioned Arrow schemas of the build.

One row schema flows through every stage: a row is a chunk (or, for input that never became a chunk, a document)
and carries its own fate in `reject_reason`. Stages only work on rows whose `reject_reason` is null and pass the
others through, so dead-letter records travel with the data and every input record is accounted for exactly once.
Later stages may append columns (e.g. `score_*`); writers keep them. `WORK_DIR` names the output dir's work-state
folder (request cache, engine logs, running-work reports), removed when the build completes.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 1
WORK_DIR = Path("cache")  # inside the output dir; engines and output/running.py keep their state there

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),  # "<source>:<record_index>"
        pa.field("source", pa.string(), nullable=False),  # input file, relative to the input root
        pa.field("record_index", pa.int64(), nullable=False),
        pa.field("set_name", pa.string()),  # SlimPajama meta.redpajama_set_name
        pa.field("meta", pa.string()),  # the record's meta, JSON
        pa.field("text", pa.string()),
        pa.field("reject_stage", pa.string()),
        pa.field("reject_reason", pa.string()),
        pa.field("reject_detail", pa.string()),
        pa.field("raw", pa.binary()),  # the raw input bytes of a bad record, for replay
    ]
)

ROW_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_id", pa.string()),  # hash(doc_id, token span, tokenizer, chunk size)
        pa.field("sample_id", pa.string()),  # chunk_id + layout + generation identity
        pa.field("source", pa.string(), nullable=False),
        pa.field("record_index", pa.int64(), nullable=False),
        pa.field("set_name", pa.string()),
        pa.field("meta", pa.string()),
        pa.field("chunk_index", pa.int32()),  # position of the chunk in its document
        pa.field("token_start", pa.int64()),  # token span in the document, [start, end)
        pa.field("token_end", pa.int64()),
        pa.field("char_start", pa.int64()),  # character span in the document, [start, end)
        pa.field("char_end", pa.int64()),
        pa.field("n_tokens", pa.int32()),  # tokens of `original`, build tokenizer
        pa.field("original", pa.string()),  # the source chunk
        pa.field("paraphrase", pa.string()),  # null when the engine is `none`
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        pa.field("provenance", pa.string()),  # JSON: engine, model, template, sampling, latency
        pa.field("layout", pa.string()),
        pa.field("text", pa.string()),  # the composed training text: what trainers read
        pa.field("reject_stage", pa.string()),
        pa.field("reject_reason", pa.string()),
        pa.field("reject_detail", pa.string()),
        pa.field("raw", pa.binary()),
    ]
)

REJECT_COLUMNS = ("reject_stage", "reject_reason", "reject_detail", "raw")
OUTPUT_COLUMNS = tuple(f.name for f in ROW_SCHEMA if f.name not in REJECT_COLUMNS)

# Columns that travel with rows through the stages but never reach a shard: the input range a row came from and
# how many rows that range yields this run (the driver's per-range completion count), and the engine's latency
# (run statistics: a timing inside the shard bytes would make them differ between two attempts of one batch).
RANGE_COLUMN, RANGE_ROWS_COLUMN, LATENCY_COLUMN = "_range", "_range_rows", "_latency_s"
TRANSIENT_COLUMNS = (RANGE_COLUMN, RANGE_ROWS_COLUMN, LATENCY_COLUMN)

# Reasons that mean "deliberately not selected" rather than "bad": kept in rejected/ for a complete audit
# trail, counted apart from failures in the manifest.
EXCLUSION_REASONS = frozenset({"excluded_by_set", "excluded_by_sample"})


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Add missing schema columns as nulls, order schema columns first, keep extra columns after them."""
    columns, fields = [], []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(len(table), field.type))
        fields.append(field.with_nullable(True))
    for name in table.column_names:
        if name not in schema.names:
            columns.append(table[name])
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def split_live(rows: pa.Table) -> tuple[list[dict], pa.Table]:
    """(the rows no stage has rejected yet, as dicts for a stage to update; the rejected rows, untouched)."""
    live_mask = pc.is_null(rows["reject_reason"])
    return rows.filter(live_mask).to_pylist(), rows.filter(pc.invert(live_mask))


def rejoin(live: list[dict], rest: pa.Table, schema: pa.Schema, rows: pa.Table) -> pa.Table:
    """`rows` (the table split_live split) back in their own order, the live ones updated (typed by `schema`), in
    ROW_SCHEMA column order; a column only one side has (a stage's new one) is null on the other. Keeping the order
    makes a stage row-wise: cut a table anywhere, run the stage on the pieces, join them, and it is the same table."""
    done = conform(pa.Table.from_pylist(live, schema=schema), ROW_SCHEMA)
    joined = pa.concat_tables([conform(rest, ROW_SCHEMA), done], promote_options="default")
    if not len(rest) or not live:
        return joined
    live_mask = pc.is_null(rows["reject_reason"]).combine_chunks()
    source_row = pa.concat_arrays([pc.indices_nonzero(pc.invert(live_mask)), pc.indices_nonzero(live_mask)])
    return joined.take(pc.sort_indices(source_row))


def row_key(table: pa.Table) -> pa.ChunkedArray:
    """The identity a row is deduplicated on: its chunk_id, or its doc_id for rows that never became chunks."""
    return pc.coalesce(table["chunk_id"], table["doc_id"])
