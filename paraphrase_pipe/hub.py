"""Hugging Face hub ids vs local paths, and the hint added to load errors while the hub is switched off.

A name like `org/model` is a hub id; `./x`, `/x`, `~/x`, `runs/a/final` (more than one `/`) or `out/final` (whose
folder `out` exists here) are local paths: when such a path does not exist, the error says so instead of
reporting a failed hub look-up.
"""
from __future__ import annotations

import os
from pathlib import Path


def offline_hint(works: str = "local directories") -> str:
    """' (HF_HUB_OFFLINE=1: only local directories work)' while the hub is off, else ''."""
    return f" (HF_HUB_OFFLINE=1: only {works} work)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""


def missing_local_path(spec: str) -> bool:
    """`spec` is meant as a local path (see above) and nothing exists there."""
    path = Path(spec).expanduser()
    if path.exists():
        return False
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or ("/" in spec and path.parent.is_dir())
