"""The manifest's `counts`: totals over its shard entries, kept up to date entry by entry."""
from __future__ import annotations

from collections import Counter


def empty_counts() -> dict:
    return {"documents": 0, "chunks": 0, "accepted": 0, "tokens": 0, "rejected": 0, "excluded": 0,
            "rejects_by_reason": {}, "exclusions_by_reason": {}}


def add_entry(counts: dict, entry: dict, listing: str) -> None:
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


def count_entries(data: dict) -> dict:
    """Recount everything from the shard lists (on load, after a journal replay or a repair)."""
    counts = empty_counts()
    for listing in ("shards", "rejected"):
        for entry in data[listing]:
            add_entry(counts, entry, listing)
    return counts
