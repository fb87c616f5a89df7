"""The seam between the paraphrase stage and whatever generates text.

An engine takes the live chunk rows of a batch and returns, for each, the generated text and its bookkeeping.
It never sees rejected rows, never writes files, and knows nothing about executors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable


@dataclass
class Generation:
    """One engine answer. `paraphrase=None` with `error` set means the chunk is dead-lettered with that reason."""

    paraphrase: str | None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a reject reason code, e.g. "truncated", "refusal", "context_overflow"
    error_detail: str | None = None


@runtime_checkable
class Engine(Protocol):
    name: ClassVar[str]
    # "worker": cheap to create, one per worker process (clients); "driver": one heavy instance per executor slot
    # (an in-process GPU engine): executors keep it out of the CPU worker pool.
    placement: ClassVar[Literal["worker", "driver"]]

    # Constructors must be cheap (no model load, no connection): drivers build one just to read identity();
    # heavy resources are acquired on the first generate().
    def identity(self) -> dict[str, Any]:
        """What determines the output (model, revision, template hash, sampling): part of every sample_id."""

    def generate(self, chunks: list[dict[str, Any]]) -> list[Generation]:
        """One Generation per chunk, same order. Chunks carry chunk_id, original, n_tokens, ..."""

    def close(self) -> None: ...
