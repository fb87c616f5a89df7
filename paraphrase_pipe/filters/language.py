"""Language check: the paraphrase must be in the language of its source.

The source's language is detected (langdetect, seeded, so the result is deterministic); the score is the
probability the detector gives that language on the paraphrase. Sources whose language is uncertain (code,
tables, numbers: top probability below `source_confidence`) get no score, so the gate never rejects them.
"""
from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np
import pyarrow as pa

from paraphrase_pipe.filters.base import Gate, load_error


@lru_cache(maxsize=1)
def _detector():
    try:
        from langdetect import DetectorFactory, detect_langs
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError as exc:
        raise load_error("language", "langdetect", "langdetect", exc) from None
    DetectorFactory.seed = 0
    return detect_langs, LangDetectException


def languages(text: str) -> dict[str, float]:
    """Language code -> probability (empty when the text has no letters to go on)."""
    detect_langs, no_features = _detector()
    try:
        return {guess.lang: guess.prob for guess in detect_langs(text)}
    except no_features:
        return {}


class LanguageGate(Gate):
    min: float | None = 0.5
    source_confidence: float = 0.9

    name: ClassVar[str] = "language"
    column: ClassVar[str] = "score_language"
    low_reason: ClassVar[str] = "language_mismatch"
    extra_columns: ClassVar[dict[str, pa.DataType]] = {"lang_source": pa.string()}

    def score(self, originals, paraphrases, tokenizer):
        source_lang, scores = [], []
        for original, paraphrase in zip(originals, paraphrases):
            guesses = languages(original)
            lang, prob = max(guesses.items(), key=lambda kv: kv[1], default=(None, 0.0))
            if lang is None or prob < self.source_confidence:
                source_lang.append(None)
                scores.append(np.nan)
            else:
                source_lang.append(lang)
                scores.append(languages(paraphrase).get(lang, 0.0))
        return {self.column: np.asarray(scores, dtype=np.float64), "lang_source": np.asarray(source_lang, dtype=object)}
