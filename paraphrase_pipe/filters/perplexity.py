"""Reference-LM perplexity ratio: perplexity(paraphrase) / perplexity(original) under a causal LM.

The reference is the model that will be trained (the paper continually trains Mamba-2.8B), so the gate keeps
paraphrases that the model finds about as natural as its own pretraining text: a ratio far above 1 is text the
model finds strange (garbled, off-distribution), far below 1 is degenerate, repetitive text. Off by default
because it loads a multi-GB model; recipes switch it on. Any Hugging Face causal LM by hub id or directory.

Batched by a token budget over length-sorted texts, right-padded (the padding never influences earlier positions
of a causal model), one forward per batch, on CPU or GPU; the model is loaded once per process.
"""
from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np
import pyarrow as pa

from paraphrase_pipe.filters.base import Gate, load_error, resolve_device
from paraphrase_pipe.tokenizer import check_hub

DEFAULT_REFERENCE = "state-spaces/mamba-2.8b-hf"


@lru_cache(maxsize=2)
def load_reference(name: str, device: str, dtype: str):
    """(model, tokenizer), model in eval mode on `device`. dtype `auto`: bf16 on CUDA, fp32 on CPU."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_hub(name)  # unreachable: offline at once, not a minute of retries
        tokenizer = AutoTokenizer.from_pretrained(name)
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        model = AutoModelForCausalLM.from_pretrained(name, dtype=getattr(torch, dtype)).to(device).eval()
    except Exception as exc:  # noqa: BLE001 - import, hub and IO errors all end in one user-facing line
        raise load_error("perplexity", "reference model", name, exc) from None
    return model, tokenizer


def _batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that (rows x longest row) stays within the token budget, longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[current[0]] > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


def mean_nll(texts: list[str], model, tokenizer, max_tokens: int, batch_tokens: int) -> np.ndarray:
    """Mean next-token negative log-likelihood (nats) of each text; NaN for texts shorter than 2 tokens."""
    import torch

    encoded = [tokenizer(t, truncation=True, max_length=max_tokens)["input_ids"] for t in texts]
    out = np.full(len(texts), np.nan)
    device = next(model.parameters()).device
    for batch in _batches([len(e) for e in encoded], batch_tokens):
        width = len(encoded[batch[0]])
        if width < 2:
            continue
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            targets = mask[:, 1:].float()
            mean = (nll * targets).sum(1) / targets.sum(1).clamp(min=1)
        values = mean.cpu().numpy()
        for row, i in enumerate(batch):
            if len(encoded[i]) >= 2:
                out[i] = values[row]
    return out


class PerplexityGate(Gate):
    enabled: bool = False
    min: float | None = 0.25
    max: float | None = 2.0
    model: str = DEFAULT_REFERENCE
    device: str = "auto"
    dtype: str = "auto"
    max_tokens: int = 4096
    batch_tokens: int = 16384

    name: ClassVar[str] = "perplexity"
    column: ClassVar[str] = "score_ppl_ratio"
    low_reason: ClassVar[str] = "perplexity_low"
    high_reason: ClassVar[str] = "perplexity_high"
    extra_columns: ClassVar[dict[str, pa.DataType]] = {"ppl_original": pa.float64(), "ppl_paraphrase": pa.float64()}

    def score(self, originals, paraphrases, tokenizer):
        model, ref_tokenizer = load_reference(self.model, resolve_device(self.device), self.dtype)
        nll = mean_nll(list(originals) + list(paraphrases), model, ref_tokenizer, self.max_tokens, self.batch_tokens)
        orig, para = nll[: len(originals)], nll[len(originals) :]
        return {self.column: np.exp(para - orig), "ppl_original": np.exp(orig), "ppl_paraphrase": np.exp(para)}
