"""Lexical overlap band: ROUGE-L F1 between the lower-cased word sequences of original and paraphrase
(words = runs of letters/digits, so `__mod__` is `mod`, as in the rouge-score package).

Too high means a near copy (the model learns nothing new from the pair), too low means the rewrite kept little
of the source's wording — with a semantic score that is still high this is a bold paraphrase, with a low one it
is unfaithful. The longest common subsequence uses the bit-parallel algorithm (Allison–Dix / Hyyrö) on Python
integers, so a pair of 2048-token chunks costs ~2k big-integer operations, not a 2k × 2k table.
"""
from __future__ import annotations

import re
from typing import ClassVar

import numpy as np

from paraphrase_pipe.filters.base import Gate

WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; as rouge-score's tokenizer on ASCII text


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 (beta = 1) on words."""
    ref, cand = words(reference), words(candidate)
    lcs = lcs_length(ref, cand)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


class LexicalGate(Gate):
    min: float | None = 0.2
    max: float | None = 0.85

    name: ClassVar[str] = "lexical"
    column: ClassVar[str] = "score_rouge_l"
    low_reason: ClassVar[str] = "lexical_unfaithful"
    high_reason: ClassVar[str] = "near_copy"

    def score(self, originals, paraphrases, tokenizer):
        return {self.column: np.array([rouge_l(o, p) for o, p in zip(originals, paraphrases)], dtype=np.float64)}


SENTENCE_BREAK = re.compile(r"(?<=[.!?;])[\"'”’)\]]*\s+|\n\s*\n")  # sentence or clause end before whitespace; blank line


def in_source_order(reference: str, candidate: str) -> list[str]:
    """The candidate's words with its sentences moved into the order of the source sentences they match best:
    most shared words, each weighted by 1 / the number of source sentences it occurs in (so "the" and "is" do not
    decide); a sentence that shares none stays behind the one before it. Split sentences map onto one source
    sentence and keep their order; a merged one lands at its first."""
    postings: dict[str, list[int]] = {}  # word -> the source sentences it occurs in
    for j, source in enumerate(SENTENCE_BREAK.split(reference)):
        for w in set(words(source)):
            postings.setdefault(w, []).append(j)
    sentences = [w for w in (words(s) for s in SENTENCE_BREAK.split(candidate)) if w]
    keys, last = [], 0
    for sentence in sentences:
        shared: dict[int, float] = {}
        for w in set(sentence):
            for j in postings.get(w, ()):
                shared[j] = shared.get(j, 0.0) + 1 / len(postings[w])
        if shared:
            last = max(shared, key=lambda j: (shared[j], -j))
        keys.append(last)
    return [w for _, _, sentence in sorted(zip(keys, range(len(sentences)), sentences)) for w in sentence]


def rouge_l_recall(reference: str, candidate: str) -> float:
    """ROUGE-L recall: the share of the source's words that the paraphrase keeps in order (F1 hides omissions).

    Reordering sentences is an ordinary paraphrase move, but one LCS follows one order: a faithful rewrite that
    puts the last sentence first kept all of it, yet plain ROUGE-L recall loses that sentence (on the
    calibration set shuffling a faithful paraphrase's sentences cost 0.29 on average). So the paraphrase is also
    read with its sentences in the source's order (`in_source_order`) and the better of the two LCSs counts."""
    ref = words(reference)
    if not ref:
        return float("nan")
    return max(lcs_length(ref, words(candidate)), lcs_length(ref, in_source_order(reference, candidate))) / len(ref)


class RecallGate(Gate):
    """A floor on ROUGE-L recall: a rewrite that left out part of the source keeps fewer of its words."""

    min: float | None = 0.43  # benchmarks/filter_calibration.py --calibrate

    name: ClassVar[str] = "recall"
    column: ClassVar[str] = "score_rouge_l_recall"
    low_reason: ClassVar[str] = "content_dropped"

    def score(self, originals, paraphrases, tokenizer):
        return {self.column: np.array([rouge_l_recall(o, p) for o, p in zip(originals, paraphrases)], dtype=np.float64)}
