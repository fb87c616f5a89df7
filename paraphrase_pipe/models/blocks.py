"""The repeated blocks of any causal LM (ours, Llama-style transformers, Mamba): the units of activation
checkpointing, FSDP sharding and compile in the trainer, and of the block analyses.

Every such model keeps its blocks in one `nn.ModuleList` (`backbone.layers`, `model.layers`, `transformer.h`, ...):
the one that holds the most parameters (block classes may differ, as in hybrids with one class per layer type).
"""

from __future__ import annotations

from torch import nn


def block_list(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of blocks, or None when it has no non-empty `nn.ModuleList`."""
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    return max(candidates, key=lambda m: sum(p.numel() for p in m.parameters())) if candidates else None
