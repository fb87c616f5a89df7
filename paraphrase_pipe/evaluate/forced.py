"""Teacher-forced answer checking: would greedy decoding reproduce each answer span exactly?

Greedy decoding from the tokens before a span outputs the span iff every span token is the argmax given the gold
tokens before it — so one forward pass over the whole sequence answers it for all spans at once (MQAR's many
queries included), with no decoding loop. Batches are right-padded (`batching.py`), exact for any causal model.
"""

from __future__ import annotations

import torch

from paraphrase_pipe.evaluate.batching import accepts_logits_to_keep, right_padded


@torch.no_grad()
def span_matches(model, sequences: list[list[int]], spans: list[list[tuple[int, int]]], pad_id: int = 0,
                 batch_tokens: int = 32768) -> list[list[bool]]:
    """For each sequence and each [start, end) span in it: is every span token the model's argmax?"""
    out: list[list[bool]] = [[] for _ in sequences]
    keep_arg = accepts_logits_to_keep(model)
    for idx, ids, _ in right_padded(sequences, batch_tokens, pad_id):
        # logits at position p predict token p + 1: only the positions just before span tokens are needed
        need = sorted({p for i in idx for s, e in spans[i] for p in range(s - 1, e - 1)})
        where = torch.tensor(need, dtype=torch.long)
        kw = {"logits_to_keep": where.to(model.device)} if keep_arg else {}
        logits = model(input_ids=ids.to(model.device), use_cache=False, **kw).logits
        pred = (logits if keep_arg else logits[:, where.to(logits.device)]).argmax(-1).tolist()
        col = {p: c for c, p in enumerate(need)}
        for row, i in enumerate(idx):
            out[i] = [all(pred[row][col[p]] == sequences[i][p + 1] for p in range(s - 1, e - 1))
                      for s, e in spans[i]]
    return out
