"""Atomic shard commit: write to a temp name, fsync, link into place (never over an existing file), fsync the
directory.

Shard names are a hash of the row keys they hold, so re-running the same batch after a crash meets the same name.
The link refuses to replace a file already there: a retried or straggling attempt of a batch can never change the
bytes under a recorded sha256; it reports the file that is there.
"""
from __future__ import annotations

import errno
import hashlib
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.ids import stable_hash
from paraphrase_pipe.output.errors import full_disk
from paraphrase_pipe.schema import (EXCLUSION_REASONS, LATENCY_COLUMN, RANGE_COLUMN, RANGE_ROWS_COLUMN, REJECT_COLUMNS,
                                    TRANSIENT_COLUMNS, row_key)

TMP_MARK = ".tmp-"
ACCEPTED_DIR, REJECTED_DIR = "shards", "rejected"
LISTINGS = {ACCEPTED_DIR: "shards", REJECTED_DIR: "rejected"}  # shard directory -> manifest list


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The sha256 the manifest records for a file (the one implementation: writer, verifier and trainer)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _link_no_replace(tmp: Path, final: Path) -> bool:
    """Move tmp to final unless final exists; True when tmp went into place."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if final.exists():  # a filesystem without hard links: check, then rename (the build lock rules out racers)
            return False
        os.replace(tmp, final)
        return True
    return True


def write_ipc_atomic(table: pa.Table, final: Path) -> bool:
    """Write `table` as an Arrow IPC file at `final`; False (and nothing written) when `final` already exists."""
    tmp = final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=1024)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        placed = _link_no_replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        raise full_disk(final, exc) or exc
    finally:
        tmp.unlink(missing_ok=True)
    return placed


def _token_count(table: pa.Table) -> int:
    column = "text_tokens" if "text_tokens" in table.column_names else "n_tokens"
    total = pc.sum(table[column]).as_py() if len(table) else 0
    return int(total or 0)


def _documents(table: pa.Table) -> int:
    """Rows that stand for a whole input record: a document's first chunk, or a record that never became chunks."""
    first = pc.fill_null(pc.equal(table["chunk_index"], 0), False)
    no_chunk = pc.is_null(table["chunk_id"])
    return int(pc.sum(pc.or_(first, no_chunk)).as_py() or 0)


def keys_by_range(table: pa.Table) -> dict[str, list[str]]:
    """Row keys grouped by the input range (`[source, start, stop]` as JSON) the rows came from."""
    keys = row_key(table).to_pylist()
    if RANGE_COLUMN not in table.column_names:
        return {"null": keys} if keys else {}
    grouped: dict[str, list[str]] = {}
    for rng, key in zip(table[RANGE_COLUMN].to_pylist(), keys):
        grouped.setdefault(rng, []).append(key)
    return grouped


def range_totals(table: pa.Table) -> dict[str, int]:
    """Rows each input range in `table` yields in this run (carried by the rows from the range's read)."""
    if RANGE_COLUMN not in table.column_names or not len(table):
        return {}
    return dict(zip(table[RANGE_COLUMN].to_pylist(), table[RANGE_ROWS_COLUMN].to_pylist()))


def describe(table: pa.Table, kind: str) -> dict:
    reasons = Counter(table["reject_reason"].to_pylist()) if kind == REJECTED_DIR else Counter()
    chunk_rows = int(pc.sum(pc.is_valid(table["chunk_id"])).as_py() or 0)
    latency = pc.sum(table[LATENCY_COLUMN]).as_py() if LATENCY_COLUMN in table.column_names and len(table) else 0
    return {
        "kind": kind,
        "rows": len(table),
        "tokens": _token_count(table) if kind == ACCEPTED_DIR else 0,
        "documents": _documents(table),
        "chunks": chunk_rows,
        "source_tokens": int(pc.sum(table["n_tokens"]).as_py() or 0) if len(table) else 0,  # the chunks' own tokens (progress: in tok/s)
        "generated_tokens": int(pc.sum(table["completion_tokens"]).as_py() or 0) if "completion_tokens" in table.column_names else 0,
        "engine_latency_s": round(float(latency or 0), 4),
        "excluded": sum(n for r, n in reasons.items() if r in EXCLUSION_REASONS),
        "reasons": {r: n for r, n in reasons.items() if r not in EXCLUSION_REASONS},
        "exclusions": {r: n for r, n in reasons.items() if r in EXCLUSION_REASONS},
        "keys": keys_by_range(table),  # the driver's duplicate check and per-range completion count
        "range_rows": range_totals(table),
    }


def shard_name(keys: list[str]) -> str:
    return stable_hash(sorted(keys), size=12) + ".arrow"


def commit(table: pa.Table, out: Path, kind: str) -> dict:
    meta = describe(table, kind)
    name = shard_name([k for keys in meta["keys"].values() for k in keys])
    final = out / kind / name
    placed = write_ipc_atomic(table.drop_columns([c for c in TRANSIENT_COLUMNS if c in table.column_names]), final)
    meta["existed"] = not placed  # another attempt of this batch put it there first: its bytes stand
    meta.update(path=f"{kind}/{name}", sha256=sha256_file(final), bytes=final.stat().st_size)
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
