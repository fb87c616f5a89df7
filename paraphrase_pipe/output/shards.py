"""Atomic shard commit: write to a temp name, fsync, rename, fsync the directory.

Shard names are a hash of the row keys they hold, so re-running the same batch after a crash rewrites the same
file instead of adding a second copy.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.ids import stable_hash
from paraphrase_pipe.schema import EXCLUSION_REASONS, REJECT_COLUMNS, row_key

TMP_MARK = ".tmp-"
ACCEPTED_DIR, REJECTED_DIR = "shards", "rejected"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_ipc_atomic(table: pa.Table, final: Path) -> None:
    tmp = final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1024)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _token_count(table: pa.Table) -> int:
    column = "text_tokens" if "text_tokens" in table.column_names else "n_tokens"
    total = pc.sum(table[column]).as_py() if len(table) else 0
    return int(total or 0)


def _documents(table: pa.Table) -> int:
    """Rows that stand for a whole input record: a document's first chunk, or a record that never became chunks."""
    first = pc.fill_null(pc.equal(table["chunk_index"], 0), False)
    no_chunk = pc.is_null(table["chunk_id"])
    return int(pc.sum(pc.or_(first, no_chunk)).as_py() or 0)


def describe(table: pa.Table, kind: str) -> dict:
    keys = row_key(table).to_pylist()
    reasons = Counter(table["reject_reason"].to_pylist()) if kind == REJECTED_DIR else Counter()
    chunk_rows = int(pc.sum(pc.is_valid(table["chunk_id"])).as_py() or 0)
    return {
        "kind": kind,
        "rows": len(table),
        "tokens": _token_count(table) if kind == ACCEPTED_DIR else 0,
        "documents": _documents(table),
        "chunks": chunk_rows,
        "generated_tokens": int(pc.sum(table["completion_tokens"]).as_py() or 0) if "completion_tokens" in table.column_names else 0,
        "excluded": sum(n for r, n in reasons.items() if r in EXCLUSION_REASONS),
        "reasons": {r: n for r, n in reasons.items() if r not in EXCLUSION_REASONS},
        "exclusions": {r: n for r, n in reasons.items() if r in EXCLUSION_REASONS},
        "keys": keys,
    }


def commit(table: pa.Table, out: Path, kind: str) -> dict:
    meta = describe(table, kind)
    name = stable_hash(sorted(meta["keys"]), size=12) + ".arrow"
    final = out / kind / name
    write_ipc_atomic(table, final)
    meta.update(path=f"{kind}/{name}", sha256=sha256_file(final))
    return meta


def split_rows(rows: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(accepted rows without the reject columns, rejected rows with them)."""
    bad = pc.is_valid(rows["reject_reason"])
    accepted = rows.filter(pc.invert(bad)).drop_columns(list(REJECT_COLUMNS))
    return accepted, rows.filter(bad)


def write_rows(rows: pa.Table, out: Path, shard_rows: int, dry_run: bool = False) -> list[dict]:
    """Commit a batch as accepted and rejected shards of at most `shard_rows` rows; return their descriptions."""
    metas = []
    for kind, table in zip((ACCEPTED_DIR, REJECTED_DIR), split_rows(rows)):
        for offset in range(0, len(table), shard_rows):
            piece = table.slice(offset, shard_rows)
            metas.append(describe(piece, kind) if dry_run else commit(piece, out, kind))
    return metas
