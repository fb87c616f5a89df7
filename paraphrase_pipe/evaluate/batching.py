"""Batches of token sequences for teacher-forced passes: longest first, about `batch_tokens` tokens each, right
padded. In a causal model padding after a token never changes that token's outputs, so any model — attention or
recurrent — batches any mix of lengths exactly, and the mask says which positions are real."""

from __future__ import annotations

import inspect

import torch


def accepts_logits_to_keep(model) -> bool:
    """Can the forward return logits for chosen positions only (most HF causal LMs, our hybrids)?"""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def right_padded(sequences: list[list[int]], batch_tokens: int, pad_id: int = 0):
    """Yields (indices into `sequences`, ids (B, W), mask of real tokens (B, W))."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    k = 0
    while k < len(order):
        width = len(sequences[order[k]])
        idx = order[k: k + max(1, batch_tokens // max(width, 1))]
        k += len(idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.bool)
        for row, i in enumerate(idx):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            mask[row, : len(sequences[i])] = True
        yield idx, ids, mask
