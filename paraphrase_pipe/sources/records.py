"""Turning one raw input record into a document row, an exclusion, or a dead-letter row with a reason."""
from __future__ import annotations

import json
import zlib
from typing import Any

from paraphrase_pipe.ids import doc_id


class RecordPolicy:
    """Which records become documents: set filter, deterministic sample, size cap."""

    def __init__(self, sets: list[str], sample_fraction: float, max_doc_chars: int, seed: int):
        self.keep = {s for s in sets if not s.startswith("-")}
        self.drop = {s[1:] for s in sets if s.startswith("-")}
        self.sample_fraction = sample_fraction
        self.max_doc_chars = max_doc_chars
        self.seed = seed

    def exclusion(self, did: str, set_name: str | None) -> str | None:
        if (self.keep and set_name not in self.keep) or (set_name in self.drop):
            return "excluded_by_set"
        if self.sample_fraction < 1.0:
            bucket = zlib.crc32(f"{self.seed}:{did}".encode()) / 0xFFFFFFFF
            if bucket >= self.sample_fraction:
                return "excluded_by_sample"
        return None


def _encodable(text: str) -> str:
    """`text` if it is valid Unicode (no lone surrogates, which UTF-8 cannot hold), else with them escaped."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _meta_json(meta: Any) -> str | None:
    """The record's meta as JSON: as written when it is valid Unicode, \\u-escaped where it is not."""
    if meta is None:
        return None
    text = json.dumps(meta, ensure_ascii=False)
    return text if _encodable(text) is text else json.dumps(meta)


def reject(source: str, index: int, reason: str, detail: str, raw: bytes | None, meta: Any = None) -> dict:
    return {
        "doc_id": doc_id(source, index),
        "source": source,
        "record_index": index,
        "set_name": _set_name(meta),
        "meta": json.dumps(meta) if meta is not None else None,
        "text": None,
        "reject_stage": "read",
        "reject_reason": reason,
        "reject_detail": detail[:500],
        "raw": raw,
    }


def _set_name(meta: Any) -> str | None:
    if isinstance(meta, dict):
        name = meta.get("redpajama_set_name")
        return _encodable(name) if isinstance(name, str) else None
    return None


def from_mapping(source: str, index: int, record: Any, raw: bytes | None, policy: RecordPolicy) -> dict:
    """Validate a parsed record ({"text": str, "meta": {...}}) into a document row."""
    if not isinstance(record, dict):
        return reject(source, index, "not_an_object", f"record is a JSON {type(record).__name__}", raw)
    meta = record.get("meta")
    if isinstance(meta, str):  # some dumps store meta as a JSON string
        try:
            meta = json.loads(meta)
        except (ValueError, RecursionError):
            pass
    if "text" not in record:
        return reject(source, index, "missing_text", f"keys: {sorted(record)[:10]}", raw, meta)
    text = record["text"]
    if not isinstance(text, str):
        return reject(source, index, "text_not_string", f"text is {type(text).__name__}", raw, meta)
    if not text.strip():
        return reject(source, index, "empty_text", "text is empty or whitespace", raw, meta)
    if _encodable(text) is not text:
        return reject(source, index, "invalid_unicode", "text holds a lone surrogate (not representable in UTF-8)", raw, meta)
    if len(text) > policy.max_doc_chars:
        return reject(source, index, "document_too_long", f"{len(text)} chars > max_doc_chars={policy.max_doc_chars}", raw, meta)
    did = doc_id(source, index)
    set_name = _set_name(meta)
    excluded = policy.exclusion(did, set_name)
    row = {
        "doc_id": did,
        "source": source,
        "record_index": index,
        "set_name": set_name,
        "meta": _meta_json(meta),
        "text": None if excluded else text,
        "reject_stage": "read" if excluded else None,
        "reject_reason": excluded,
        "reject_detail": f"set_name={set_name}" if excluded else None,
        "raw": None,
    }
    return row


def from_line(source: str, index: int, line: bytes, policy: RecordPolicy) -> dict:
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject(source, index, "invalid_utf8", str(exc), line)
    try:
        record = json.loads(decoded)
    except ValueError as exc:
        return reject(source, index, "malformed_json", str(exc), line)
    except RecursionError:
        return reject(source, index, "malformed_json", "JSON nested too deeply to parse", line)
    return from_mapping(source, index, record, line, policy)
