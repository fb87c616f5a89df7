"""`BuildOutput`: the one reader of a build output directory (manifest.json + shards) — for `inspect`, the data card,
the trainer and the evaluator alike.

It checks the manifest's shape once, so every consumer fails with the same one-line `ManifestError` on a directory
that is not a build output, and lists, reads (with column projection) and verifies the shards the manifest names.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.output.errors import ManifestError
from paraphrase_pipe.output.shards import sha256_file
from paraphrase_pipe.schema import SCHEMA_VERSION

MANIFEST = "manifest.json"
LISTS = ("shards", "rejected")


def load_manifest(path: Path) -> dict:
    """manifest.json as a dict whose shape later reads can rely on, else a one-line ManifestError."""
    try:
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        raise ManifestError(f"{path.parent} has no {MANIFEST} (not a build output)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{path} is not a valid manifest ({type(exc).__name__}: {str(exc)[:200]}); "
                            "move it away or pass --overwrite") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is not a valid manifest (a JSON {type(data).__name__}, not an object)")
    missing = [k for k in ("schema_version", "status", "shards") if k not in data]
    if missing:
        raise ManifestError(f"{path} is not a valid manifest (missing: {', '.join(missing)})")
    data.setdefault("rejected", [])
    data.setdefault("config", {})
    for listing in LISTS:
        entries = data[listing]
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in entries):
            raise ManifestError(f"{path} is not a valid manifest ({listing!r} must list entries with a 'path')")
    if not isinstance(data["config"], dict):
        raise ManifestError(f"{path} is not a valid manifest ('config' must be an object)")
    return data


@dataclass
class Problem:
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class BuildOutput:
    out: Path
    manifest: dict

    @classmethod
    def open(cls, out: Path | str, schema_version: int | None = SCHEMA_VERSION) -> BuildOutput:
        out = Path(out)
        data = load_manifest(out / MANIFEST)
        if schema_version is not None and data["schema_version"] != schema_version:
            raise ManifestError(f"{out / MANIFEST}: schema_version {data['schema_version']!r}, this version reads {schema_version}")
        return cls(out, data)

    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def counts(self) -> dict:
        return self.manifest.get("counts", {})

    def entries(self, kind: str = "shards") -> list[dict]:
        return self.manifest[kind]

    def path_of(self, entry: dict) -> Path:
        return self.out / entry["path"]

    def read(self, entry: dict, columns: list[str] | None = None) -> pa.Table:
        """One shard, memory-mapped; only `columns` are touched when given."""
        with pa.memory_map(str(self.path_of(entry))) as source:
            table = pa.ipc.open_file(source).read_all()
        return table.select(columns) if columns is not None else table

    def tables(self, kind: str = "shards", columns: list[str] | None = None) -> Iterator[tuple[dict, pa.Table]]:
        for entry in self.entries(kind):
            yield entry, self.read(entry, columns)

    def missing(self, kind: str = "shards") -> list[str]:
        return [e["path"] for e in self.entries(kind) if not self.path_of(e).is_file()]

    def verify(self) -> list[Problem]:
        """Every listed file present, its sha256 and row/token counts as recorded, the totals as the counts say."""
        problems: list[Problem] = []
        totals = {"shards": 0, "rejected": 0, "tokens": 0}
        for kind in LISTS:
            for entry in self.entries(kind):
                path = self.path_of(entry)
                if not path.is_file():
                    problems.append(Problem(entry["path"], "listed in the manifest but missing"))
                    continue
                if "sha256" not in entry:
                    problems.append(Problem(entry["path"], "no sha256 recorded"))
                    continue
                if sha256_file(path) != entry["sha256"]:
                    problems.append(Problem(entry["path"], "sha256 differs from the manifest"))
                    continue
                try:
                    table = self.read(entry)
                except (OSError, pa.ArrowInvalid) as exc:
                    problems.append(Problem(entry["path"], f"unreadable ({exc})"))
                    continue
                if len(table) != entry.get("rows"):
                    problems.append(Problem(entry["path"], f"{len(table)} rows, the manifest says {entry['rows']}"))
                totals[kind] += len(table)
                if kind == "shards" and "tokens" in entry:
                    column = "text_tokens" if "text_tokens" in table.column_names else "n_tokens"
                    tokens = int(pc.sum(table[column]).as_py() or 0) if len(table) else 0
                    if tokens != entry["tokens"]:
                        problems.append(Problem(entry["path"], f"{tokens} tokens, the manifest says {entry['tokens']}"))
                    totals["tokens"] += tokens
        counts = self.counts
        expected = {"accepted": totals["shards"], "tokens": totals["tokens"],
                    "rejected+excluded": totals["rejected"]}
        got = {"accepted": counts.get("accepted"), "tokens": counts.get("tokens"),
               "rejected+excluded": (counts.get("rejected") or 0) + (counts.get("excluded") or 0)}
        if not problems:
            for name, value in expected.items():
                if got[name] != value:
                    problems.append(Problem(MANIFEST, f"counts.{name} is {got[name]}, the shards hold {value}"))
        return problems
