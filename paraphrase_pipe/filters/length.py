"""Length ratio: paraphrase tokens / original tokens, both under the build tokenizer (the trainer's), counted on
the texts with every whitespace run made one space.

A faithful rewrite of a chunk is about as long as the chunk; a much shorter one dropped content (or was cut off),
a much longer one added commentary or repeated itself. Layout is not content: a paraphrase reflows the source's
tabs, indentation and line wrapping, which cost tokens of their own, so counting them made faithful rewrites of
indented text look 10-20% shorter than they are and pushed the floor down to where it missed omissions.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from paraphrase_pipe.filters.base import Gate


class LengthGate(Gate):
    min: float | None = 0.79  # benchmarks/filter_calibration.py --calibrate
    max: float | None = 1.6

    name: ClassVar[str] = "length"
    column: ClassVar[str] = "score_length_ratio"
    low_reason: ClassVar[str] = "paraphrase_too_short"
    high_reason: ClassVar[str] = "paraphrase_too_long"

    def score(self, originals, paraphrases, tokenizer):
        counts = np.asarray(tokenizer.count([" ".join(t.split()) for t in (*originals, *paraphrases)]), dtype=np.float64)
        orig, para = counts[: len(originals)], counts[len(originals) :]
        return {self.column: para / np.maximum(orig, 1.0)}
