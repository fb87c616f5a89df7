"""Checkpoints for exact resume: model, optimizer, trainer state (step, data position), written atomically.

`OUT/checkpoints/step_00000100/` holds `model.pt` and `optimizer.pt` (full, unsharded state dicts of tensors,
read back with `torch.load(weights_only=True)`: nothing is unpickled) and `trainer.json`. A checkpoint is
written to a temp dir and renamed into place, so a kill -9 at any moment leaves the previous one intact.
The LR schedule and RNG are pure functions of the step (see `schedule.py`, `loop.py`): the step restores them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

PREFIX = "step_"


def _options(**kw) -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, **kw)


def checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).glob(f"{PREFIX}*") if (p / "trainer.json").is_file())


def latest(root: Path) -> Path | None:
    found = checkpoints(root)
    return found[-1] if found else None


def save(root: Path, step: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
         main: bool, keep: int) -> Path:
    """Collective call (every rank gathers its shards); rank 0 writes."""
    model_sd, optim_sd = get_state_dict(module, optimizer, options=_options(cpu_offload=True))
    final = Path(root) / f"{PREFIX}{step:08d}"
    if not main:
        return final
    tmp = Path(root) / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model_sd, tmp / "model.pt")
    torch.save(optim_sd, tmp / "optimizer.pt")
    (tmp / "trainer.json").write_text(json.dumps({**state, "step": step}, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model and optimizer in place (every rank reads the full dicts); returns the trainer state."""
    model_sd = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    optim_sd = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    set_state_dict(module, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=_options())
    return json.loads((path / "trainer.json").read_text())


def full_model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded model weights on CPU (collective under FSDP), for `save_pretrained`."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_options(cpu_offload=True))
