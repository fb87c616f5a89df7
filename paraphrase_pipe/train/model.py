"""The model being trained: load it by preset, local directory or hub id, and wrap it with its loss.

`CausalLMLoss` is the module that DDP / FSDP wrap and torch.compile sees: backbone -> hidden states ->
chunked linear cross-entropy (`loss.py`), with document boundaries (`seq_idx`) passed to models that take them.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from paraphrase_pipe.train.loss import IGNORE, linear_cross_entropy


class ModelError(ValueError):
    """A model name or config that cannot be loaded or trained; printed without a traceback."""


def is_preset(spec: str) -> bool:
    from paraphrase_pipe.models import PRESETS

    return spec in PRESETS


def _offline_hint() -> str:
    return " (HF_HUB_OFFLINE=1: only local directories and presets work)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""


def load_model(spec: str, vocab_size: int | None = None, overrides: dict | None = None) -> nn.Module:
    """fp32 (master) weights of: a preset (fresh, vocab sized to the tokenizer), our own or a state-spaces /
    transformers Mamba checkpoint (`paraphrase_pipe.models.build_model`), else any HF causal LM."""
    from paraphrase_pipe.models import PRESETS, build_model

    overrides = dict(overrides or {})
    if spec in PRESETS and vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    try:
        model = build_model(spec, **overrides)
    except ValueError as err:
        if "model_type" not in str(err):  # a model of another family: let transformers try
            raise ModelError(f"cannot load model {spec!r}: {err}{_offline_hint()}; presets: "
                             f"{', '.join(sorted(PRESETS))}") from None
        model = _hf_model(spec, overrides)
    except (OSError, TypeError) as err:
        raise ModelError(f"cannot load model {spec!r}: {err}{_offline_hint()}") from None
    if vocab_size is not None and model.get_input_embeddings().num_embeddings < vocab_size:
        raise ModelError(f"model {spec!r} has {model.get_input_embeddings().num_embeddings} embeddings, "
                         f"the tokenizer {vocab_size} ids")
    return model.float()


def _hf_model(spec: str, overrides: dict) -> nn.Module:
    from transformers import AutoModelForCausalLM

    if overrides:
        raise ModelError("model_overrides apply to paraphrase_pipe.models models only")
    try:
        return AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; the user needs one message
        raise ModelError(f"cannot load model {spec!r}{_offline_hint()}: {type(exc).__name__}: {exc}") from None


def tokenizer_source(spec: str) -> str | None:
    """Where the model's own tokenizer lives (a local dir with tokenizer files, or a hub id), if anywhere."""
    if is_preset(spec):
        return None
    path = Path(spec)
    if path.is_dir():
        return spec if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")) else None
    return spec


def blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated layers (the largest ModuleList): units of activation checkpointing, FSDP and compile."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        return []
    return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters())))


def final_hidden(model: nn.Module, input_ids: torch.Tensor, seq_idx: torch.Tensor | None) -> torch.Tensor:
    """Hidden states after the final norm (what the LM head reads), without computing the head.

    `HybridForCausalLM` (embedding -> blocks with a sequence context -> norm), mamba_ssm's `MambaLMHeadModel`
    (`backbone(input_ids, seq_idx=...)`) and any Hugging Face causal LM (`base_model`, no document ids).
    """
    if hasattr(model, "_context") and hasattr(model, "_embed"):  # paraphrase_pipe.models.HybridForCausalLM
        hidden = model._embed(input_ids, None)
        ctx = model._context(hidden.shape[0], hidden.shape[1], hidden.device, seq_idx, None)
        return model.backbone(hidden, ctx)[0]
    if not hasattr(model, "base_model"):  # mamba_ssm MambaLMHeadModel: mixer kwargs reach Mamba2 layers
        return model.backbone(input_ids, **({"seq_idx": seq_idx.int()} if seq_idx is not None else {}))
    return model.base_model(input_ids)[0]


def head_weight(model: nn.Module) -> torch.Tensor | None:
    """The LM head's weight if it is a plain bias-free linear map (else the fused loss does not apply)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else getattr(model, "lm_head")
    config = getattr(model, "config", None)
    scaled = any(getattr(config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
    return head.weight if isinstance(head, nn.Linear) and head.bias is None and not scaled else None


class CausalLMLoss(nn.Module):
    """Summed next-token CE of a causal LM over non-masked targets; the module the trainer runs."""

    def __init__(self, model: nn.Module, loss_chunk: int = 4096, compile_loss: bool = False):
        super().__init__()
        self.model = model
        self.loss_chunk, self.compile_loss = loss_chunk, compile_loss
        self.fused = loss_chunk > 0 and head_weight(model) is not None
        self.docs = "seq_idx" in inspect.signature(model.forward).parameters

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor, seq_idx: torch.Tensor | None = None):
        seq_idx = seq_idx if self.docs else None
        if self.fused:
            hidden = final_hidden(self.model, input_ids, seq_idx)
            return linear_cross_entropy(hidden.flatten(0, 1), head_weight(self.model), targets.flatten(),
                                        self.loss_chunk, compiled=self.compile_loss)
        logits = self.model(input_ids, **({"seq_idx": seq_idx} if seq_idx is not None else {})).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
