"""What the output directory holds against what the manifest lists, at the start (under the lock) and the end of
a build: orphans of a crash (temp files, shards linked but never recorded) are deleted; listed shards that are
missing or not the size recorded are found, so their ranges are built again."""
from __future__ import annotations

from pathlib import Path

from paraphrase_pipe.output.shards import ACCEPTED_DIR, REJECTED_DIR, TMP_MARK


def remove_orphans(out: Path, listed: set[str]) -> list[str]:
    """Delete temp files and shards no entry lists; return what was removed (relative paths)."""
    removed = []
    for kind in (ACCEPTED_DIR, REJECTED_DIR):
        directory = out / kind
        directory.mkdir(parents=True, exist_ok=True)
        for path in directory.iterdir():
            rel = f"{kind}/{path.name}"
            if TMP_MARK in path.name or rel not in listed:
                path.unlink()
                removed.append(rel)
    for path in out.glob(f"*{TMP_MARK}*"):
        path.unlink()
        removed.append(path.name)
    return removed


def is_damaged(out: Path, entry: dict) -> bool:
    """A listed shard that is gone, or whose size is not the one recorded (a cheap check: `inspect --verify`
    hashes)."""
    try:
        size = (out / entry["path"]).stat().st_size
    except FileNotFoundError:
        return True
    return size != entry.get("bytes", size)
