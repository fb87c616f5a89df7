"""Work done inside tasks that have not committed yet, so a build's progress moves between commits on every executor.

The paraphrase stage reports each chunk as the engine answers it (`BatchWork`). Every process keeps the counts of its
input ranges in one small JSON file, `OUT/cache/running/<host>-<pid>.json`, rewritten atomically by a daemon thread
at most every `FLUSH_S`, and once when a batch ends. Files in OUT reach the driver from local workers, Ray actors and
Dask workers alike (their shards go there too), so one mechanism serves every executor and the executors know
nothing of it. `read_running` merges the files
for the driver's progress, which stops counting a range as running once it records a shard of it: from then on the
committed counts stand for those rows, so the two never count the same rows twice. The directory is work state:
cleared when a run starts, deleted with the request cache when the build completes.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.schema import RANGE_COLUMN, WORK_DIR

RUNNING_DIR = WORK_DIR / "running"
FIELDS = ("documents", "chunks", "source_tokens", "generated_tokens")  # what a running range has done so far
FLUSH_S = 0.5  # a process rewrites its file at most this often
KEEP_S = 20.0  # a range whose batches are all answered stays listed this long (the driver reads every few seconds)


class _ProcessFile:
    """This process's counts per input range, and the file that shows them (written by a daemon thread when they
    changed, so the engine's threads that report answers never wait on the filesystem)."""

    def __init__(self, out: Path):
        self.path = Path(out) / RUNNING_DIR / f"{socket.gethostname()}-{os.getpid()}.json"
        self.counts: dict[str, dict[str, int]] = {}
        self.open_batches: dict[str, int] = {}
        self.idle_since: dict[str, float] = {}  # ranges with no batch open here, since when
        self.lock, self.writing = threading.Lock(), threading.Lock()
        self.changed = False
        threading.Thread(target=self._keep_written, name="running-work", daemon=True).start()

    def open(self, rids: set[str]) -> None:
        with self.lock:
            for rid in rids:
                self.counts.setdefault(rid, dict.fromkeys(FIELDS, 0))
                self.open_batches[rid] = self.open_batches.get(rid, 0) + 1
                self.idle_since.pop(rid, None)

    def add(self, rid: str, **done: int) -> None:
        with self.lock:
            counts = self.counts[rid]
            for key, n in done.items():
                counts[key] += n
            self.changed = True

    def close(self, rids: set[str]) -> None:
        with self.lock:
            for rid in rids:
                self.open_batches[rid] -= 1
                if not self.open_batches[rid]:
                    del self.open_batches[rid]
                    self.idle_since[rid] = time.monotonic()

    def _keep_written(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            self.flush()

    def flush(self) -> None:
        """Write the counts if they changed (and drop ranges idle for KEEP_S)."""
        now = time.monotonic()
        with self.writing:
            with self.lock:
                for rid in [r for r, t in self.idle_since.items() if now - t > KEEP_S]:
                    del self.idle_since[rid], self.counts[rid]
                    self.changed = True
                if not self.changed:
                    return
                self.changed = False
                text = json.dumps(self.counts)
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:  # progress is for display: a full or flaky disk must not fail the build (its shards will say so)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(text)
                os.replace(tmp, self.path)
            except OSError:
                pass


_files: dict[tuple[int, Path], _ProcessFile] = {}
_files_lock = threading.Lock()


def _process_file(out: Path) -> _ProcessFile:
    key = (os.getpid(), Path(out).resolve())  # the pid too: a forked worker writes its own file
    with _files_lock:
        if key not in _files:
            _files[key] = _ProcessFile(key[1])
        return _files[key]


class BatchWork:
    """One paraphrase batch's progress, by input range: its chunks as they are answered (with their source and
    generated tokens), and its documents once every chunk of theirs in the batch is answered. Rows rejected before
    the stage count as done at once. When every chunk is answered, a range's counts are what its commit will add."""

    def __init__(self, out: Path, rows: pa.Table, live: list[dict]):
        self.file = _process_file(out)
        rids = rows[RANGE_COLUMN].to_pylist() if RANGE_COLUMN in rows.column_names else [None] * len(rows)
        self.rids = {r for r in rids if r is not None}
        self.live = live
        self.reported: set[int] = set()
        self.lock = threading.Lock()
        self.pending: dict[str, int] = {}  # doc_id -> live chunks not answered yet
        for row in live:
            self.pending[row["doc_id"]] = self.pending.get(row["doc_id"], 0) + 1
        # rows that stand for a whole document (its first chunk, or a record that never became chunks): doc -> range
        first = pc.fill_null(pc.or_(pc.equal(rows["chunk_index"], 0), pc.is_null(rows["chunk_id"])), False).to_pylist()
        self.doc_range = {d: r for d, r, f in zip(rows["doc_id"].to_pylist(), rids, first) if f and r is not None}
        self.file.open(self.rids)
        rejected = pc.is_valid(rows["reject_reason"]).to_pylist()
        for rid, gone, chunk_id, n_tokens in zip(rids, rejected, rows["chunk_id"].to_pylist(), rows["n_tokens"].to_pylist()):
            if gone and rid is not None and chunk_id is not None:
                self.file.add(rid, chunks=1, source_tokens=n_tokens or 0)
        for doc, rid in self.doc_range.items():
            if doc not in self.pending:
                self.file.add(rid, documents=1)
        self.live_rids = [r for r, gone in zip(rids, rejected) if not gone]  # split_live keeps the rows' order

    def answered(self, i: int, generated_tokens: int | None) -> None:
        """Chunk `i` of the live rows has its answer (called from the engine's threads, once per chunk)."""
        with self.lock:
            if i in self.reported:
                return
            self.reported.add(i)
            doc = self.live[i]["doc_id"]
            self.pending[doc] -= 1
            doc_done = not self.pending[doc] and doc in self.doc_range
        rid = self.live_rids[i]
        if rid is not None:
            self.file.add(rid, chunks=1, source_tokens=self.live[i]["n_tokens"] or 0, generated_tokens=generated_tokens or 0,
                          documents=int(doc_done))

    def finish(self, generations) -> None:
        """Every answer is in: report those the engine did not report one by one, and show the batch's end."""
        for i, gen in enumerate(generations):
            self.answered(i, gen.completion_tokens)
        self.file.close(self.rids)
        self.file.flush()  # once per batch, at once: the batch's last state is shown before its commit


def read_running(out: Path) -> dict[str, dict[str, int]]:
    """The counts of every process's ranges, the largest report of each (a retried task may show in two files)."""
    merged: dict[str, dict[str, int]] = {}
    for path in (Path(out) / RUNNING_DIR).glob("*.json"):
        try:
            ranges = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced, or gone
        for rid, counts in ranges.items():
            seen = merged.setdefault(rid, dict.fromkeys(FIELDS, 0))
            for key in FIELDS:
                seen[key] = max(seen[key], int(counts.get(key, 0)))
    return merged


def clear_running(out: Path) -> None:
    """A run starts with none: files of an earlier run's processes describe ranges that may never come back."""
    shutil.rmtree(Path(out) / RUNNING_DIR, ignore_errors=True)
