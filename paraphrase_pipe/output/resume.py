"""Resume planning whose cost follows the work left, not the corpus.

- The task plan (which record ranges of which files) is made once and kept in `OUT/_tasks.json` with each input
  file's size and mtime: a resume does not count the input again while the files are unchanged.
- Ranges the manifest marks complete are dropped without being read.
- Only ranges that some shard already holds rows of need the keys of those rows (the driver's duplicate check and
  completion count), read from just those shards' id columns; every other range starts fresh. Nothing global is
  built, and nothing is shipped to the workers.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from paraphrase_pipe.output.manifest import BuildManifest, write_json_atomic
from paraphrase_pipe.output.ranges import keys_in_ranges, overlaps, range_id
from paraphrase_pipe.sources.files import SourceFile
from paraphrase_pipe.sources.tasks import Task, plan_tasks

TASK_PLAN = "_tasks.json"


def _stamp(file: SourceFile) -> list:
    try:
        st = os.stat(file.path)
    except OSError:
        return [file.name, file.path, file.format, None, None]
    return [file.name, file.path, file.format, st.st_size, st.st_mtime_ns]


def planned_tasks(out: Path | None, files: list[SourceFile], config) -> list[Task]:
    """The task plan: read back from OUT when the input files are unchanged, else made (and kept when `out`)."""
    stamps = [_stamp(f) for f in files]
    path = out / TASK_PLAN if out is not None else None
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("files") == stamps:
                return [Task.from_dict(t) for t in saved["tasks"]]
        except (ValueError, KeyError, TypeError):
            pass  # a damaged plan is made again
    tasks = plan_tasks(files, config)
    if path is not None:
        write_json_atomic(path, {"files": stamps, "tasks": [{k: v for k, v in asdict(t).items() if k != "skip"} for t in tasks]})
    return tasks


def remaining_tasks(manifest: BuildManifest, tasks: list[Task]) -> list[Task]:
    """Tasks whose range is not complete; the manifest learns the keys the partly committed ones already hold."""
    todo = [t for t in tasks if not manifest.completed.covers(t.range)]
    touched: dict[str, list[tuple]] = defaultdict(list)
    legacy = False
    for entry in manifest.entries():
        if entry.get("ranges") is None:
            legacy = True
        for rng in entry.get("ranges") or []:
            touched[rng[0]].append(tuple(rng[:3]))
    partial = [t for t in todo if legacy or any(overlaps(r, t.range) for r in touched.get(t.range[0], ()))]
    for rng, keys in keys_in_ranges(manifest.out, manifest.entries(), [t.range for t in partial]).items():
        manifest.expect(range_id(*rng), keys)
    return todo
