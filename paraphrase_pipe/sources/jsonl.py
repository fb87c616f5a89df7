"""JSON-lines records from plain, gzip or zstd files (SlimPajama ships `*.jsonl.zst`).

Hand-written rather than datatrove's JsonlReader because a bad line must become a dead-letter record with a reason
(datatrove logs and skips it), and a truncated compressed stream must be reported, not silently shortened.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator

BLOCK = 1 << 20


class TruncatedInput(Exception):
    """The compressed stream ended early or is corrupt. `tail`: the bytes of the last, incomplete line decoded
    before the cut; `index`: that line's index (set by `iter_lines`)."""

    def __init__(self, detail: str, tail: bytes = b"", index: int = 0):
        super().__init__(detail)
        self.tail, self.index = tail, index


def _undecodable(raw, what: str, good_until: int | None = None) -> TruncatedInput:
    """The cut, located in the compressed file: everything before `good_until` was decoded and read."""
    size = raw.seek(0, 2)
    if good_until is None:
        return TruncatedInput(f"{what} after {size:,} compressed bytes")
    return TruncatedInput(f"{what}: compressed bytes {good_until:,}-{size:,} of {size:,} cannot be decoded")


def _decoded_blocks(raw, new_decoder, errors, kind: str) -> Iterator[bytes]:
    """Decompress frame by frame (gzip member by member) incrementally, so every byte that decodes is yielded before
    a cut is reported, and a stream cut inside a frame is detected (stream readers report plain EOF, and the
    standard GzipFile drops the last block it decoded when it meets the cut)."""
    obj, fed, offset = new_decoder(), False, 0
    while block := raw.read(BLOCK):
        start, offset = offset, offset + len(block)
        while block:
            try:
                out = obj.decompress(block)
            except errors as exc:
                raise _undecodable(raw, f"corrupt {kind} data ({exc})", start) from None
            fed = True
            if out:
                yield out
            if obj.eof:
                block, obj, fed = obj.unused_data, new_decoder(), False
            else:
                block = b""
    if fed:
        raise _undecodable(raw, f"{kind} stream ends before its end marker (truncated file)")


def _zstd_blocks(raw) -> Iterator[bytes]:
    import zstandard  # only for .zst inputs: processes that read shards (the trainer) need not have it

    return _decoded_blocks(raw, zstandard.ZstdDecompressor().decompressobj, zstandard.ZstdError, "zstd")


def _gzip_blocks(raw) -> Iterator[bytes]:
    return _decoded_blocks(raw, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), zlib.error, "gzip")


def _plain_blocks(raw) -> Iterator[bytes]:
    while block := raw.read(BLOCK):
        yield block


def iter_physical_lines(path: str) -> Iterator[bytes]:
    lower = path.lower()
    blocks = _zstd_blocks if lower.endswith((".zst", ".zstd")) else _gzip_blocks if lower.endswith(".gz") else _plain_blocks
    pending: list[bytes] = []
    try:
        with open(path, "rb") as raw:
            for block in blocks(raw):
                parts = block.split(b"\n")
                if len(parts) == 1:
                    pending.append(parts[0])
                    continue
                pending.append(parts[0])
                yield b"".join(pending)
                yield from parts[1:-1]
                pending = [parts[-1]]
    except TruncatedInput as exc:
        exc.tail = b"".join(pending)  # the cut line: dead-lettered with the cut, never dropped
        if exc.tail:
            exc.args = (f"{exc.args[0]}; its last {len(exc.tail):,} decoded bytes, an incomplete line, are kept in `raw`",)
        raise
    if tail := b"".join(pending):
        yield tail


def iter_lines(path: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(line_index, line) for non-blank lines with start <= index < stop; TruncatedInput at a cut (its `index`:
    the line the cut falls in)."""
    seen = 0
    try:
        for line in iter_physical_lines(path):
            index, seen = seen, seen + 1
            if stop is not None and index >= stop:
                return
            if index >= start and line.strip():
                yield index, line.rstrip(b"\r")
    except TruncatedInput as exc:
        exc.index = max(seen, start)
        raise


def count_lines(path: str) -> tuple[int, bool]:
    """(number of physical lines, whether the stream is truncated) — no JSON parsing."""
    n = 0
    try:
        for n, _ in enumerate(iter_physical_lines(path), start=1):
            pass
    except TruncatedInput:
        return n, True
    return n, False
