"""`TrainConfig`: every knob of `paraphrase-pipe train`, from a YAML recipe plus command-line overrides.

A recipe (`pipelines/train-*.yaml`) holds the defaults of a kind of run; the command line names the data,
the model and anything it overrides. Validation happens here, once, so the loop never meets a bad value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from paraphrase_pipe.config import ConfigError, load_recipe  # noqa: F401 - ConfigError is part of this API


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # data
    data: list[str] = Field(default_factory=list, description="build output dirs; 'DIR:column' reads another column")
    weights: list[float] | None = Field(None, description="sampling weight of each --data (default: equal)")
    replay: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of samples drawn from the `original` column")
    val_data: str | None = Field(None, description="held-out build dir (default: documents of the first --data, by doc_id)")
    val_fraction: float = Field(0.02, ge=0.0, lt=1.0, description="share of documents held out, by doc_id hash")
    val_sequences: int = Field(64, ge=1, description="held-out windows per validation pass (all ranks)")
    cache_dir: str | None = Field(None, description="token cache when the build dir is read-only")

    # model
    model: str = Field("", description="hub id, local dir, or a paraphrase_pipe.models preset")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="config overrides for presets")
    tokenizer: str | None = Field(None, description="default: the model dir's tokenizer, else the build's")

    # batch and length
    seq_len: int = Field(2048, ge=8)
    micro_batch: int = Field(8, ge=1, description="sequences per device per forward")
    batch_tokens: int = Field(0, ge=0, description="tokens per optimizer step, all ranks (0 = one micro-batch each)")
    steps: int = Field(0, ge=0, description="optimizer steps (0 = derive from `tokens`)")
    tokens: int = Field(0, ge=0, description="training tokens when `steps` is 0")

    # optimisation: continual-training recipe
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="floor of the decay, as a fraction of lr")
    warmup_steps: int = Field(100, ge=0, description="LR re-warm from 0")
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="WSD: share of steps spent decaying")
    weight_decay: float = Field(0.1, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = Field(1.0, ge=0.0, description="max global grad norm (0 = off)")

    # execution
    precision: Literal["bf16", "fp32"] = "bf16"
    compile: bool = False
    activation_checkpointing: bool = False
    loss_chunk: int = Field(4096, ge=0, description="tokens per chunk of the fused cross-entropy (0 = plain)")
    distributed: Literal["ddp", "fsdp"] = "ddp"
    device: str = Field("auto", description="auto | cpu | cuda")
    seed: int = 0

    # output and observability
    output: str = "runs/train"
    save_every: int = Field(500, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(200, ge=0, description="validation every N steps (0 = only at the end)")
    log_every: int = Field(10, ge=1)
    resume: bool = Field(True, description="continue from the latest checkpoint in `output`")
    tensorboard: bool = True
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.weights is not None and len(self.weights) != len(self.data):
            raise ValueError(f"--weights has {len(self.weights)} values for {len(self.data)} --data entries")
        if self.weights is not None and (min(self.weights) < 0 or sum(self.weights) <= 0):
            raise ValueError("--weights must be non-negative and not all zero")
        if self.steps == 0 and self.tokens == 0:
            raise ValueError("set `steps` or `tokens` (recipe or --steps/--tokens)")
        return self

    def total_steps(self, tokens_per_step: int) -> int:
        return self.steps or -(-self.tokens // tokens_per_step)


def parse_value(text: str) -> Any:
    """`--set key=value` values are YAML scalars/lists, so `1e-4`, `true`, `[0.9,0.95]` mean what they look like."""
    return yaml.safe_load(text)


def load_config(recipe: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Recipe YAML (optional) updated by overrides (None values are ignored), validated once."""
    values = load_recipe(recipe)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        lines = [f"  {'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in err.errors()]
        raise ConfigError("invalid training config:\n" + "\n".join(lines)) from None
