"""Token-exact chunking with the trainer's tokenizer.

Each document is tokenized once (Rust, batched). A chunk ends at the last sentence or line end within
`boundary_tolerance * chunk` tokens before the limit, else as close to the limit as a cut can be exact. A cut is
exact when re-tokenizing each chunk alone gives the same tokens: never inside a character (byte-level BPE splits
multi-byte characters), never inside a pre-token (word), never right after whitespace (a trailing whitespace
run pre-tokenizes differently at the end of a string). Chunks tile the document: their texts concatenate back to
it, and `n_tokens` is the exact token count of the span.

Only the tokens near each cut are inspected, so documents shorter than a chunk cost nothing beyond tokenization.
"""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.ids import chunk_id
from paraphrase_pipe.schema import ROW_SCHEMA, conform
from paraphrase_pipe.tokenizer import LoadedTokenizer, load_tokenizer

SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*$")


class _Cuts:
    """Cut-point search over one encoded document, touching only the tokens it asks about."""

    def __init__(self, encoding, text: str):
        self.enc, self.text = encoding, text

    def _exact(self, c: int) -> bool:
        enc, text = self.enc, self.text
        prev_start, prev_end = enc.token_to_chars(c - 1)
        start, _ = enc.token_to_chars(c)
        return start >= prev_end and enc.token_to_word(c) != enc.token_to_word(c - 1) and not text[prev_end - 1].isspace()

    def _sentence_start(self, c: int) -> bool:
        prev_end = self.enc.token_to_chars(c - 1)[1]
        return self.text[prev_end : prev_end + 1] == "\n" or SENTENCE_END.search(self.text[max(prev_end - 4, 0) : prev_end]) is not None

    def best(self, pos: int, target: int, lowest_nice: int) -> int:
        """The latest sentence start in [lowest_nice, target], else the latest exact cut in (pos, target]."""
        fallback = None
        for c in range(target, pos, -1):
            exact = self._exact(c)
            if exact and fallback is None:
                fallback = c
            if c < lowest_nice:
                if fallback is not None:
                    return fallback
            elif exact and self._sentence_start(c):
                return c
        return fallback if fallback is not None else target


def cut_points(encoding, text: str, size: int, tolerance: float) -> list[int]:
    """Token indices where chunks end (exclusive), the last one being the document end."""
    n = len(encoding)
    cuts, pos = [], 0
    finder = _Cuts(encoding, text)
    while n - pos > size:
        target = pos + size
        pos = finder.best(pos, target, max(pos + 1, target - int(tolerance * size)))
        cuts.append(pos)
    cuts.append(n)
    return cuts


def _pieces(cuts: list[int], config: BuildConfig) -> list[tuple[int, int, str | None]]:
    """Apply the tail policy: (start, end, reject reason or None) for every piece, in order."""
    spans = [(s, e, None) for s, e in zip([0, *cuts[:-1]], cuts)]
    start, end, _ = spans[-1]
    tail_len = end - start
    if tail_len < config.chunk:
        short = tail_len < config.min_chunk_tokens
        if config.tail == "drop" and len(spans) > 1:
            spans[-1] = (start, end, "short_tail")
        elif config.tail == "merge" and short and len(spans) > 1:
            spans[-2:] = [(spans[-2][0], end, None)]
        elif short:
            spans[-1] = (start, end, "too_short")
    return spans


_CHUNK_COLUMNS = ("doc_id", "chunk_id", "source", "record_index", "set_name", "meta", "chunk_index", "token_start",
                  "token_end", "char_start", "char_end", "n_tokens", "original", "reject_stage", "reject_reason", "reject_detail")


def chunk_documents(docs: pa.Table, config: BuildConfig, tokenizer: LoadedTokenizer | None = None) -> pa.Table:
    """DOCUMENT_SCHEMA -> ROW_SCHEMA. Rejected documents pass through as rows; short pieces become rejected rows."""
    tok = tokenizer or load_tokenizer(config.tokenizer)
    live_mask = pc.is_null(docs["reject_reason"])
    live = docs.filter(live_mask)
    texts = live["text"].to_pylist()
    encodings = tok.backend.encode_batch(texts, add_special_tokens=False)
    cols: dict[str, list] = {name: [] for name in _CHUNK_COLUMNS}
    carried = {k: live[k].to_pylist() for k in ("doc_id", "source", "record_index", "set_name", "meta")}
    for d, (text, enc) in enumerate(zip(texts, encodings)):
        n = len(enc)
        cuts = cut_points(enc, text, config.chunk, config.boundary_tolerance) if n > config.chunk else [n]
        pieces = _pieces(cuts, config) if n else [(0, 0, "no_tokens")]
        did = carried["doc_id"][d]
        for index, (s, e, reason) in enumerate(pieces):
            c0 = 0 if s == 0 else enc.token_to_chars(s - 1)[1]
            c1 = len(text) if e == n else enc.token_to_chars(e - 1)[1]
            for key in ("source", "record_index", "set_name"):
                cols[key].append(carried[key][d])
            cols["meta"].append(carried["meta"][d] if index == 0 else None)  # once per document: its first chunk
            cols["doc_id"].append(did)
            cols["chunk_id"].append(chunk_id(did, s, e, tok.fingerprint, config.chunk))
            cols["chunk_index"].append(index)
            cols["token_start"].append(s)
            cols["token_end"].append(e)
            cols["char_start"].append(c0)
            cols["char_end"].append(c1)
            cols["n_tokens"].append(e - s)
            cols["original"].append(text[c0:c1] if len(pieces) > 1 else text)
            cols["reject_stage"].append("chunk" if reason else None)
            cols["reject_reason"].append(reason)
            cols["reject_detail"].append(
                f"{e - s} tokens (chunk={config.chunk}, min={config.min_chunk_tokens}, tail={config.tail})" if reason else None
            )
    chunks = pa.table({k: pa.array(v, type=ROW_SCHEMA.field(k).type) for k, v in cols.items()})
    passed = docs.filter(pc.invert(live_mask)).select(["doc_id", "source", "record_index", "set_name", "meta", *_REJECT])
    return pa.concat_tables([conform(passed, ROW_SCHEMA), conform(chunks, ROW_SCHEMA)])


_REJECT = ("reject_stage", "reject_reason", "reject_detail", "raw")
