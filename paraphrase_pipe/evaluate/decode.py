"""Batched greedy decoding that stops each sequence at its first newline (the JRT/Based protocol: up to 48 new
tokens, the answer is the text before the newline).

Works for any Hugging Face causal LM through `generate`, so recurrent models decode with their state cache and
attention models with their KV cache. Batches mix prompt lengths (left padding) only when a probe shows that
padding does not change the model's output; otherwise — e.g. a recurrent model that ignores the attention mask —
a batch only holds prompts of one length, which keeps every model's answers exact.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import groupby
from weakref import WeakKeyDictionary

import torch
from transformers import StoppingCriteria, StoppingCriteriaList


class StopAtNewline(StoppingCriteria):
    """Per-sequence stop as soon as the newest token contains a newline."""

    def __init__(self, newline_ids: torch.Tensor):
        self.newline = newline_ids

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return self.newline[input_ids[:, -1].clamp(max=len(self.newline) - 1)]


@lru_cache(maxsize=8)
def newline_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """Bool per token id: does its text contain a newline."""
    n = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[:n] = torch.tensor(["\n" in t for t in texts])
    return mask


def vocab_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return getattr(head, "out_features", None) or model.config.vocab_size


_PROBED: WeakKeyDictionary = WeakKeyDictionary()


def padding_is_exact(model, pad_id: int) -> bool:
    """Does left padding with an attention mask leave the last logits unchanged? Compared against how much real
    tokens in the same place change them, so the answer does not depend on the model's scale or dtype."""
    known = _PROBED.setdefault(model, {})
    if pad_id not in known:
        known[pad_id] = _probe(model, pad_id)
    return known[pad_id]


@torch.no_grad()
def _probe(model, pad_id: int) -> bool:
    dev = model.device
    body = torch.arange(5, 11, device=dev)[None] % vocab_size(model)
    other = torch.arange(17, 20, device=dev)[None] % vocab_size(model)
    pads = torch.full((1, 3), pad_id, device=dev)

    def last(ids, mask):
        return model(input_ids=ids, attention_mask=mask).logits[0, -1].float()

    ones = torch.ones_like(body)
    ref = last(body, ones)
    padded = last(torch.cat([pads, body], 1), torch.cat([torch.zeros_like(pads), ones], 1))
    changed = last(torch.cat([other, body], 1), torch.ones(1, 9, dtype=torch.long, device=dev))
    return bool((padded - ref).abs().max() <= 0.02 * (changed - ref).abs().max() + 1e-6)


def batches(lengths: list[int], batch_size: int, mix_lengths: bool) -> list[list[int]]:
    """Indices grouped into batches, longest prompts first; without `mix_lengths` each batch has one length."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups = [order] if mix_lengths else [list(g) for _, g in groupby(order, key=lambda i: lengths[i])]
    return [g[k:k + batch_size] for g in groups for k in range(0, len(g), batch_size)]


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 48,
                    batch_size: int = 8) -> list[str]:
    """The greedy continuation of every prompt (token ids), cut at the first newline."""
    if not prompts:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        pad_id = 0
    stop = StoppingCriteriaList([StopAtNewline(newline_mask(tokenizer, vocab_size(model)).to(model.device))])
    mix = padding_is_exact(model, pad_id)
    answers: list[str] = [""] * len(prompts)
    for idx in batches([len(p) for p in prompts], batch_size, mix):
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                             max_new_tokens=max_new_tokens, do_sample=False, stopping_criteria=stop,
                             pad_token_id=pad_id, num_beams=1)
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            if tokenizer.eos_token_id in new:  # finished sequences are padded after their EOS
                new = new[: new.index(tokenizer.eos_token_id)]
            answers[i] = tokenizer.decode(new, skip_special_tokens=True).split("\n", 1)[0]
    return answers
