"""LLM engines behind one protocol (`base.Engine`), created by name. Heavy ones are imported only when chosen."""
from __future__ import annotations

import importlib
from typing import Any

from paraphrase_pipe.engines.base import Engine, Generation

# name -> "module:Class"; each engine lives in its own module
REGISTRY: dict[str, str] = {
    "none": "paraphrase_pipe.engines.none:NoParaphraseEngine",
    "vllm": "paraphrase_pipe.engines.vllm_inprocess:VLLMEngine",
    "openai": "paraphrase_pipe.engines.openai_client:OpenAIEngine",
    "vllm-serve": "paraphrase_pipe.engines.managed_server:ManagedServerEngine",
}


class EngineError(ValueError):
    """Unknown engine or bad engine options (message is user-facing)."""


def engine_class(name: str) -> type:
    if name not in REGISTRY:
        raise EngineError(f"unknown engine {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_engine(name: str, options: dict[str, Any] | None = None, workdir: str | None = None) -> Engine:
    """`workdir` (the build's output dir) reaches engines that keep state there (`wants_workdir`: request cache)."""
    cls = engine_class(name)
    extra = {"workdir": workdir} if workdir and getattr(cls, "wants_workdir", False) else {}
    try:
        return cls(**(options or {}), **extra)
    except TypeError as exc:
        raise EngineError(f"bad options for engine {name!r}: {exc}") from None


def gpus_held(name: str, options: dict[str, Any], executor: str) -> float:
    """GPUs a build holds for its engine (0 for clients of external endpoints unless they say otherwise)."""
    cls = engine_class(name)
    return float(cls.gpus_held(options, executor)) if hasattr(cls, "gpus_held") else 0.0


__all__ = ["Engine", "EngineError", "Generation", "REGISTRY", "create_engine", "engine_class", "gpus_held"]
