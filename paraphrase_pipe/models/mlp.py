"""Position-wise MLP of a block: SwiGLU (mamba_ssm `GatedMLP`: `fc1` -> value, gate; `fc2`) or GELU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int, kind: str = "swiglu", multiple_of: int = 128):
        super().__init__()
        self.kind = kind
        hidden = -(-hidden // multiple_of) * multiple_of  # GatedMLP rounds the width up the same way
        self.fc1 = nn.Linear(d_model, 2 * hidden if kind == "swiglu" else hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.kind == "swiglu":
            value, gate = h.chunk(2, dim=-1)
            h = value * F.silu(gate)
        else:
            h = F.gelu(h, approximate="tanh")
        return self.fc2(h)
