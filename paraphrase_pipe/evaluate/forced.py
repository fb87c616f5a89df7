"""Teacher-forced answer checking: would greedy decoding reproduce each answer span exactly?

Greedy decoding from the tokens before a span outputs the span iff every span token is the argmax given the gold
tokens before it — so one forward pass over the whole sequence answers it for all spans at once (MQAR's many
queries included), with no decoding loop. Sequences are right-padded: in a causal model padding after a token
never changes that token's logits, so any model — attention or recurrent — batches any mix of lengths exactly.
"""

from __future__ import annotations

import inspect

import torch


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.no_grad()
def span_matches(model, sequences: list[list[int]], spans: list[list[tuple[int, int]]], pad_id: int = 0,
                 batch_tokens: int = 32768) -> list[list[bool]]:
    """For each sequence and each [start, end) span in it: is every span token the model's argmax?"""
    out: list[list[bool]] = [[] for _ in sequences]
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    keep_arg = _keeps_logits(model)
    k = 0
    while k < len(order):
        width = len(sequences[order[k]])
        idx = order[k: k + max(1, batch_tokens // max(width, 1))]
        k += len(idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
        # logits at position p predict token p + 1: only the positions just before span tokens are needed
        need = sorted({p for i in idx for s, e in spans[i] for p in range(s - 1, e - 1)})
        where = torch.tensor(need, dtype=torch.long)
        kw = {"logits_to_keep": where.to(model.device)} if keep_arg else {}
        logits = model(input_ids=ids.to(model.device), **kw).logits
        pred = (logits if keep_arg else logits[:, where.to(logits.device)]).argmax(-1).tolist()
        col = {p: c for c, p in enumerate(need)}
        for row, i in enumerate(idx):
            out[i] = [all(pred[row][col[p]] == sequences[i][p + 1] for p in range(s - 1, e - 1))
                      for s, e in spans[i]]
    return out
