"""Never pay twice: every finished completion is written to sqlite the moment it arrives, and looked up before a
request is sent.

A crash between "the engine answered" and "the shard committed" would otherwise throw paid GPU time away. Each
process writes its own file (`OUT/cache/requests/<host>-<pid>.sqlite`, no lock contention, safe on a shared
filesystem) and reads every file in the directory, so a resumed run with any number of workers finds the answers
of the crashed one. Keys are generation keys (chunk id + the engine's identity). The directory is deleted when
the build completes.
"""
from __future__ import annotations

import json
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


class RequestCache:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{socket.gethostname()}-{os.getpid()}.sqlite"
        self._own = self._connect(self.path)
        self._readers: dict[Path, sqlite3.Connection] = {}
        self._lock = threading.Lock()  # engines write from their I/O thread while batches look up from theirs

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        # Rollback journal, not WAL: OUT is often a network filesystem (NFS, Lustre), where WAL's shared memory does
        # not work across hosts. Each put is its own transaction: a killed process loses nothing it reported.
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        return conn

    def _sources(self) -> list[sqlite3.Connection]:
        for path in sorted(self.directory.glob("*.sqlite")):
            if path != self.path and path not in self._readers:
                self._readers[path] = self._connect(path)
        return [self._own, *self._readers.values()]

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self._get_many(keys)

    def _get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        wanted = list(dict.fromkeys(keys))
        for conn in self._sources():
            for start in range(0, len(wanted), 500):  # stay below sqlite's host-parameter limit
                part = [k for k in wanted[start:start + 500] if k not in found]
                if not part:
                    continue
                marks = ",".join("?" * len(part))
                for key, value in conn.execute(f"SELECT key, value FROM completions WHERE key IN ({marks})", part):
                    found[key] = json.loads(value)
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
