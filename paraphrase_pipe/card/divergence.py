"""Token-distribution divergence, a corpus measure on the output (not a filter): Jensen–Shannon divergence
(base 2, so in [0, 1]) between the unigram / bigram distribution of paraphrases and that of their source
chunks, under the build tokenizer. The card and `drift.json` call it drift.

Measured on the output, not gated: before filtering (every paraphrase that reached the filter) and after
(only the accepted ones), both against the same source sample (the originals of every paraphrased chunk), per
input shard (the `source` file, e.g. SlimPajama's chunk1/example_train_0.jsonl.zst) and overall. Counts are
exact and merge by addition, so the overall value is the divergence of the pooled counts, not an average of
shard values. Memory holds one input shard's counts plus the pooled ones.

A plug-in JS estimate is biased upwards by small samples (two random halves of the same 1,039 sample chunks:
bigram JS 0.24 bits; a 5% subsample: 0.52), so "after filtering" (fewer paraphrases, against all originals) can
look worse through size alone. `closeness` therefore compares size-matched samples — accepted paraphrases against
their own originals, rejected against theirs — and reports a split-half null beside each figure.
"""
from __future__ import annotations

import hashlib
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


def closeness(pairs: list[tuple[np.ndarray, np.ndarray]], n: int, splits: int = 20, seed: int = 0) -> dict | None:
    """Size-matched divergence with its null: over `splits` random halvings of these (original, paraphrase)
    pairs, JS(paraphrases of one half || originals of the other) against JS(originals of one half || originals
    of the other). Both sides compare the same number of disjoint chunks, so sample size and chunk-to-chunk
    variety bias them alike and the gap is what paraphrasing adds. None below 4 pairs."""
    if len(pairs) < 4:
        return None
    rng = np.random.default_rng(seed)
    measured, null = [], []
    for _ in range(splits):
        order = rng.permutation(len(pairs))
        left, right = order[: len(pairs) // 2], order[len(pairs) // 2 :]
        reference = Counts.of([pairs[i][0] for i in right], n)
        measured.append(js_divergence(Counts.of([pairs[i][1] for i in left], n), reference))
        null.append(js_divergence(Counts.of([pairs[i][0] for i in left], n), reference))
    value, high = float(np.mean(measured)), float(np.quantile(null, 0.95))
    return {"chunks": len(pairs), "divergence": round(value, 6), "null_mean": round(float(np.mean(null)), 6),
            "null_p95": round(high, 6), "beyond_null": bool(value > high)}


class TokenDivergence:
    """Measures one input shard at a time and pools its counts for the overall figure; keeps a bounded,
    order-independent sample of pairs (the `SAMPLE` smallest hashes of the original) per group for `closeness`."""

    POOL_EVERY = 64  # merge pending count tables after this many shards (bounded memory, one sort per merge)
    SAMPLE = 1000  # pairs per group (accepted / rejected) for the size-matched closeness and its null

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.per_source: dict[str, dict] = {}
        self._pool: dict[tuple[str, str], list[Counts]] = {}
        self._sample: dict[str, list[tuple[bytes, np.ndarray, np.ndarray]]] = {"accepted": [], "rejected": []}

    def _keep(self, group: str, originals: list[str], orig_ids: list, para_ids: list) -> None:
        sample = self._sample[group]
        for text, o, p in zip(originals, orig_ids, para_ids):
            sample.append((hashlib.sha256(text.encode()).digest(), np.asarray(o, np.int64), np.asarray(p, np.int64)))
        sample.sort(key=lambda item: item[0])
        del sample[self.SAMPLE :]

    def measure(self, name: str, pairs: pa.Table) -> None:
        """Every paraphrased chunk of input shard `name`: `original`, `paraphrase`, `accepted` (bool)."""
        encode = self.tokenizer.backend.encode_batch
        orig_ids = [e.ids for e in encode(pairs["original"].to_pylist(), add_special_tokens=False)]
        para_ids = [e.ids for e in encode(pairs["paraphrase"].to_pylist(), add_special_tokens=False)]
        accepted = pairs["accepted"].to_pylist()
        kept = [ids for ids, ok in zip(para_ids, accepted) if ok]
        originals = pairs["original"].to_pylist()
        for group, wanted in (("accepted", True), ("rejected", False)):
            chosen = [i for i, ok in enumerate(accepted) if ok == wanted]
            self._keep(group, [originals[i] for i in chosen], [orig_ids[i] for i in chosen], [para_ids[i] for i in chosen])
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
        """{"rows", "accepted", "overall": {order: {before, after}}, "closeness": {group: {order: closeness()}},
        "per_source": {name: {rows, accepted, order: ...}}}"""
        overall = {}
        if self.per_source:
            for order in ORDERS:
                overall[order] = _divergences({stage: Counts.merge(self._pool[(order, stage)]) for stage in ("source", "before", "after")})
        rows = sum(r["rows"] for r in self.per_source.values())
        accepted = sum(r["accepted"] for r in self.per_source.values())
        near = {group: {order: closeness([(o, p) for _, o, p in sample], n) for order, n in ORDERS.items()}
                for group, sample in self._sample.items()}
        return {"rows": rows, "accepted": accepted, "overall": overall, "closeness": near, "per_source": dict(sorted(self.per_source.items()))}
