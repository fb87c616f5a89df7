"""Packing and sampling: fixed-length windows over documents, with document boundaries kept.

Documents of a source are laid end to end in a seeded order; window k covers tokens [k*L, k*L + L] of that
stream. Each sample carries `seq_idx` (which document each position belongs to, 0, 1, ... within the window)
so the model resets its state at boundaries, and targets that would cross a boundary are masked (-100).

Sampling is a pure function of a small state (samples drawn per source), so a run restarts at the exact sample
where it stopped, with any number of ranks: the global order never depends on the world size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from paraphrase_pipe.models.context import mask_cross_document
from paraphrase_pipe.train.loss import IGNORE


class PackedWindows:
    """Windows of `seq_len + 1` tokens over the selected rows of a tokenized source."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, rows: np.ndarray, seq_len: int,
                 seed: int | None = None):
        rows = rows[offsets[rows + 1] > offsets[rows]]  # empty rows (null text) carry no tokens
        if seed is not None:
            rows = np.random.default_rng([seed, 0x5EED]).permutation(rows)
        self.tokens, self.seq_len = tokens, seq_len
        self.starts = offsets[rows]
        self.ends = np.cumsum(offsets[rows + 1] - self.starts)  # end of each doc in the stream
        total = int(self.ends[-1]) if len(rows) else 0
        self.n = max(0, (total - 1) // seq_len)

    def __len__(self) -> int:
        return self.n

    def targets(self, k: int) -> int:
        """Unmasked targets of window k (seq_len minus its document boundaries), without reading tokens."""
        lo = k * self.seq_len
        return self.seq_len - int(np.searchsorted(self.ends, lo + self.seq_len, side="right")
                                  - np.searchsorted(self.ends, lo, side="right"))

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and per-token document index (relative, from 0) of window k."""
        lo, hi = k * self.seq_len, k * self.seq_len + self.seq_len + 1
        first = int(np.searchsorted(self.ends, lo, side="right"))
        last = int(np.searchsorted(self.ends, hi - 1, side="right"))
        pieces, docs = [], []
        for j, d in enumerate(range(first, last + 1)):
            doc_lo = self.ends[d - 1] if d else 0
            a, b = max(lo, doc_lo) - doc_lo, min(hi, self.ends[d]) - doc_lo
            pieces.append(self.tokens[self.starts[d] + a:self.starts[d] + b])
            docs.append(np.full(b - a, j, dtype=np.int32))
        return np.concatenate(pieces).astype(np.int64), np.concatenate(docs)


def make_sample(tokens: np.ndarray, docs: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs, next-token targets (masked across document boundaries) and seq_idx for one window."""
    targets = mask_cross_document(tokens[1:].copy(), docs, IGNORE)
    return {"input_ids": tokens[:-1], "targets": targets, "seq_idx": docs[:-1]}


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}


@dataclass
class Mixture:
    """Weighted, deterministic interleaving of sources; each source reshuffled every epoch by seed.

    The source of each draw is the one furthest behind its share (stride scheduling), so the mix is exact
    at every prefix, and the state is just the number of draws per source.
    """

    sources: list[PackedWindows]
    weights: list[float]
    seed: int
    counts: list[int] = field(default_factory=list)
    _perms: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        total = sum(self.weights)
        self.weights = [w / total for w in self.weights]
        self.counts = self.counts or [0] * len(self.sources)
        for src, w in zip(self.sources, self.weights):
            if w > 0 and len(src) == 0:
                raise ValueError("a data source has fewer tokens than one sequence; lower --seq-len or add data")

    def _window(self, s: int, k: int) -> int:
        n = len(self.sources[s])
        epoch = k // n
        if self._perms.get(s, (None,))[0] != epoch:
            self._perms[s] = (epoch, np.random.default_rng([self.seed, s, epoch]).permutation(n))
        return int(self._perms[s][1][k % n])

    def draw(self, n: int) -> list[tuple[int, int]]:
        """The next n (source, window) picks, advancing the state."""
        picks = []
        for _ in range(n):
            done = sum(self.counts) + 1
            s = max(range(len(self.sources)), key=lambda i: (self.weights[i] * done - self.counts[i], -i))
            picks.append((s, self._window(s, self.counts[s])))
            self.counts[s] += 1
        return picks

    def targets(self, picks: list[tuple[int, int]]) -> int:
        return sum(self.sources[s].targets(k) for s, k in picks)

    def batch(self, picks: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        return collate([make_sample(*self.sources[s].window(k)) for s, k in picks])

    def state_dict(self) -> dict:
        return {"counts": list(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["counts"]) != len(self.sources):
            raise ValueError(f"checkpoint has {len(state['counts'])} data sources, this run {len(self.sources)}")
        self.counts = list(state["counts"])


def rank_slice(picks: list, micro_batch: int, accum: int, rank: int, world: int) -> list[list]:
    """Split one optimizer step's global picks into this rank's micro-batches.

    Micro-batch m of rank r holds picks [(m*world + r)*micro_batch, ...+micro_batch): a single process with
    `accum * world` micro-batches sees exactly the same samples in the same order.
    """
    return [picks[(m * world + rank) * micro_batch:(m * world + rank + 1) * micro_batch] for m in range(accum)]
