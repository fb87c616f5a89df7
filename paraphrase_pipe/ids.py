"""Stable identities. Resume and dedup work on these ids, never on task ranks or worker counts."""
from __future__ import annotations

import hashlib
import json


def stable_hash(*parts: object, size: int = 16) -> str:
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(payload, digest_size=size).hexdigest()


def doc_id(source: str, record_index: int) -> str:
    """Readable and stable: the input file (relative to the input root) and the record's index in it."""
    return f"{source}:{record_index}"


def chunk_id(doc: str, token_start: int, token_end: int, tokenizer_fingerprint: str, chunk_size: int) -> str:
    return stable_hash(doc, token_start, token_end, tokenizer_fingerprint, chunk_size)


def sample_id(chunk: str, *, layout: str, generation: dict | None = None) -> str:
    """A sample adds what produced it: layout, and (when paraphrased) template hash, model, sampling params."""
    return stable_hash(chunk, layout, generation or {})
