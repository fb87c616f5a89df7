"""A two-block causal LM whose answer is known: block 0 does in-context lookup, block 1 does nothing.

The residual stream has 2V channels: the current token's one-hot (first V) and a prediction slot (last V). Block 0
reads the token ids back from the stream, runs the same lookup as `RecallLM` and adds `confidence` x one-hot of the
looked-up token to the prediction slot; block 1 returns its input unchanged; the head reads the prediction slot.
So removing block 0 destroys recall (drop = accuracy) and removing block 1 changes nothing (drop 0); block 1's
input and output have cosine 1, block 0's 1 / sqrt(1 + confidence^2).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from tests.evaluate.recall_lm import RecallLMConfig, lookup


class LayeredRecallConfig(RecallLMConfig):
    model_type = "layered_recall_test"

    def __init__(self, **kw):  # an explicit __init__: transformers would generate one that drops the parent's
        super().__init__(**kw)


class LookupBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        v = self.config.vocab_size
        ids = hidden[..., :v].argmax(-1)
        target = lookup(ids, torch.arange(ids.shape[1], device=ids.device), self.config)
        return hidden + torch.nn.functional.pad(nn.functional.one_hot(target, v).to(hidden.dtype), (v, 0)) \
            * self.config.confidence


class PassBlock(LookupBlock):
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


class LayeredRecallLM(PreTrainedModel):
    config_class = LayeredRecallConfig

    def __init__(self, config):
        super().__init__(config)
        self.layers = nn.ModuleList([LookupBlock(config), PassBlock(config)])
        self.dummy = nn.Parameter(torch.zeros(1))
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids, **_):
        v = self.config.vocab_size
        hidden = nn.functional.one_hot(input_ids, 2 * v).float() + 0 * self.dummy
        for block in self.layers:
            hidden = block(hidden)
        return CausalLMOutput(logits=hidden[..., v:])


AutoConfig.register(LayeredRecallConfig.model_type, LayeredRecallConfig)
AutoModelForCausalLM.register(LayeredRecallConfig, LayeredRecallLM)


def save_layered(tokenizer, path):
    config = LayeredRecallConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
    LayeredRecallLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
