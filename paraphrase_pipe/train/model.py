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


def _presets() -> dict:
    try:
        from paraphrase_pipe.models import PRESETS
    except ImportError:
        return {}
    return PRESETS


def is_preset(spec: str) -> bool:
    return spec in _presets()


def load_model(spec: str, vocab_size: int | None = None, overrides: dict | None = None) -> nn.Module:
    """A preset (fresh weights, vocab sized to the tokenizer) or pretrained weights, in fp32 (master weights)."""
    overrides = dict(overrides or {})
    if is_preset(spec):
        from paraphrase_pipe.models import build_model

        if vocab_size is not None:
            overrides.setdefault("vocab_size", vocab_size)
        return build_model(spec, **overrides).float()
    if overrides:
        raise ModelError("model_overrides apply to presets only; edit the checkpoint's config.json instead")
    try:
        import paraphrase_pipe.models  # noqa: F401 - registers the hybrid classes with the Auto* factories
    except ImportError:
        pass
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; the user needs one message
        offline = " (HF_HUB_OFFLINE=1: only local directories and presets work)" if os.environ.get(
            "HF_HUB_OFFLINE") == "1" else ""
        known = f"; presets: {', '.join(sorted(_presets()))}" if _presets() else ""
        raise ModelError(f"cannot load model {spec!r}{offline}: {type(exc).__name__}: {exc}{known}") from None
    if vocab_size is not None and model.get_input_embeddings().num_embeddings < vocab_size:
        raise ModelError(f"model {spec!r} has {model.get_input_embeddings().num_embeddings} embeddings, "
                         f"the tokenizer {vocab_size} ids")
    return model


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


def _takes(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


class CausalLMLoss(nn.Module):
    """Summed next-token CE of a causal LM over non-masked targets; the module the trainer runs."""

    def __init__(self, model: nn.Module, loss_chunk: int = 4096):
        super().__init__()
        self.model = model
        self.loss_chunk = loss_chunk
        head = model.get_output_embeddings()
        plain_head = isinstance(head, nn.Linear) and head.bias is None and not any(
            getattr(model.config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
        self.fused = plain_head and loss_chunk > 0
        self.seq_idx = _takes((model.base_model if self.fused else model).forward, "seq_idx")

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor, seq_idx: torch.Tensor | None = None):
        kwargs = {"seq_idx": seq_idx} if self.seq_idx and seq_idx is not None else {}
        if self.fused:
            hidden = self.model.base_model(input_ids, **kwargs)[0]
            weight = self.model.get_output_embeddings().weight
            return linear_cross_entropy(hidden.flatten(0, 1), weight, targets.flatten(), self.loss_chunk)
        logits = self.model(input_ids, **kwargs).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
