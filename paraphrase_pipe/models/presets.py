"""Matched-size presets of the four model types and `build_model`, the one entry point of trainer and eval.

Sizes are matched on parameter count (tied embeddings included, GPT-NeoX vocabulary of the state-spaces
checkpoints) within a few percent, so comparisons between types are fair; `tests/models` checks it. SSM
layers are Mamba-2 by default (`ssm_layer="mamba1"` overrides); attention is 64-dim heads with full RoPE.

- `mamba-*`:        Mamba-2 blocks only (the state-spaces mamba2-130m / -370m shapes)
- `transformer-*`:  attention + SwiGLU MLP blocks (Llama-style)
- `sequential-*`:   Mamba-2 and attention blocks stacked, pattern "MMMA" (one attention block in four)
- `parallel-*`:     Mamba-2 and attention branches in every block, merged by cross-attention
- `*-tiny`:         the same four at toy size for tests (vocab 512, d_model 64)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .configuration import HybridConfig

NEOX_VOCAB = 50277


def _sizes(d_model: int, n_mamba: int, n_transformer: int, d_mlp: int, n_sequential: int, n_parallel: int,
           vocab: int, extra: dict | None = None) -> dict[str, dict]:
    base = {"vocab_size": vocab, "d_model": d_model, **(extra or {})}
    return {
        "mamba": {**base, "arch": "mamba", "n_layer": n_mamba},
        "transformer": {**base, "arch": "transformer", "n_layer": n_transformer, "d_intermediate": d_mlp},
        "sequential": {**base, "arch": "sequential", "n_layer": n_sequential, "layer_pattern": "MMMA"},
        "parallel": {**base, "arch": "parallel", "n_layer": n_parallel, "merge": "cross-attention"},
    }


_TINY = {"ssm_cfg": {"d_state": 16, "headdim": 16, "chunk_size": 16}, "attn_cfg": {"num_heads": 4},
         "mlp_multiple_of": 16}

PRESETS: dict[str, dict] = {
    f"{arch}-{size}": cfg
    for size, table in {
        "tiny": _sizes(64, 4, 2, 192, 4, 2, 512, _TINY),
        "130m": _sizes(768, 24, 12, 2304, 28, 11, NEOX_VOCAB),
        "370m": _sizes(1024, 48, 24, 2816, 52, 21, NEOX_VOCAB),
    }.items()
    for arch, cfg in table.items()
}


def _is_state_spaces(cfg: dict) -> bool:
    return "d_model" in cfg and "n_layer" in cfg and "model_type" not in cfg


def _local_dir(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise ValueError(f"{name_or_path!r} is neither a preset ({', '.join(sorted(PRESETS))}), "
                         "a model directory nor a hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.bin", "*.safetensors", "*.txt",
                                                                     "*.model"]))
    except Exception as exc:
        raise ValueError(f"could not fetch {name_or_path!r} from the Hugging Face hub "
                         f"({type(exc).__name__}: {exc}); pass a local directory instead") from exc


def build_model(preset_or_path: str | os.PathLike, **overrides):
    """A `HybridForCausalLM` from a preset name (fresh weights), a local directory or a hub id.

    Directories may hold our own `save_pretrained` output, a state-spaces Mamba / Mamba-2 checkpoint
    (`config.json` + `pytorch_model.bin`) or a transformers `MambaForCausalLM` / `Mamba2ForCausalLM` one. `overrides` are config fields (e.g. `kernels="torch"`,
    `skip_layers=[3]`, or for presets `ssm_layer="mamba1"`, `n_layer=12`); `dtype=` / `device=` are applied to
    the model.
    """
    from .checkpoints import load_state_spaces, load_transformers_dir
    from .modeling import HybridForCausalLM

    dtype, device = overrides.pop("dtype", None), overrides.pop("device", None)
    name = str(preset_or_path)
    if name in PRESETS:
        model = HybridForCausalLM(HybridConfig(**{**PRESETS[name], **overrides}))
    else:
        path = _local_dir(name)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{path} has no config.json: not a model directory")
        try:
            cfg = json.loads(config_file.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_file} is not valid JSON: {exc}") from exc
        if _is_state_spaces(cfg):
            model = load_state_spaces(path, **overrides)
        elif cfg.get("model_type") == HybridConfig.model_type:
            model = HybridForCausalLM.from_pretrained(path, **overrides)
        elif cfg.get("model_type") in ("mamba", "mamba2"):
            model = load_transformers_dir(path, **overrides)
        else:
            raise ValueError(f"{path}: model_type {cfg.get('model_type')!r} is not a paraphrase_hybrid model, a "
                             "transformers Mamba/Mamba2 model or a state-spaces Mamba checkpoint")
    if dtype is not None or device is not None:
        model = model.to(device=device, dtype=dtype)
    return model
