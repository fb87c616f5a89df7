"""`HybridForCausalLM`: the Hugging Face model class of all four architectures.

    model(input_ids, labels=None, seq_idx=None, attention_mask=None, past_key_values=None, use_cache=None,
          output_hidden_states=None, logits_to_keep=0) -> CausalLMOutputWithPast

- `seq_idx` (B, L): document id of every token of a packed row; no information crosses a change of id (SSM
  state reset, block-diagonal attention, RoPE positions restart). Without it, an `attention_mask` with zeros
  (padding) is turned into document ids the same way, so padding never leaks into real tokens.
- `labels` are shifted inside (HF convention); the loss ignores -100 and the predictions across a document
  boundary of `seq_idx`.
- `generate` keeps a `HybridCache` (recurrent state per SSM mixer, KV cache per attention mixer / merge).
- Fused losses: `final_hidden_states(input_ids, seq_idx)` is the input of `lm_head` (no logits materialised).
- Analysis: `forward_hidden(input_ids, seq_idx)` returns the residual stream after every block, every mixer's
  output and every parallel block's branch outputs; `output_hidden_states=True` returns the residual stream
  (embeddings + one entry per block, before the final norm).
- Ablation: `config.skip_layers` / `config.skip_branches` (see `HybridConfig`) or the context manager
  `with model.ablate(layers=[3], branches=["5.attn"]): ...` (a skipped layer is the identity, a skipped branch
  contributes zeros to its merge).

State-dict keys are mamba_ssm's `MambaLMHeadModel` ones (`backbone.embedding`, `backbone.layers.N.mixer...`,
`backbone.norm_f`, `lm_head`), so Mamba checkpoints map one to one (`checkpoints.py`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .block import Block
from .cache import HybridCache
from .configuration import HybridConfig
from .context import AnalysisHooks, build_context, mask_cross_document
from .initialization import mark_no_weight_decay
from .rmsnorm import make_norm


class HybridPreTrainedModel(PreTrainedModel):
    config_class = HybridConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _is_stateful = True
    _keep_in_fp32_modules = ["A_log", "D"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm) or "RMSNorm" in type(module).__name__:
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        if hasattr(module, "init_parameters"):  # SSM mixers, gate merge: their own schemes
            module.init_parameters()
        if isinstance(module, Block) and self.config.rescale_prenorm_residual:
            # GPT-2 / mamba_ssm: output projections scaled by 1/sqrt(residual adds per model)
            n_res = (2 if module.mlp is not None else 1) * self.config.n_layer
            for name, p in module.named_parameters():
                if name.endswith(("out_proj.weight", "fc2.weight")):
                    nn.init.normal_(p, std=std / math.sqrt(n_res))

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        mark_no_weight_decay(model if not isinstance(model, tuple) else model[0])  # loading replaced the parameters
        return model

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # our own HybridCache is created in prepare_inputs_for_generation


class HybridModel(nn.Module):
    """Embedding, blocks, final norm (mamba_ssm's `MixerModel`)."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, i, kind) for i, kind in enumerate(config.block_kinds))
        self.norm_f = make_norm(config.d_model, config.norm_epsilon, config.rms_norm)
        for name, module in self.named_modules():  # unique cache slots for stateful modules
            if hasattr(type(module), "cache_key"):
                module.cache_key = name

    def forward(self, hidden: torch.Tensor, ctx) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skip = set(self.config.skip_layers)
        states = [hidden]
        for i, layer in enumerate(self.layers):
            if i not in skip:
                hidden = layer(hidden, ctx=ctx)
            elif ctx.hooks.record is not None:
                ctx.hooks.record["mixer_outputs"].append(None)
            states.append(hidden)
        out = self.norm_f(hidden.to(self.norm_f.weight.dtype))
        return out, states


def segments_from_mask(attention_mask: torch.Tensor, length: int) -> torch.Tensor | None:
    """Padding as its own document: the mask values of the last `length` tokens, or None without padding."""
    mask = attention_mask[:, -length:]
    return None if bool(mask.all()) else mask.long()


class HybridForCausalLM(HybridPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "backbone.embedding.weight"}

    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.backbone = HybridModel(config)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.embedding

    def set_input_embeddings(self, value):
        self.backbone.embedding = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def _context(self, batch, length, device, seq_idx, cache):
        return build_context(batch, length, device, seq_idx=seq_idx, cache=cache, kernels=self.config.kernels,
                             hooks=AnalysisHooks(frozenset(self.config.skip_branches)))

    def _embed(self, input_ids, inputs_embeds):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        hidden = self.backbone.embedding(input_ids) if inputs_embeds is None else inputs_embeds
        return hidden.float() if self.config.residual_in_fp32 else hidden

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        seq_idx: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: HybridCache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        hidden = self._embed(input_ids, inputs_embeds)
        batch, length = hidden.shape[:2]
        if seq_idx is None and attention_mask is not None:
            seq_idx = segments_from_mask(attention_mask, length)
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        cache = past_key_values if past_key_values is not None else (HybridCache() if use_cache else None)
        if cache is not None and not isinstance(cache, HybridCache):
            raise TypeError(f"past_key_values must be a HybridCache, got {type(cache).__name__}")
        ctx = self._context(batch, length, hidden.device, seq_idx, cache)
        hidden, states = self.backbone(hidden, ctx)

        if labels is not None:
            logits = self.lm_head(hidden)
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden[:, keep])
        loss = None if labels is None else self.loss(logits, labels, seq_idx)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=cache if use_cache else None,
            hidden_states=tuple(states) if (output_hidden_states or self.config.output_hidden_states) else None,
        )

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token cross-entropy (fp32), ignoring -100 and predictions across a document boundary."""
        target = labels[:, 1:].clone()
        if seq_idx is not None:
            mask_cross_document(target, seq_idx)
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=-100)

    def final_hidden_states(self, input_ids: torch.LongTensor, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states after the final norm, (B, L, d_model): what `lm_head` reads. For trainers that fuse the
        head into a chunked cross-entropy instead of materialising the logits."""
        hidden = self._embed(input_ids, None)
        ctx = self._context(hidden.shape[0], hidden.shape[1], hidden.device, seq_idx, None)
        return self.backbone(hidden, ctx)[0]

    @torch.no_grad()
    def forward_hidden(self, input_ids: torch.LongTensor, seq_idx: torch.Tensor | None = None) -> dict:
        """Per-block outputs for analysis: `hidden_states` (n_layer + 1 residual-stream tensors, embeddings
        first), `mixer_outputs` (one per layer; None for a skipped layer), `branch_outputs`
        ({layer: {"ssm": s, "attn": a}} for parallel blocks) and `last_hidden_state` (after the final norm)."""
        hidden = self._embed(input_ids, None)
        ctx = self._context(hidden.shape[0], hidden.shape[1], hidden.device, seq_idx, None)
        ctx.hooks.record = {"mixer_outputs": [], "branch_outputs": {}}
        last, states = self.backbone(hidden, ctx)
        return {"hidden_states": states, "last_hidden_state": last, **ctx.hooks.record}

    @contextmanager
    def ablate(self, layers=(), branches=()):
        """Temporarily skip whole layers and/or parallel branches ("<layer>.ssm" | "<layer>.attn")."""
        saved = list(self.config.skip_layers), list(self.config.skip_branches)
        self.config.skip_layers = saved[0] + [int(i) for i in layers]
        self.config.skip_branches = saved[1] + [str(b) for b in branches]
        try:
            self.config.validate_hybrid()
            yield self
        finally:
            self.config.skip_layers, self.config.skip_branches = saved

    # -- generation -----------------------------------------------------------------------------------------------
    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, use_cache=True, seq_idx=None, logits_to_keep=None,
                                      **kwargs):
        cache = past_key_values
        if cache is not None and cache.seen_tokens > 0:  # decoding: feed the tokens the cache has not seen
            inputs = {"input_ids": input_ids[:, cache.seen_tokens:]}
        else:
            cache = HybridCache() if use_cache else None
            if inputs_embeds is not None and cache is not None:
                inputs = {"inputs_embeds": inputs_embeds}
            else:
                inputs = {"input_ids": input_ids}
            length = input_ids.shape[1] if "input_ids" in inputs else inputs_embeds.shape[1]
            if seq_idx is None and attention_mask is not None:
                seq_idx = segments_from_mask(attention_mask, length)
            if seq_idx is not None:  # without a cache the rows grow: the new tokens continue the last document
                grow = length - seq_idx.shape[1]
                inputs["seq_idx"] = torch.cat([seq_idx, seq_idx[:, -1:].expand(-1, grow)], 1) if grow > 0 else seq_idx
        inputs.update(past_key_values=cache, use_cache=use_cache)
        if logits_to_keep is not None:
            inputs["logits_to_keep"] = logits_to_keep
        return inputs

    def _reorder_cache(self, past_key_values: HybridCache, beam_idx: torch.LongTensor) -> HybridCache:
        past_key_values.reorder_cache(beam_idx)
        return past_key_values
