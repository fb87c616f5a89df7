"""Input ranges (a file, or a record range of it) as units of completion, so a resume costs what is left.

A range is `[source, start, stop]` (stop None: to the end of the file). The driver counts the rows each range yields
as their shards are recorded; the journal line of the shard that brings a range to its total also marks it
complete. A resume then skips complete ranges without reading them, and needs row keys only of the ranges that were
partly committed — read from the shards that list those ranges, two columns of them.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.schema import row_key

Range = tuple  # (source, start, stop)


def range_id(source: str, start: int, stop: int | None) -> str:
    """The JSON form rows carry in their transient range column."""
    return json.dumps([source, start, stop])


def parse_range(rid: str) -> Range:
    source, start, stop = json.loads(rid)
    return source, start, stop


def contains(outer: Range, inner: Range) -> bool:
    return (outer[0] == inner[0] and outer[1] <= inner[1]
            and (outer[2] is None or (inner[2] is not None and inner[2] <= outer[2])))


def overlaps(a: Range, b: Range) -> bool:
    return (a[0] == b[0] and (a[2] is None or b[1] < a[2]) and (b[2] is None or a[1] < b[2]))


class CompletedRanges:
    """The ranges a build has finished, by source (a manifest's `completed_ranges`)."""

    def __init__(self, ranges: list[list] | None = None):
        self.by_source: dict[str, list[Range]] = defaultdict(list)
        for source, start, stop in ranges or []:
            self.by_source[source].append((source, start, stop))

    def add(self, rng: Range) -> None:
        if not self.covers(rng):
            self.by_source[rng[0]].append(tuple(rng))

    def discard_overlapping(self, rng: Range) -> None:
        self.by_source[rng[0]] = [r for r in self.by_source[rng[0]] if not overlaps(r, rng)]

    def covers(self, rng: Range) -> bool:
        return any(contains(done, rng) for done in self.by_source.get(rng[0], ()))

    def to_list(self) -> list[list]:
        return [list(r) for source in sorted(self.by_source) for r in sorted(self.by_source[source], key=lambda r: r[1])]


def keys_in_ranges(out: Path, entries: list[dict], ranges: list[Range]) -> dict[Range, set[str]]:
    """Row keys the listed shards hold for each of `ranges`: only the shards that list an overlapping range (or that
    predate range records), only their id and position columns, memory-mapped."""
    found: dict[Range, set[str]] = {r: set() for r in ranges}
    if not ranges:
        return found
    sources = {r[0] for r in ranges}
    for entry in entries:
        listed = entry.get("ranges")
        if listed is not None and not any(overlaps(tuple(l[:3]), r) for l in listed if l[0] in sources for r in ranges):
            continue
        with pa.memory_map(str(out / entry["path"])) as source:
            table = pa.ipc.open_file(source).read_all().select(["chunk_id", "doc_id", "source", "record_index"])
        keys = row_key(table)
        for rng in ranges:
            mask = pc.and_(pc.equal(table["source"], rng[0]), pc.greater_equal(table["record_index"], rng[1]))
            if rng[2] is not None:
                mask = pc.and_(mask, pc.less(table["record_index"], rng[2]))
            found[rng].update(keys.filter(mask).to_pylist())
    return found
