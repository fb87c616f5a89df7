"""Cosine similarity of block outputs across depth — the paper's lens on how sequential and parallel hybrids use
their layers.

For each token, the residual stream entering block 0 and leaving every block is a vector; the cosine between two
of them says how much the blocks in between turned it. `matrix[i][j]` is that cosine averaged over every token of
every input (state 0 = input of block 0, state l + 1 = output of block l); `adjacent[l] = matrix[l][l + 1]` is how
little block l changes its input (1.0: the block is a no-op). For parallel hybrids, `branches[l]` is the mean
cosine between block l's SSM-branch and attention-branch outputs (read through the model's `forward_hidden`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from paraphrase_pipe.analysis.blocks import capture
from paraphrase_pipe.evaluate.batching import accepts_logits_to_keep, right_padded


@dataclass
class Similarity:
    adjacent: list[float]
    matrix: list[list[float]]
    branches: dict[int, float]
    tokens: int


@torch.no_grad()
def block_similarity(model, sequences: list[list[int]], batch_tokens: int = 8192) -> Similarity:
    sums, count = None, 0
    branch_sums: dict[int, float] = {}
    small = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}  # only the hidden states matter
    for _, ids, mask in right_padded(sequences, batch_tokens):
        ids, mask = ids.to(model.device), mask.to(model.device)
        with capture(model) as states:
            model(input_ids=ids, use_cache=False, **small)
        unit = torch.stack([F.normalize(s.float()[mask], dim=-1) for s in states])  # (L + 1, N, D)
        flat = unit.transpose(0, 1).reshape(unit.shape[1], unit.shape[0], -1)  # (N, L + 1, D)
        part = torch.einsum("nid,njd->ij", flat, flat).double().cpu()
        sums = part if sums is None else sums + part
        count += int(mask.sum())
        if hasattr(model, "forward_hidden"):
            for layer, out in model.forward_hidden(ids)["branch_outputs"].items():
                cos = F.cosine_similarity(out["ssm"].float()[mask], out["attn"].float()[mask], dim=-1)
                branch_sums[layer] = branch_sums.get(layer, 0.0) + cos.double().sum().item()
    matrix = (sums / count).tolist()
    return Similarity(adjacent=[matrix[i][i + 1] for i in range(len(matrix) - 1)], matrix=matrix,
                      branches={k: v / count for k, v in sorted(branch_sums.items())}, tokens=count)
