"""Weakest-section similarity: every section of the source must have a close match somewhere in the paraphrase.

The semantic gate compares whole texts (mean-pooled windows), so a rewrite that drops a third of the source
still scores high. Here the source is cut into sections of `window_words` words (a short tail joins the previous
section), the paraphrase into windows of the same size overlapping by half (a section's content may straddle a
window boundary there), all embedded with the semantic gate's model; a section's score is the cosine of its best
paraphrase window, and the pair's score is the minimum over sections: the part of the source the paraphrase
kept least of.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from paraphrase_pipe.filters.base import Gate, resolve_device
from paraphrase_pipe.filters.semantic import load_embedder


def sections(text: str, size: int) -> list[str]:
    """Consecutive pieces of `size` words; a tail shorter than half a piece joins the one before."""
    words = text.split()
    starts = list(range(0, len(words), size))
    if len(starts) > 1 and len(words) - starts[-1] < size // 2:
        starts.pop()
    return [" ".join(words[s : e]) for s, e in zip(starts, starts[1:] + [len(words)])]


def overlapping(text: str, size: int) -> list[str]:
    words = text.split()
    step = max(size // 2, 1)
    return [" ".join(words[s : s + size]) for s in range(0, max(len(words) - step, 1), step)] if words else []


class SectionGate(Gate):
    """Off by default: its calibrated floor did not carry over to the test fixture's shorter chunks (README)."""

    enabled: bool = False
    min: float | None = 0.56  # benchmarks/filter_calibration.py --calibrate (with window_words)
    model: str = "all-MiniLM-L6-v2"
    device: str = "auto"
    window_words: int = 32
    batch_size: int = 64

    name: ClassVar[str] = "sections"
    column: ClassVar[str] = "score_weakest_section"
    low_reason: ClassVar[str] = "section_dropped"

    def score(self, originals, paraphrases, tokenizer):
        pieces, spans = [], []
        for original, paraphrase in zip(originals, paraphrases):
            src, para = sections(original, self.window_words), overlapping(paraphrase, self.window_words)
            spans.append((len(pieces), len(src), len(para)))
            pieces += src + para
        if not pieces:
            return {self.column: np.full(len(originals), np.nan)}
        model = load_embedder(self.model, resolve_device(self.device))
        vectors = model.encode(pieces, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        scores = np.full(len(originals), np.nan)
        for i, (start, n_src, n_para) in enumerate(spans):
            if not n_src:
                continue  # an empty source has nothing to lose
            if not n_para:
                scores[i] = 0.0  # an empty paraphrase kept nothing
                continue
            src, para = vectors[start : start + n_src], vectors[start + n_src : start + n_src + n_para]
            scores[i] = float((src @ para.T).max(axis=1).min())
        return {self.column: scores}
