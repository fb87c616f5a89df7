"""JSON-lines records from plain, gzip or zstd files (SlimPajama ships `*.jsonl.zst`).

Hand-written rather than datatrove's JsonlReader because a bad line must become a dead-letter record with a reason
(datatrove logs and skips it), and a truncated compressed stream must be reported, not silently shortened.
"""
from __future__ import annotations

import gzip
from collections.abc import Iterator

import zstandard

BLOCK = 1 << 20


class TruncatedInput(Exception):
    """The compressed stream ended early or is corrupt."""


def _zstd_blocks(raw) -> Iterator[bytes]:
    """Decompress frame by frame, so a stream cut inside a frame is detected (stream readers report plain EOF)."""
    dctx = zstandard.ZstdDecompressor()
    obj, fed = dctx.decompressobj(), False
    while block := raw.read(BLOCK):
        while block:
            out = obj.decompress(block)
            fed = True
            if out:
                yield out
            if obj.eof:
                block, obj, fed = obj.unused_data, dctx.decompressobj(), False
            else:
                block = b""
    if fed:
        raise TruncatedInput("zstd frame ends before its end marker")


def _gzip_blocks(raw) -> Iterator[bytes]:
    with gzip.GzipFile(fileobj=raw) as stream:
        while block := stream.read(BLOCK):
            yield block


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
    except (zstandard.ZstdError, EOFError, gzip.BadGzipFile) as exc:
        raise TruncatedInput(f"{type(exc).__name__}: {exc}") from None
    if tail := b"".join(pending):
        yield tail


def iter_lines(path: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(line_index, line) for non-blank lines with start <= index < stop; TruncatedInput at a cut."""
    for index, line in enumerate(iter_physical_lines(path)):
        if stop is not None and index >= stop:
            return
        if index >= start and line.strip():
            yield index, line.rstrip(b"\r")


def count_lines(path: str) -> tuple[int, bool]:
    """(number of physical lines, whether the stream is truncated) — no JSON parsing."""
    n = 0
    try:
        for n, _ in enumerate(iter_physical_lines(path), start=1):
            pass
    except TruncatedInput:
        return n, True
    return n, False
