"""Token-exact chunking with the trainer's tokenizer.

Each document is tokenized once (Rust, batched). `chunk` is a maximum: no kept chunk is longer. A chunk ends at
the last sentence or line end within `boundary_tolerance * chunk` tokens before the limit, else at the last word
boundary there, else as close to the limit as a cut can be exact. A sentence end is `.`, `!` or `?` (and closing
quotes/brackets) followed by whitespace or the end of the text, so `3.10`, `ocert.org` or `os.path` never end one.
A cut is exact when re-tokenizing each chunk alone gives the same tokens: never inside a character (byte-level BPE
splits multi-byte characters), never inside a pre-token (word), never right after whitespace (a trailing
whitespace run pre-tokenizes differently at the end of a string). A stretch with no exact cut within `chunk`
tokens (one pre-token longer than a chunk, e.g. a long run of emoji) runs to the next exact cut and is
dead-lettered as `no_exact_cut`. Chunks tile the document: their texts concatenate back to it, and `n_tokens` is
the exact token count of the span.

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
SENTENCE, WORD, ANY = 2, 1, 0  # how good a place to cut is


class _Cuts:
    """Cut-point search over one encoded document, touching only the tokens it asks about."""

    def __init__(self, encoding, text: str):
        self.enc, self.text = encoding, text

    def exact(self, c: int) -> bool:
        enc, text = self.enc, self.text
        prev_start, prev_end = enc.token_to_chars(c - 1)
        start, _ = enc.token_to_chars(c)
        return start >= prev_end and enc.token_to_word(c) != enc.token_to_word(c - 1) and not text[prev_end - 1].isspace()

    def kind(self, c: int) -> int:
        """SENTENCE before a line break or after a sentence end that whitespace follows, WORD before whitespace."""
        end = self.enc.token_to_chars(c - 1)[1]
        after = self.text[end : end + 1]
        if after == "\n" or (not after.strip() and SENTENCE_END.search(self.text[max(end - 4, 0) : end])):
            return SENTENCE
        return WORD if after.isspace() else ANY

    def next_exact(self, c: int) -> int:
        n = len(self.enc)
        while c < n and not self.exact(c):
            c += 1
        return c

    def best(self, pos: int, target: int, lowest_nice: int) -> int | None:
        """The latest sentence start in [lowest_nice, target], else the latest word boundary there, else the latest
        exact cut in (pos, target]; None when there is none."""
        word = latest = None
        for c in range(target, pos, -1):
            if not self.exact(c):
                continue
            if c < lowest_nice:
                return word or latest or c
            latest = latest or c
            kind = self.kind(c)
            if kind == SENTENCE:
                return c
            if kind == WORD:
                word = word or c
        return word or latest

    def balanced(self, start: int, end: int, size: int, tolerance: float) -> int | None:
        """A cut of [start, end) into two pieces of at most `size` tokens, as even as the text allows: the sentence
        start nearest the middle within `tolerance * size` of it, else the nearest word boundary there, else the
        nearest exact cut; None when there is none."""
        lo, hi, mid = max(start + 1, end - size), min(start + size, end - 1), (start + end) // 2
        band = int(tolerance * size)
        word = nearest = None
        for d in range(max(mid - lo, hi - mid) + 1):
            for c in (mid - d, mid + d) if d else (mid,):
                if not lo <= c <= hi or not self.exact(c):
                    continue
                nearest = nearest or c
                if d <= band:
                    kind = self.kind(c)
                    if kind == SENTENCE:
                        return c
                    if kind == WORD:
                        word = word or c
            if d >= band and (word or nearest):
                return word or nearest
        return word or nearest


Span = tuple[int, int, "str | None"]  # (token start, token end, reject reason)


def split_document(encoding, text: str, config: BuildConfig) -> list[Span]:
    """Every piece of one document in order, the tail policy applied."""
    n, size = len(encoding), config.chunk
    if not n:
        return [(0, 0, "no_tokens")]
    finder = _Cuts(encoding, text)
    spans: list[Span] = []
    pos = 0
    while n - pos > size:
        target = pos + size
        cut = finder.best(pos, target, max(pos + 1, target - int(config.boundary_tolerance * size)))
        if cut is None:  # no exact cut within a chunk: the stretch up to the next one cannot be a chunk
            cut = finder.next_exact(target)
            spans.append((pos, cut, "no_exact_cut"))
        else:
            spans.append((pos, cut, None))
        pos = cut
    if pos < n:
        spans.append((pos, n, None))
    return _apply_tail(spans, finder, config)


def _apply_tail(spans: list[Span], finder: _Cuts, config: BuildConfig) -> list[Span]:
    """`merge`: a last piece shorter than `min_chunk_tokens` joins the previous chunk, and the two are re-cut into
    two balanced pieces when together they exceed `chunk`; `keep`: it is dead-lettered; `drop`: any last piece
    shorter than `chunk` is dead-lettered (a document shorter than `chunk` included)."""
    start, end, reason = spans[-1]
    length = end - start
    if reason or length >= config.chunk:
        return spans
    short = length < config.min_chunk_tokens
    previous = spans[-2] if len(spans) > 1 and spans[-2][2] is None else None
    if config.tail == "merge" and short and previous:
        begin = previous[0]
        if end - begin <= config.chunk:
            return [*spans[:-2], (begin, end, None)]
        cut = finder.balanced(begin, end, config.chunk, config.boundary_tolerance)
        if cut is not None:
            return [*spans[:-2], (begin, cut, None), (cut, end, None)]
    if config.tail == "drop" and (len(spans) > 1 or not short):
        return [*spans[:-1], (start, end, "short_tail")]
    if short:
        return [*spans[:-1], (start, end, "too_short")]
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
        pieces = split_document(enc, text, config)
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
