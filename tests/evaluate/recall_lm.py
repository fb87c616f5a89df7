"""A tiny causal LM whose logits implement in-context lookup (an explicit induction head).

Why: the recall metrics must be checked against a real model whose right answer is known. `RecallLM`
predicts, at every position, the token that followed the earlier position whose preceding tokens match the
longest suffix (up to `ngram` tokens) of the context, the most recent one on ties, looking back at most
`window` tokens (0 = unlimited). With an unlimited window it copies any value from its context
(recall = 1.0); with a short window it cannot reach a far-away key and emits `fallback_token_id` (a
newline) instead (recall = 0.0). It is an ordinary Hugging Face `PreTrainedModel`: `generate`,
`save_pretrained`, `AutoModelForCausalLM.from_pretrained` and lm-eval's HF wrapper all work on it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class RecallLMConfig(PretrainedConfig):
    model_type = "recall_lm_test"

    def __init__(self, vocab_size=512, ngram=8, window=0, fallback_token_id=0, confidence=20.0, **kw):
        self.vocab_size, self.ngram, self.window = vocab_size, ngram, window
        self.fallback_token_id, self.confidence = fallback_token_id, confidence
        super().__init__(**kw)


def lookup(ids: torch.Tensor, rows: torch.Tensor, config: RecallLMConfig, attention_mask=None) -> torch.Tensor:
    """(B, len(rows)) predicted next token at each position in `rows`: the token after the earlier position whose
    preceding tokens match the longest suffix (up to `config.ngram`) within `config.window`, else the fallback."""
    b, t = ids.shape
    pos = torch.arange(t, device=ids.device)
    allowed = pos[None, :] < rows[:, None]  # j < i, so the token after j is already in the context
    if config.window:
        allowed &= rows[:, None] - pos[None, :] <= config.window
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, :].bool()
    run = allowed.expand(b, len(rows), t).clone()  # the suffixes of length k + 1 ending at i and at j agree
    length = torch.zeros(b, len(rows), t, dtype=torch.int32, device=ids.device)
    for k in range(config.ngram):
        shifted = torch.nn.functional.pad(ids, (k, 0), value=-1)[:, :t]
        query = shifted[:, rows]
        run &= (query[:, :, None] == shifted[:, None, :]) & (query[:, :, None] >= 0)
        length += run
    score = torch.where(length > 0, length * t + pos, -1)  # longest match, then the most recent
    best, j = score.max(-1)
    nxt = torch.gather(ids, 1, (j + 1).clamp(max=t - 1))
    return torch.where(best >= 0, nxt, torch.full_like(nxt, config.fallback_token_id))


class RecallLM(PreTrainedModel, GenerationMixin):
    config_class = RecallLMConfig
    main_input_name = "input_ids"

    def __init__(self, config):
        super().__init__(config)
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # a parameter so .device/.dtype work
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **_):
        b, t = input_ids.shape
        pos = torch.arange(t, device=input_ids.device)
        if isinstance(logits_to_keep, torch.Tensor):
            rows = logits_to_keep.to(input_ids.device)
        else:
            rows = pos[t - logits_to_keep:] if logits_to_keep else pos
        target = lookup(input_ids, rows, self.config, attention_mask)
        logits = torch.zeros(b, len(rows), self.config.vocab_size, device=input_ids.device)
        logits.scatter_(2, target[..., None], self.config.confidence)
        return CausalLMOutput(logits=logits + 0 * self.dummy)

    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # no cache: every step re-reads the whole context

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, logits_to_keep=0, **_):
        return {"input_ids": input_ids, "attention_mask": attention_mask, "logits_to_keep": logits_to_keep}


AutoConfig.register(RecallLMConfig.model_type, RecallLMConfig)
AutoModelForCausalLM.register(RecallLMConfig, RecallLM)


def save_recall_lm(tokenizer, path: Path, window: int) -> Path:
    """A RecallLM for `tokenizer`, saved with it in `path` (loadable by `AutoModelForCausalLM`)."""
    newline = tokenizer.convert_tokens_to_ids("Ċ")  # byte-level BPE spelling of "\n"
    config = RecallLMConfig(vocab_size=len(tokenizer), window=window, fallback_token_id=newline,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    RecallLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
