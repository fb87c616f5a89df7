"""`OUT/_commits.jsonl`: the driver's append-only record of each commit, one fsynced JSON line per shard.

Cheap for builds of many thousands of shards (manifest.json is only a periodic snapshot of it). A crash can tear the
last line; opening the journal truncates it to its last complete line, so the next entry starts on a line of its own
instead of being glued onto the torn one and lost on replay.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from paraphrase_pipe.output.errors import full_disk

JOURNAL = "_commits.jsonl"


class CommitJournal:
    def __init__(self, out: Path):
        self.path = Path(out) / JOURNAL
        self.torn_bytes = 0  # what opening cut off (a torn last line)

    def open(self) -> list[dict]:
        """Replay: every complete entry, in order; a torn tail is cut off the file."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.torn_bytes = len(data) - end
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        entries = []
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a complete line that is not JSON was never written by a driver: ignore it
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def append(self, entry: dict) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise full_disk(self.path, exc) or exc

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
