"""Long-context language modelling: perplexity as a function of context length, and NLL as a function of token
position, on long documents (PG-19 books by default, or a build's held-out output, or local text files).

At each length L the documents are cut into non-overlapping windows of exactly L tokens (the tokenizer's BOS, if
any, included), taken round-robin across documents so no single book dominates; lengths past the model's training
length are the point of the exercise. `perplexity` = exp(mean NLL over every predicted token of every window);
`nll` by position averages the NLL of the tokens whose index in the window falls in a bucket [2^k, 2^(k+1))
(the first bucket starts at 0), so the curve shows whether later tokens profit from the longer context.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from paraphrase_pipe.evaluate.data import read_texts
from paraphrase_pipe.evaluate.defaults import LONGCTX_LENGTHS, LONGCTX_SOURCE, LONGCTX_WINDOWS
from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.evaluate.report import Result
from paraphrase_pipe.evaluate.tokens import encode, special_prefix

MIN_BUCKET = 64


def windows(docs: list[list[int]], prefix: list[int], length: int, limit: int) -> list[list[int]]:
    """Up to `limit` windows of exactly `length` ids: prefix + a slice of a document, round-robin over documents."""
    body = length - len(prefix)
    if body < 2:
        raise EvalError(f"length {length} leaves no room for tokens")
    per_doc = [len(d) // body for d in docs]
    out = []
    for k in range(max(per_doc, default=0)):
        for d, count in zip(docs, per_doc):
            if k < count and len(out) < limit:
                out.append(prefix + d[k * body:(k + 1) * body])
    return out


@torch.no_grad()
def token_nll(model, seqs: list[list[int]], batch_tokens: int = 32768, chunk: int = 1024) -> torch.Tensor:
    """NLL (float32, nats) of tokens 1..L-1 of each equal-length sequence given the tokens before it."""
    length = len(seqs[0])
    per_batch = max(1, batch_tokens // length)
    rows = []
    for k in range(0, len(seqs), per_batch):
        ids = torch.tensor(seqs[k:k + per_batch], device=model.device)
        logits = model(input_ids=ids, use_cache=False).logits
        ends = [(s, min(s + chunk, length - 1)) for s in range(0, length - 1, chunk)]  # the last logit predicts nothing
        parts = [F.cross_entropy(logits[:, s:e].float().transpose(1, 2), ids[:, s + 1:e + 1], reduction="none")
                 for s, e in ends]
        rows.append(torch.cat(parts, 1).cpu())
    return torch.cat(rows)


def position_buckets(length: int) -> list[tuple[int, int]]:
    """[start, end) over predicted-token indices 1..L-1: [0, 64), [64, 128), [128, 256), ... ."""
    edges = [0, MIN_BUCKET]
    while edges[-1] < length:
        edges.append(edges[-1] * 2)
    edges[-1] = length
    return [(a, b) for a, b in zip(edges, edges[1:]) if a < length - 1]


def evaluate_longctx(model, tokenizer, model_name: str, source: str = LONGCTX_SOURCE, lengths=LONGCTX_LENGTHS,
                     max_windows: int = LONGCTX_WINDOWS, batch_tokens: int = 32768,
                     task: str | None = None) -> list[Result]:
    task = task or _task_name(source)
    docs = [encode(tokenizer, t) for t in read_texts(source)]
    prefix = special_prefix(tokenizer)
    results = []
    for length in lengths:
        seqs = windows(docs, prefix, length, max_windows)
        if not seqs:
            longest = max(map(len, docs), default=0)
            raise EvalError(f"{source}: no document has {length} tokens (longest: {longest}); lower --lengths")
        nll = token_nll(model, seqs, batch_tokens)
        row = dict(model=model_name, suite="longctx", task=task, length=length, n=len(seqs))
        results.append(Result(metric="perplexity", value=math.exp(nll.mean().item()), **row))
        # column j of `nll` is the token at index j + 1 of its window
        for a, b in position_buckets(length):
            cols = nll[:, max(a, 1) - 1: b - 1]
            if cols.numel():
                results.append(Result(metric="nll", value=cols.mean().item(), position=a, **row))
    return results


def _task_name(source: str) -> str:
    name = source.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name
