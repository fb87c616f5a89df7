"""The model being trained: load it by preset, local directory or hub id, and wrap it with its loss.

`SummedCausalLMLoss` is the module that DDP / FSDP wrap and torch.compile sees: backbone -> hidden states ->
chunked linear cross-entropy (`loss.py`), summed over the non-masked targets (the step divides). Packed rows keep
their documents apart the way each model family can (`boundary_mode`), or training is refused.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from paraphrase_pipe.hub import missing_local_path, offline_hint
from paraphrase_pipe.train.loss import IGNORE, linear_cross_entropy


class ModelError(ValueError):
    """A model name or config that cannot be loaded or trained; printed without a traceback."""


def is_preset(spec: str) -> bool:
    from paraphrase_pipe.models import PRESETS

    return spec in PRESETS


def load_model(spec: str, vocab_size: int | None = None, overrides: dict | None = None) -> nn.Module:
    """fp32 (master) weights of: a preset (fresh, vocab sized to the tokenizer), our own or a state-spaces /
    transformers Mamba checkpoint (`paraphrase_pipe.models.build_model`), else any HF causal LM."""
    from paraphrase_pipe.models import PRESETS, build_model

    if missing_local_path(spec):
        raise ModelError(f"cannot load model {spec!r}: no such model directory")
    overrides = dict(overrides or {})
    if spec in PRESETS and vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    try:
        model = build_model(spec, **overrides)
    except ValueError as err:
        if "model_type" not in str(err):  # a model of another family: let transformers try
            raise ModelError(f"cannot load model {spec!r}: {err}{offline_hint()}; presets: "
                             f"{', '.join(sorted(PRESETS))}") from None
        model = _hf_model(spec, overrides)
    except (OSError, TypeError) as err:
        raise ModelError(f"cannot load model {spec!r}: {err}{offline_hint()}") from None
    if vocab_size is not None and model.get_input_embeddings().num_embeddings < vocab_size:
        raise ModelError(f"model {spec!r} has {model.get_input_embeddings().num_embeddings} embeddings, "
                         f"the tokenizer {vocab_size} ids")
    return model.float()


def _hf_model(spec: str, overrides: dict) -> nn.Module:
    from transformers import AutoModelForCausalLM

    if overrides:
        raise ModelError("model_overrides apply to paraphrase_pipe.models models only")
    try:
        return AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; the user needs one message
        raise ModelError(f"cannot load model {spec!r}{offline_hint()}: {type(exc).__name__}: {exc}") from None


def tokenizer_source(spec: str) -> str | None:
    """Where the model's own tokenizer lives (a local dir with tokenizer files, or a hub id), if anywhere."""
    if is_preset(spec):
        return None
    path = Path(spec)
    if path.is_dir():
        return spec if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")) else None
    return spec


def blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated layers (`models.blocks.block_list`), [] for a model without any."""
    from paraphrase_pipe.models.blocks import block_list

    return list(block_list(model) or [])


def _mamba_ssm_layer(model: nn.Module) -> str | None:
    """"Mamba1" / "Mamba2" for mamba_ssm's `MambaLMHeadModel` without attention layers, else None."""
    cfg = getattr(model, "config", None)
    if hasattr(model, "base_model") or not hasattr(model, "backbone") or not hasattr(cfg, "ssm_cfg"):
        return None
    return None if getattr(cfg, "attn_layer_idx", None) else (cfg.ssm_cfg or {}).get("layer", "Mamba1")


@torch.no_grad()
def _positions_separate_documents(model: nn.Module) -> bool:
    """Probe: with restarting `position_ids`, the second document's output ignores the first one's tokens.
    transformers builds a document-causal mask from them (`find_packed_sequence_indices`) for models that use
    its masking utilities, with any attention implementation; older model code ignores them."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        vocab = model.get_input_embeddings().num_embeddings
        positions = torch.tensor([[0, 1, 0, 1]], device=device)
        outs = [model(torch.tensor([[a, a + 1, 3, 4]], device=device) % vocab, position_ids=positions,
                      use_cache=False).logits[0, 2:] for a in (5, 11)]
        return bool(torch.allclose(outs[0], outs[1], atol=1e-5))
    except Exception:  # noqa: BLE001 - a model that cannot even run the probe cannot be trained packed either
        return False
    finally:
        model.train(was_training)


def boundary_mode(model: nn.Module) -> str:
    """How `model` keeps the documents of a packed row apart: "seq_idx" (paraphrase_pipe.models, mamba_ssm
    Mamba-2 stacks: SSM state reset, block-diagonal attention) or "position_ids" (Hugging Face attention
    models: positions restart per document, transformers masks attention by them). Any other model would leak
    state or attention across documents while only the loss is masked: a ModelError says so."""
    if hasattr(model, "_context") and hasattr(model, "_embed"):  # paraphrase_pipe.models.HybridForCausalLM
        return "seq_idx"
    layer = _mamba_ssm_layer(model)
    if layer == "Mamba2":
        return "seq_idx"
    name = type(model).__name__
    if layer is not None or not hasattr(model, "base_model"):
        why = f"mamba_ssm's {layer or 'attention'} layers take no seq_idx"
    elif getattr(model, "_is_stateful", False):
        why = "its recurrent state cannot be reset inside a row"
    elif "position_ids" not in inspect.signature(model.forward).parameters or not _positions_separate_documents(model):
        why = "its attention does not separate documents by restarting position_ids"
    else:
        return "position_ids"
    raise ModelError(f"{name} cannot keep the documents of a packed row apart ({why}): training would leak "
                     "state and attention across documents. Train a paraphrase_pipe.models model instead (a "
                     "preset, or a state-spaces / transformers Mamba checkpoint, which are converted), or a "
                     "transformers attention model")


def final_hidden(model: nn.Module, input_ids: torch.Tensor, seq_idx: torch.Tensor | None,
                 mode: str = "seq_idx") -> torch.Tensor:
    """Hidden states after the final norm (what the LM head reads), without computing the head.

    `HybridForCausalLM` (embedding -> blocks with a sequence context -> norm), mamba_ssm's `MambaLMHeadModel`
    (`backbone(input_ids, seq_idx=...)`) and any Hugging Face causal LM (`base_model`, restarting positions).
    """
    if hasattr(model, "_context") and hasattr(model, "_embed"):  # paraphrase_pipe.models.HybridForCausalLM
        hidden = model._embed(input_ids, None)
        ctx = model._context(hidden.shape[0], hidden.shape[1], hidden.device, seq_idx, None)
        return model.backbone(hidden, ctx)[0]
    if not hasattr(model, "base_model"):  # mamba_ssm MambaLMHeadModel: mixer kwargs reach Mamba2 layers
        return model.backbone(input_ids, **({"seq_idx": seq_idx.int()} if seq_idx is not None else {}))
    return model.base_model(input_ids, **_document_kwargs(seq_idx, mode))[0]


def _document_kwargs(seq_idx: torch.Tensor | None, mode: str) -> dict:
    if seq_idx is None:
        return {}
    if mode == "position_ids":
        from paraphrase_pipe.models.context import document_positions

        return {"position_ids": document_positions(seq_idx), "use_cache": False}
    return {"seq_idx": seq_idx}


def head_weight(model: nn.Module) -> torch.Tensor | None:
    """The LM head's weight if it is a plain bias-free linear map (else the fused loss does not apply)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else getattr(model, "lm_head")
    config = getattr(model, "config", None)
    scaled = any(getattr(config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
    return head.weight if isinstance(head, nn.Linear) and head.bias is None and not scaled else None


class SummedCausalLMLoss(nn.Module):
    """Next-token CE of a causal LM *summed* over the non-masked targets; the module the trainer runs."""

    def __init__(self, model: nn.Module, loss_chunk: int = 4096, compile_loss: bool = False):
        super().__init__()
        self.model = model
        self.loss_chunk, self.compile_loss = loss_chunk, compile_loss
        self.fused = loss_chunk > 0 and head_weight(model) is not None
        self.boundaries = boundary_mode(model)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor, seq_idx: torch.Tensor | None = None):
        if self.fused:
            hidden = final_hidden(self.model, input_ids, seq_idx, self.boundaries)
            return linear_cross_entropy(hidden.flatten(0, 1), head_weight(self.model), targets.flatten(),
                                        self.loss_chunk, compiled=self.compile_loss)
        logits = self.model(input_ids, **_document_kwargs(seq_idx, self.boundaries)).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
