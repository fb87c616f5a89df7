"""Credentials never leave the process: `redact` is applied wherever a URL (or text that may hold one: an error,
a config) is recorded or printed — manifest, data card, shard provenance, printed lines.

Users put keys into endpoint URLs (`http://user:sk-...@host`, `?api_key=...`); requests still use the real URL.
"""
from __future__ import annotations

import re
from typing import Any

USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@'\"]+@", re.IGNORECASE)
SECRET_QUERY = re.compile(r"(?P<name>[?&](?:api[_-]?key|key|token|access[_-]?token|password|secret)=)[^&#\s'\"]+", re.IGNORECASE)
HIDDEN = "***"


def redact(value: Any) -> Any:
    """The same value with URL credentials replaced by ***: strings, and strings inside dicts/lists/tuples."""
    if isinstance(value, str):
        return SECRET_QUERY.sub(rf"\g<name>{HIDDEN}", USERINFO.sub(rf"\g<scheme>{HIDDEN}@", value))
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value
