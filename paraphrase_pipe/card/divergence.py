"""Token-distribution divergence, a corpus measure on the output (not a filter): Jensen–Shannon divergence
(base 2, so in [0, 1]) between the unigram / bigram distribution of paraphrases and that of their source
chunks, under the build tokenizer. The card and `drift.json` call it drift.

Measured on the output, not gated: before filtering (every paraphrase that reached the filter) and after
(only the accepted ones), both against the same source sample (the originals of every paraphrased chunk), per
input shard (the `source` file, e.g. SlimPajama's chunk1/example_train_0.jsonl.zst) and overall. Counts are
exact and merge by addition, so the overall value is the divergence of the pooled counts, not an average of
shard values. Memory holds one input shard's counts plus the pooled ones.
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

    @classmethod
    def merge(cls, parts: list[Counts]) -> Counts:
        """The sum of several count tables, in one sort."""
        keys = np.concatenate([p.keys for p in parts]) if parts else np.zeros(0, np.int64)
        values = np.concatenate([p.values for p in parts]) if parts else np.zeros(0, np.int64)
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        return cls(keys[starts], np.add.reduceat(values, starts) if len(keys) else values)

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


def _divergences(groups: dict[str, Counts]) -> dict[str, float | None]:
    """{before, after}: each paraphrase group against the source group; None when a side is empty."""
    out = {}
    for stage in ("before", "after"):
        value = js_divergence(groups[stage], groups["source"])
        out[stage] = None if np.isnan(value) else round(value, 6)
    return out


class TokenDivergence:
    """Measures one input shard at a time and pools its counts for the overall figure."""

    POOL_EVERY = 64  # merge pending count tables after this many shards (bounded memory, one sort per merge)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.per_source: dict[str, dict] = {}
        self._pool: dict[tuple[str, str], list[Counts]] = {}

    def measure(self, name: str, pairs: pa.Table) -> None:
        """Every paraphrased chunk of input shard `name`: `original`, `paraphrase`, `accepted` (bool)."""
        encode = self.tokenizer.backend.encode_batch
        orig_ids = [e.ids for e in encode(pairs["original"].to_pylist(), add_special_tokens=False)]
        para_ids = [e.ids for e in encode(pairs["paraphrase"].to_pylist(), add_special_tokens=False)]
        accepted = pairs["accepted"].to_pylist()
        kept = [ids for ids, ok in zip(para_ids, accepted) if ok]
        report = {"rows": len(pairs), "accepted": len(kept)}
        for order, n in ORDERS.items():
            groups = {"source": Counts.of(orig_ids, n), "before": Counts.of(para_ids, n), "after": Counts.of(kept, n)}
            report[order] = _divergences(groups)
            for stage, counts in groups.items():
                pending = self._pool.setdefault((order, stage), [])
                pending.append(counts)
                if len(pending) >= self.POOL_EVERY:
                    self._pool[(order, stage)] = [Counts.merge(pending)]
        self.per_source[name] = report

    def report(self) -> dict:
        """{"rows", "accepted", "overall": {order: {before, after}}, "per_source": {name: {rows, accepted, order: ...}}}"""
        overall = {}
        if self.per_source:
            for order in ORDERS:
                overall[order] = _divergences({stage: Counts.merge(self._pool[(order, stage)]) for stage in ("source", "before", "after")})
        rows = sum(r["rows"] for r in self.per_source.values())
        accepted = sum(r["accepted"] for r in self.per_source.values())
        return {"rows": rows, "accepted": accepted, "overall": overall, "per_source": dict(sorted(self.per_source.items()))}
