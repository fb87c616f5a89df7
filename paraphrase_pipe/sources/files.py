"""Finding input files and knowing their format. The bundled sample corpus is the default input."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample"
JSONL_SUFFIXES = (".jsonl.zst", ".jsonl.zstd", ".json.zst", ".jsonl.gz", ".json.gz", ".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)


class SourceError(ValueError):
    """Input that cannot be read at all (message is user-facing)."""


def unreadable_reason(path: str) -> OSError:
    """Why an input found by the walk cannot be read (raised as a file-level dead-letter row, never opened)."""
    try:
        if Path(path).is_dir():
            os.listdir(path)
            return OSError(f"directory {path} could not be listed")
        os.stat(path)
    except OSError as exc:
        return exc
    return OSError(f"{path} is not a regular file")


@dataclass(frozen=True)
class SourceFile:
    path: str  # absolute
    name: str  # relative to the input root: part of every doc_id
    format: str  # jsonl | parquet | hf_dataset | unreadable (a directory that cannot be listed: dead-lettered)


def _format(path: Path) -> str | None:
    lower = path.name.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def _is_hf_dataset_dir(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _walk(root: Path) -> list[SourceFile]:
    if _is_hf_dataset_dir(root):
        return [SourceFile(str(root), root.name, "hf_dataset")]
    found, unreadable = [], []

    def note(error: OSError) -> None:  # os.walk skips what it cannot list; the build must account for it
        if error.filename and Path(error.filename) != root:
            unreadable.append(Path(error.filename))
        else:
            raise SourceError(f"cannot list input directory {root}: {error.strerror}")

    for directory, _, names in os.walk(root, onerror=note, followlinks=True):
        for name in names:
            path = Path(directory) / name
            fmt = _format(path)
            if fmt and not path.is_file():  # a dangling link, a device or a pipe with an input's name
                unreadable.append(path)
            elif fmt:
                found.append(SourceFile(str(path), str(path.relative_to(root)), fmt))
    found += [SourceFile(str(p), str(p.relative_to(root)), "unreadable") for p in unreadable]
    return sorted(found, key=lambda f: f.name)


def discover(inputs: list[str]) -> list[SourceFile]:
    """Expand files, directories (recursively) and globs, in a stable order."""
    if not inputs:
        return _walk(SAMPLE_DIR)
    files: list[SourceFile] = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if any(c in item for c in "*?[") else [item]
        if not matches:
            raise SourceError(f"no input matches {item!r}")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                files.extend(_walk(path))
            elif path.is_file():
                fmt = _format(path)
                if fmt is None:
                    raise SourceError(f"unsupported input format: {path} (expected {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)})")
                files.append(SourceFile(str(path.resolve()), path.name, fmt))
            else:
                raise SourceError(f"input not found: {path}")
    if not files:
        raise SourceError(f"no readable input files under {', '.join(inputs)}")
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise SourceError("two inputs resolve to the same name; pass their common parent directory instead")
    return files
