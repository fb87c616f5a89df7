"""Never pay twice: every finished completion is written to sqlite the moment it arrives, and looked up before a
request is sent.

A crash between "the engine answered" and "the shard committed" would otherwise throw paid GPU time away. Each
process writes its own file (`OUT/cache/requests/<host>-<pid>.sqlite`, no lock contention, safe on a shared
filesystem) and reads every file in the directory, so a resumed run with any number of workers finds the answers
of the crashed one. Keys are generation keys (chunk id + the engine's identity). The directory is deleted when
the build completes. A process killed at any moment loses nothing it wrote (each put is a transaction); a host
that loses power may lose its last answers, or damage its file, which a later run then skips with a warning: the
cache saves GPU time, the shards are the record.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

from paraphrase_pipe.schema import WORK_DIR

CACHE_DIR = WORK_DIR / "requests"
_SCHEMA = "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
log = logging.getLogger(__name__)


class RequestCache:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{socket.gethostname()}-{os.getpid()}.sqlite"
        try:
            self._own = self._connect(self.path)
        except sqlite3.DatabaseError:  # a file of an earlier process with this pid, damaged by a power loss
            self.path.replace(self.path.with_suffix(".damaged"))
            self._own = self._connect(self.path)
        self._readers: dict[Path, sqlite3.Connection] = {}
        self._lock = threading.Lock()  # engines write from their I/O thread while batches look up from theirs

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        # Rollback journal, not WAL: OUT is often a network filesystem (NFS, Lustre), where WAL's shared memory does
        # not work across hosts. Each put is its own transaction, so a killed process loses nothing it reported; no
        # fsync per put (synchronous=OFF, a kept journal file): ~15x cheaper puts, at a thousand answers a second.
        conn.execute("PRAGMA journal_mode=PERSIST")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(_SCHEMA)
        return conn

    def _sources(self) -> list[tuple[Path, sqlite3.Connection]]:
        for path in sorted(self.directory.glob("*.sqlite")):
            if path != self.path and path not in self._readers:
                try:
                    self._readers[path] = self._connect(path)
                except sqlite3.DatabaseError as exc:
                    self._skip(path, exc)
        return [(self.path, self._own), *self._readers.items()]

    def _skip(self, path: Path, exc: Exception) -> None:
        """A damaged file of another process: its answers are asked again (never trusted, never fatal)."""
        log.warning("request cache %s is damaged (%s): skipping it; its chunks will be generated again", path.name, exc)
        conn = self._readers.pop(path, None)
        if conn is not None:
            conn.close()
        path.replace(path.with_suffix(".damaged"))

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self._get_many(keys)

    def _get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        wanted = list(dict.fromkeys(keys))
        for path, conn in self._sources():
            try:
                for start in range(0, len(wanted), 500):  # stay below sqlite's host-parameter limit
                    part = [k for k in wanted[start:start + 500] if k not in found]
                    if not part:
                        continue
                    marks = ",".join("?" * len(part))
                    for key, value in conn.execute(f"SELECT key, value FROM completions WHERE key IN ({marks})", part):
                        found[key] = json.loads(value)
            except sqlite3.DatabaseError as exc:
                if conn is self._own:
                    raise
                self._skip(path, exc)
        return found

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._own.execute("INSERT OR REPLACE INTO completions VALUES (?, ?)", (key, json.dumps(value)))

    def close(self) -> None:
        with self._lock:
            for conn in [self._own, *self._readers.values()]:
                conn.close()
            self._readers.clear()


def discard(out: Path) -> None:
    """Called once a build is complete: every cached answer is in a committed shard."""
    shutil.rmtree(Path(out) / WORK_DIR, ignore_errors=True)
