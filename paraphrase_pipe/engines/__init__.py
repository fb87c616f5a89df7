"""LLM engines behind one protocol (`base.Engine`), created by name. Heavy ones are imported only when chosen."""
from __future__ import annotations

import importlib
from typing import Any

from paraphrase_pipe.engines.base import Engine, Generation

# name -> "module:Class"; each engine lives in its own module
REGISTRY: dict[str, str] = {
    "none": "paraphrase_pipe.engines.none:NoParaphraseEngine",
}


class EngineError(ValueError):
    """Unknown engine or bad engine options (message is user-facing)."""


def engine_class(name: str) -> type:
    if name not in REGISTRY:
        raise EngineError(f"unknown engine {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_engine(name: str, options: dict[str, Any] | None = None) -> Engine:
    try:
        return engine_class(name)(**(options or {}))
    except TypeError as exc:
        raise EngineError(f"bad options for engine {name!r}: {exc}") from None


__all__ = ["Engine", "EngineError", "Generation", "REGISTRY", "create_engine", "engine_class"]
