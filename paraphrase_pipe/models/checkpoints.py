"""Released Mamba checkpoints in and out of `HybridForCausalLM`.

state-spaces format (`state-spaces/mamba-130m ... mamba-2.8b-slimpj`, `state-spaces/mamba2-130m ... -2.7b`,
`mamba2attn-2.7b`): `config.json` with d_model / n_layer / vocab_size / ssm_cfg / attn_layer_idx / attn_cfg /
rms_norm / residual_in_fp32 / pad_vocab_size_multiple / tie_embeddings, weights in `pytorch_model.bin`
(`MambaLMHeadModel.state_dict()`). Our parameter names are the same, so the weights map one to one.
Weights are read with `torch.load(weights_only=True)` or safetensors, never unpickled.

transformers format (`MambaForCausalLM` / `Mamba2ForCausalLM`, e.g. `state-spaces/mamba-130m-hf`): the same
tensors under `backbone.embeddings` instead of `backbone.embedding`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .configuration import HybridConfig
from .initialization import mark_no_weight_decay

# mamba_ssm's MHA defaults, which differ from ours: a state-spaces attn_cfg is read with these.
_MHA_DEFAULTS = {"qkv_proj_bias": True, "out_proj_bias": True, "rotary_emb_dim": 0, "causal": False}


def config_from_state_spaces(cfg: dict, **overrides) -> HybridConfig:
    ssm_cfg = dict(cfg.get("ssm_cfg") or {})
    layer = ssm_cfg.pop("layer", "Mamba1")
    if layer not in ("Mamba1", "Mamba2"):
        raise ValueError(f"unsupported ssm_cfg.layer {layer!r} (Mamba1 or Mamba2)")
    attn_idx = list(cfg.get("attn_layer_idx") or [])
    fields = dict(
        arch="sequential" if attn_idx else "mamba", vocab_size=cfg.get("vocab_size", 50277),
        d_model=cfg["d_model"], n_layer=cfg["n_layer"], d_intermediate=cfg.get("d_intermediate", 0),
        ssm_layer=layer.lower(), ssm_cfg=ssm_cfg, attn_layer_idx=attn_idx or None,
        attn_cfg={**_MHA_DEFAULTS, **(cfg.get("attn_cfg") or {})} if attn_idx else {},
        rms_norm=cfg.get("rms_norm", True), residual_in_fp32=cfg.get("residual_in_fp32", True),
        pad_vocab_size_multiple=cfg.get("pad_vocab_size_multiple", 8),
        tie_word_embeddings=cfg.get("tie_embeddings", True), norm_epsilon=1e-5, mlp_type="swiglu",
        mlp_multiple_of=128,
    )
    return HybridConfig(**{**fields, **overrides})


def config_to_state_spaces(config: HybridConfig) -> dict:
    """The state-spaces `config.json` of a model, or a ValueError if mamba_ssm cannot express it."""
    if config.arch == "parallel":
        raise ValueError("parallel hybrids have no state-spaces (MambaLMHeadModel) equivalent")
    def width(multiple):
        return -(-config.d_intermediate // multiple) * multiple

    if config.d_intermediate and (config.mlp_type != "swiglu" or width(config.mlp_multiple_of) != width(128)):
        raise ValueError("only SwiGLU MLPs whose width is a multiple of 128 match mamba_ssm's GatedMLP")
    if config.norm_epsilon != 1e-5:
        raise ValueError("mamba_ssm's MixerModel uses norm_epsilon=1e-5")
    attn_idx = [i for i, t in enumerate(config.block_kinds) if t == "A"]
    attn = config.attn_kwargs() if attn_idx else {}
    ssm = {k: v for k, v in config.ssm_cfg.items() if k != "layer"}
    return {
        "d_model": config.d_model, "d_intermediate": config.d_intermediate, "n_layer": config.n_layer,
        "vocab_size": config.vocab_size, "ssm_cfg": {"layer": "Mamba2", **ssm} if config.ssm_layer == "mamba2" else ssm,
        "attn_layer_idx": attn_idx, "attn_cfg": attn, "rms_norm": config.rms_norm,
        "residual_in_fp32": config.residual_in_fp32, "fused_add_norm": True,
        "pad_vocab_size_multiple": config.pad_vocab_size_multiple, "tie_embeddings": config.tie_word_embeddings,
    }


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint directory (safetensors or pytorch_model.bin, never unpickled)."""
    st = sorted(path.glob("*.safetensors"))
    if st:
        from safetensors.torch import load_file

        state = {}
        for f in st:
            state.update(load_file(str(f)))
        return state
    bins = sorted(path.glob("pytorch_model*.bin"))
    if not bins:
        raise ValueError(f"{path} has neither *.safetensors nor pytorch_model.bin")
    state = {}
    for f in bins:
        try:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise ValueError(f"cannot read {f} as plain tensors (weights_only=True): {exc}") from exc
    return state


def model_from_state_dict(config: HybridConfig, state: dict[str, torch.Tensor]):
    """Build the model on the meta device and take the given tensors as its parameters (no double memory)."""
    from .modeling import HybridForCausalLM

    with torch.device("meta"):
        model = HybridForCausalLM(config)
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        expected.discard("lm_head.weight")
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the config: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for key, value in state.items():
        want = model.get_parameter(key).shape
        if tuple(value.shape) != tuple(want):
            raise ValueError(f"checkpoint tensor {key} has shape {tuple(value.shape)}, the config says {tuple(want)}")
    model.load_state_dict(state, strict=False, assign=True)
    mark_no_weight_decay(model)  # assign replaced the parameters
    if config.tie_word_embeddings:
        model.lm_head.weight = model.backbone.embedding.weight
    return model.eval()


def load_state_spaces(path: str | os.PathLike, **overrides):
    """`HybridForCausalLM` from a state-spaces checkpoint directory."""
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    return model_from_state_dict(config_from_state_spaces(cfg, **overrides), read_weights(path))


def export_state_spaces(model, path: str | os.PathLike) -> Path:
    """Write `config.json` + `pytorch_model.bin` that mamba_ssm's `MambaLMHeadModel.from_pretrained` loads."""
    path = Path(path)
    cfg = config_to_state_spaces(model.config)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = model.lm_head.weight.detach().cpu().contiguous()  # mamba_ssm saves both tied keys
    torch.save(state, path / "pytorch_model.bin")
    (path / "config.json").write_text(json.dumps(cfg, indent=4))
    return path


def config_from_transformers(hf_config, **overrides) -> HybridConfig:
    """Our config for a transformers `MambaConfig` / `Mamba2Config` (same weights, same function)."""
    kind = hf_config.model_type
    common = dict(arch="mamba", vocab_size=hf_config.vocab_size, pad_vocab_size_multiple=1,
                  d_model=hf_config.hidden_size, n_layer=hf_config.num_hidden_layers,
                  norm_epsilon=hf_config.layer_norm_epsilon, residual_in_fp32=hf_config.residual_in_fp32,
                  tie_word_embeddings=hf_config.tie_word_embeddings)
    ssm = dict(d_state=hf_config.state_size, d_conv=hf_config.conv_kernel, expand=hf_config.expand,
               bias=hf_config.use_bias, conv_bias=hf_config.use_conv_bias)
    if kind == "mamba":
        ssm["dt_rank"] = hf_config.time_step_rank
        return HybridConfig(**{**common, "ssm_layer": "mamba1", "ssm_cfg": ssm, **overrides})
    if kind == "mamba2":
        if hf_config.n_groups != 1:
            raise ValueError("transformers' Mamba2 normalises over all groups at once; only n_groups=1 maps exactly")
        ssm.update(headdim=hf_config.head_dim, ngroups=hf_config.n_groups, chunk_size=hf_config.chunk_size,
                   dt_limit=list(hf_config.time_step_limit))
        return HybridConfig(**{**common, "ssm_layer": "mamba2", "ssm_cfg": ssm, **overrides})
    raise ValueError(f"model_type {kind!r} is not a transformers Mamba / Mamba2 model")


def _from_hf_names(state: dict) -> dict:
    return {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in state.items()}


def from_transformers(hf_model, **overrides):
    """Convert a transformers `MambaForCausalLM` / `Mamba2ForCausalLM` instance (weights copied)."""
    config = config_from_transformers(hf_model.config, **overrides)
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    return model_from_state_dict(config, _from_hf_names(state))


def load_transformers_dir(path: str | os.PathLike, **overrides):
    """`HybridForCausalLM` from a transformers-format Mamba / Mamba2 directory (e.g. a `*-hf` hub repo)."""
    from transformers import AutoConfig

    path = Path(path)
    config = config_from_transformers(AutoConfig.from_pretrained(path), **overrides)
    return model_from_state_dict(config, _from_hf_names(read_weights(path)))


def config_to_transformers(config: HybridConfig):
    """transformers' own `MambaConfig` / `Mamba2Config` for a pure Mamba model, or None when a field has no
    transformers equivalent (attention or MLP layers, LayerNorm, grouped norms, skipped layers, ...).
    Checked by mapping back: `config_from_transformers` must give the same mixer and model settings."""
    from transformers import Mamba2Config, MambaConfig

    if (config.arch != "mamba" or config.d_intermediate or not config.rms_norm or config.skip_layers
            or config.skip_branches):
        return None
    ssm = config.ssm_kwargs()
    common = dict(vocab_size=config.padded_vocab_size, hidden_size=config.d_model,
                  num_hidden_layers=config.n_layer, layer_norm_epsilon=config.norm_epsilon,
                  residual_in_fp32=config.residual_in_fp32, tie_word_embeddings=config.tie_word_embeddings,
                  state_size=ssm["d_state"], conv_kernel=ssm["d_conv"], expand=ssm["expand"], use_bias=ssm["bias"],
                  use_conv_bias=ssm["conv_bias"],
                  **{k: getattr(config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")})
    if config.ssm_layer == "mamba1":
        hf = MambaConfig(time_step_rank=ssm["dt_rank"], **common)
    else:
        d_inner = ssm["expand"] * config.d_model
        hf = Mamba2Config(head_dim=ssm["headdim"], num_heads=d_inner // ssm["headdim"], n_groups=ssm["ngroups"],
                          chunk_size=ssm["chunk_size"], time_step_limit=tuple(ssm["dt_limit"]), **common)
    try:
        back = config_from_transformers(hf)
    except ValueError:
        return None
    model_fields = ("d_model", "n_layer", "padded_vocab_size", "norm_epsilon", "residual_in_fp32", "ssm_layer")
    if any(getattr(back, f) != getattr(config, f) for f in model_fields):
        return None
    return hf if _same_ssm(back.ssm_kwargs(), ssm, config.d_model) else None


def _same_ssm(a: dict, b: dict, d_model: int) -> bool:
    """Mixer settings equal for the forward (init-only fields such as dt_min are not part of a checkpoint)."""
    import math

    def resolved(kw):
        kw = dict(kw)
        if kw.get("dt_rank") == "auto":
            kw["dt_rank"] = math.ceil(d_model / 16)
        kw["dt_limit"] = tuple(kw.get("dt_limit", (0.0, float("inf"))))
        return {k: v for k, v in kw.items() if k not in _INIT_ONLY}

    return resolved(a) == resolved(b)


_INIT_ONLY = {"dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor", "A_init_range"}


def export_transformers(model, path: str | os.PathLike, state_dict: dict | None = None) -> Path:
    """Save a pure Mamba-1 / Mamba-2 model as transformers' `MambaForCausalLM` / `Mamba2ForCausalLM` (loads with
    no project code and no trust_remote_code; vLLM and lm-eval read it natively)."""
    from transformers import Mamba2ForCausalLM, MambaForCausalLM

    hf_config = config_to_transformers(model.config)
    if hf_config is None:
        raise ValueError("only pure Mamba-1 / Mamba-2 models (RMSNorm, no MLP, one norm group) have a transformers "
                         "MambaForCausalLM / Mamba2ForCausalLM equivalent")
    cls = MambaForCausalLM if model.config.ssm_layer == "mamba1" else Mamba2ForCausalLM
    state = state_dict if state_dict is not None else model.state_dict()
    state = {k.replace("backbone.embedding.", "backbone.embeddings."): v.detach().cpu().contiguous()
             for k, v in state.items()}
    with torch.device("meta"):
        hf = cls(hf_config)
    hf.load_state_dict(state, strict=False, assign=True)
    if hf_config.tie_word_embeddings:
        hf.tie_weights()
    hf.save_pretrained(path)
    return Path(path)
