"""Token-exact chunking with the trainer's tokenizer.

Each document is tokenized once (Rust, batched, with character offsets). A chunk ends at the last sentence or
paragraph boundary within `boundary_tolerance * chunk` tokens before the limit, else exactly at the limit, never
between two tokens that share a character (byte-level BPE splits multi-byte characters). Chunks tile the document:
their texts concatenate back to it, and `n_tokens` is the exact token count of the span.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.ids import chunk_id
from paraphrase_pipe.schema import ROW_SCHEMA, conform
from paraphrase_pipe.tokenizer import LoadedTokenizer, load_tokenizer

# End of a sentence (punctuation, optional closing quotes/brackets) or a line break, then the whitespace after it.
BOUNDARY = re.compile(r"(?:[.!?][\"'”’)\]]*|\n)\s*")


def _boundary_tokens(text: str, starts: np.ndarray) -> np.ndarray:
    """Mask of tokens that begin a new sentence/paragraph: their start offset lies in a boundary's whitespace."""
    spans = np.array([(m.start(), m.end()) for m in BOUNDARY.finditer(text)], dtype=np.int64).reshape(-1, 2)
    if not len(spans):
        return np.zeros(len(starts), dtype=bool)
    # a token starts a sentence when the boundary punctuation ended at or before its start, and only whitespace
    # separates them: start in (m.start, m.end]
    idx = np.searchsorted(spans[:, 0], starts, side="left") - 1
    ok = idx >= 0
    hit = np.zeros(len(starts), dtype=bool)
    hit[ok] = starts[ok] <= spans[idx[ok], 1]
    return hit


def _cuttable(offsets: np.ndarray, words: np.ndarray, text: str) -> np.ndarray:
    """Token starts where a cut keeps the token count exact when each chunk is re-tokenized alone: not inside a
    character, not inside a pre-token (word), and not right after whitespace (a trailing whitespace run
    pre-tokenizes differently at the end of a string)."""
    n = len(offsets)
    starts, ends = offsets[:, 0], offsets[:, 1]
    can_cut = np.ones(n + 1, dtype=bool)
    prev_end = ends[:-1]
    prev_char_is_space = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)[np.maximum(prev_end - 1, 0)]
    can_cut[1:n] = (starts[1:] >= prev_end) & (words[1:] != words[:-1]) & ~np.isin(prev_char_is_space, _SPACE_CODES)
    return can_cut


_SPACE_CODES = np.array([ord(c) for c in " \t\n\r\x0b\x0c\u00a0\u2028\u2029\u3000"], dtype=np.uint32)


def cut_points(offsets: np.ndarray, words: np.ndarray, text: str, size: int, tolerance: float) -> list[int]:
    """Token indices where chunks end (exclusive), the last one being the document end."""
    n = len(offsets)
    starts = offsets[:, 0]
    can_cut = _cuttable(offsets, words, text)
    nice = np.zeros(n + 1, dtype=bool)
    nice[:n] = _boundary_tokens(text, starts) & can_cut[:n]
    nice_idx, cut_idx = np.flatnonzero(nice), np.flatnonzero(can_cut)
    back = int(tolerance * size)
    cuts, pos = [], 0
    while n - pos > size:
        target = pos + size
        j = np.searchsorted(nice_idx, target, side="right") - 1
        if j >= 0 and nice_idx[j] > max(pos, target - back):
            cut = int(nice_idx[j])
        else:
            j = np.searchsorted(cut_idx, target, side="right") - 1
            cut = int(cut_idx[j]) if cut_idx[j] > pos else target
        cuts.append(cut)
        pos = cut
    cuts.append(n)
    return cuts


def _pieces(cuts: list[int], config: BuildConfig) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """Apply the tail policy: (kept spans, rejected spans with reason)."""
    spans = list(zip([0, *cuts[:-1]], cuts))
    start, end = spans[-1]
    rejected = []
    tail_len = end - start
    if tail_len < config.chunk:
        short = tail_len < config.min_chunk_tokens
        if config.tail == "drop" and len(spans) > 1:
            rejected.append((start, end, "short_tail"))
            spans.pop()
        elif config.tail == "merge" and short and len(spans) > 1:
            spans[-2] = (spans[-2][0], end)
            spans.pop()
        elif short:
            rejected.append((start, end, "too_short"))
            spans.pop()
    return spans, rejected


def chunk_documents(docs: pa.Table, config: BuildConfig, tokenizer: LoadedTokenizer | None = None) -> pa.Table:
    """DOCUMENT_SCHEMA -> ROW_SCHEMA. Rejected documents pass through as rows; short pieces become rejected rows."""
    tok = tokenizer or load_tokenizer(config.tokenizer)
    docs_list = docs.to_pylist()
    live = [d for d in docs_list if d["reject_reason"] is None]
    encodings = tok.backend.encode_batch([d["text"] for d in live], add_special_tokens=False)
    rows = [_passthrough(d) for d in docs_list if d["reject_reason"] is not None]
    for doc, enc in zip(live, encodings):
        text = doc["text"]
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        words = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
        if not len(offsets):
            rows.append({**_passthrough(doc), "reject_stage": "chunk", "reject_reason": "no_tokens"})
            continue
        cuts = cut_points(offsets, words, text, config.chunk, config.boundary_tolerance)
        kept, rejected = _pieces(cuts, config)
        pieces = sorted([(s, e, None) for s, e in kept] + rejected)
        for index, (s, e, reason) in enumerate(pieces):
            c0 = 0 if s == 0 else int(offsets[s - 1, 1])
            c1 = len(text) if e == len(offsets) else int(offsets[e - 1, 1])
            rows.append(
                {
                    "doc_id": doc["doc_id"],
                    "chunk_id": chunk_id(doc["doc_id"], s, e, tok.fingerprint, config.chunk),
                    "source": doc["source"],
                    "record_index": doc["record_index"],
                    "set_name": doc["set_name"],
                    "meta": doc["meta"],
                    "chunk_index": index,
                    "token_start": s,
                    "token_end": e,
                    "char_start": c0,
                    "char_end": c1,
                    "n_tokens": e - s,
                    "original": text[c0:c1],
                    "reject_stage": "chunk" if reason else None,
                    "reject_reason": reason,
                    "reject_detail": f"{e - s} tokens (chunk={config.chunk}, min={config.min_chunk_tokens}, tail={config.tail})" if reason else None,
                }
            )
    return conform(pa.Table.from_pylist(rows, schema=_ROW_INPUT), ROW_SCHEMA)


_ROW_INPUT = pa.schema([f.with_nullable(True) for f in ROW_SCHEMA])


def _passthrough(doc: dict) -> dict:
    keys = ("doc_id", "source", "record_index", "set_name", "meta", "reject_stage", "reject_reason", "reject_detail", "raw")
    return {k: doc[k] for k in keys}
