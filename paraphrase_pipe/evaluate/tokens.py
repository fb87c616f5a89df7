"""Prompts are assembled from token ids, not strings, so a context can be cut to an exact token length and a piece
of text (a key, an answer) has the same ids wherever it appears.
"""

from __future__ import annotations

from functools import lru_cache


def encode(tokenizer, text: str) -> list[int]:
    """Ids of `text` alone, without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before any text (a BOS for Llama-style tokenizers, nothing for GPT-2's)."""
    return list(_prefix(tokenizer))


@lru_cache(maxsize=16)
def _prefix(tokenizer) -> tuple[int, ...]:
    full, bare = tokenizer("a")["input_ids"], encode(tokenizer, "a")
    return tuple(full[: len(full) - len(bare)]) if full[len(full) - len(bare):] == bare else ()


def fit(prefix: list[int], context: list[int], question: list[int], length: int) -> list[int]:
    """prefix + the head of `context` + `question`, at most `length` ids: the document is cut before the question,
    as the JRT/Based recall benchmarks do; a question longer than the budget keeps its end."""
    room = length - len(prefix) - len(question)
    if room >= 0:
        return prefix + context[:room] + question
    return prefix + question[len(question) - max(0, length - len(prefix)):]
