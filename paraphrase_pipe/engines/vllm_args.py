"""vLLM engine arguments and actor-pool placement, shared by the in-process engine and the managed servers.

The same typed set becomes `vllm.LLM(**kwargs)` or `api_server --flags`, so a recipe moves between the two modes
unchanged. Anything vLLM accepts that is not listed goes through `engine_args:` verbatim. All of it is part of the
build config, hence recorded in the manifest.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Speculation(BaseModel):
    """vLLM's speculative decoding without a draft model (vLLM's `speculative_config`): `ngram` proposes the next
    tokens by matching the last n-gram in the prompt — a paraphrase copies many spans of its source — and `suffix`
    (needs the `arctic-inference` package) also matches earlier answers. The target model verifies every proposed
    token: greedy outputs are identical, sampled ones keep their distribution."""

    model_config = ConfigDict(extra="allow")  # any other speculative_config key, verbatim

    method: Literal["ngram", "suffix"] = "ngram"
    num_speculative_tokens: int = Field(4, ge=1, description="tokens proposed per step")
    prompt_lookup_max: int | None = Field(None, ge=1, description="ngram: longest n-gram matched [default: 4]")
    prompt_lookup_min: int | None = Field(None, ge=1, description="ngram: shortest n-gram matched [default: 1]")

    def vllm_config(self) -> dict[str, Any]:
        config = self.model_dump(exclude_none=True)
        if self.method == "ngram":
            config.setdefault("prompt_lookup_max", 4)
        return config


class VLLMEngineArgs(BaseModel):
    tensor_parallel_size: int = Field(1, ge=1)
    dtype: str = "auto"
    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    enforce_eager: bool | None = None
    speculative: Speculation | None = Field(None, description="speculative decoding: ngram | suffix, or its settings")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="any other vLLM engine argument")

    @field_validator("speculative", mode="before")
    @classmethod
    def _method_alone(cls, value: Any) -> Any:
        return {"method": value} if isinstance(value, str) else value

    def vllm_kwargs(self, *, model: str, revision: str | None, tokenizer: str | None, seed: int,
                    max_model_len: int | None) -> dict[str, Any]:
        named = {"model": model, "revision": revision, "tokenizer": tokenizer, "seed": seed,
                 "max_model_len": max_model_len,
                 "speculative_config": self.speculative.vllm_config() if self.speculative else None,
                 **self.model_dump(include=set(VLLMEngineArgs.model_fields) - {"engine_args", "speculative"})}
        if on_cpu():
            # vLLM's CPU build crashes ("CPU Generator does not use offset") when a seeded request's prefill is
            # split over steps; per-request seeds are what make paraphrases reproducible, so never split.
            named["enable_chunked_prefill"] = False
        return {k: v for k, v in {**named, **self.engine_args}.items() if v is not None}


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class ActorPoolHints(BaseModel):
    """Read by the Ray executor for driver-placed engines: one engine per actor, `replicas` actors."""

    replicas: int = Field(1, ge=1)
    batch_size: int = Field(256, ge=1, description="rows per call into one engine (Ray)")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per actor [default: tensor_parallel_size]")
    num_cpus: float = Field(1, ge=0)
    max_restarts: int = Field(3, ge=-1, description="restarts of a dead engine (server process, Ray engine actor) "
                              "before the build fails with its last error; -1: no limit")

    def actor_gpus(self, tensor_parallel_size: int) -> float:
        """GPUs one engine actor holds."""
        return self.num_gpus if self.num_gpus is not None else tensor_parallel_size

    def gpus_held(self, tensor_parallel_size: int, executor: str) -> float:
        """GPUs the build holds for this engine, for the manifest's GPU-hours."""
        if executor == "ray":
            return self.actor_gpus(tensor_parallel_size) * self.replicas
        if self.num_gpus is not None:
            return self.num_gpus
        import torch

        return tensor_parallel_size if torch.cuda.is_available() else 0


def as_cli_flags(kwargs: dict[str, Any]) -> list[str]:
    """{"max_num_seqs": 8, "enforce_eager": True} -> ["--max-num-seqs", "8", "--enforce-eager"] (False: --no-...)."""
    flags: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return flags
