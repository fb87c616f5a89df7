"""Token-distribution drift: Jensen–Shannon divergence (base 2, so in [0, 1]) between the unigram / bigram
distribution of paraphrases and that of their source chunks, under the build tokenizer.

Measured on the output, not gated: before filtering (every paraphrase the engine returned) and after (only the
accepted ones), both against the same source sample (the originals of every paraphrased chunk), overall and per
input shard (the `source` file, e.g. SlimPajama's chunk1/example_train_0.jsonl.zst). Counts are exact and merge
by addition, so the overall value is the divergence of the pooled counts, not an average of shard values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

ORDERS = {"unigram": 1, "bigram": 2}


@dataclass(frozen=True)
class Counts:
    """Sparse n-gram counts: sorted unique int64 keys (token id, or id pair packed in 64 bits) and their counts."""

    keys: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, sequences: list[list[int]], n: int) -> Counts:
        grams = [_grams(np.asarray(seq, dtype=np.int64), n) for seq in sequences]
        keys, values = np.unique(np.concatenate(grams) if grams else np.zeros(0, np.int64), return_counts=True)
        return cls(keys, values.astype(np.int64))

    def __add__(self, other: Counts) -> Counts:
        keys = np.union1d(self.keys, other.keys)
        return Counts(keys, self.aligned(keys) + other.aligned(keys))

    def aligned(self, keys: np.ndarray) -> np.ndarray:
        """Counts at `keys` (a sorted superset of ours), zero where we have none."""
        out = np.zeros(len(keys), dtype=np.int64)
        out[np.searchsorted(keys, self.keys)] = self.values
        return out

    @property
    def total(self) -> int:
        return int(self.values.sum())


def _grams(ids: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return ids
    if n == 2:
        return (ids[:-1] << 32) | ids[1:] if len(ids) > 1 else np.zeros(0, np.int64)
    raise ValueError(f"n-gram order {n} not supported (1 or 2)")


def js_divergence(p: Counts, q: Counts) -> float:
    """JS(P || Q) in bits. NaN when either side is empty."""
    if not p.total or not q.total:
        return float("nan")
    keys = np.union1d(p.keys, q.keys)
    pp, qq = p.aligned(keys) / p.total, q.aligned(keys) / q.total
    m = (pp + qq) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, 0.5 * kl(pp) + 0.5 * kl(qq))


def _divergence(source: Counts, paraphrases: Counts) -> float | None:
    value = js_divergence(paraphrases, source)
    return None if np.isnan(value) else round(value, 6)


class Drift:
    """Accumulates n-gram counts shard by shard (a build's output never has to fit in memory)."""

    STAGES = ("source", "before", "after")

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.counts: dict[tuple[str, str, str], Counts] = {}
        self.rows: dict[str, list[int]] = {}

    def add(self, pairs: pa.Table) -> None:
        """`pairs`: paraphrased chunks with `source`, `original`, `paraphrase` and `accepted` (bool)."""
        encode = self.tokenizer.backend.encode_batch
        orig_ids = [e.ids for e in encode(pairs["original"].to_pylist(), add_special_tokens=False)]
        para_ids = [e.ids for e in encode(pairs["paraphrase"].to_pylist(), add_special_tokens=False)]
        accepted, sources = pairs["accepted"].to_pylist(), pairs["source"].to_pylist()
        for name in set(sources):
            idx = [i for i, s in enumerate(sources) if s == name]
            kept = [i for i in idx if accepted[i]]
            seen = self.rows.setdefault(name, [0, 0])
            seen[0] += len(idx)
            seen[1] += len(kept)
            for order, n in ORDERS.items():
                groups = {"source": (orig_ids, idx), "before": (para_ids, idx), "after": (para_ids, kept)}
                for stage, (ids, which) in groups.items():
                    counts = Counts.of([ids[i] for i in which], n)
                    key = (name, order, stage)
                    self.counts[key] = self.counts[key] + counts if key in self.counts else counts

    def _pooled(self, sources: list[str], order: str) -> dict[str, float | None]:
        pooled = {}
        for stage in self.STAGES:
            parts = [self.counts[(s, order, stage)] for s in sources]
            pooled[stage] = sum(parts[1:], parts[0])
        return {stage: _divergence(pooled["source"], pooled[stage]) for stage in ("before", "after")}

    def report(self) -> dict:
        """{"rows", "accepted", "overall": {order: {before, after}}, "per_source": {source: {rows, accepted, order: ...}}}"""
        names = sorted(self.rows)
        per_source = {
            name: {"rows": self.rows[name][0], "accepted": self.rows[name][1], **{o: self._pooled([name], o) for o in ORDERS}}
            for name in names
        }
        overall = {o: self._pooled(names, o) for o in ORDERS} if names else {}
        rows = sum(r[0] for r in self.rows.values())
        return {"rows": rows, "accepted": sum(r[1] for r in self.rows.values()), "overall": overall, "per_source": per_source}
