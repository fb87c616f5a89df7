"""Checkpoints for exact resume: model, optimizer, trainer state (step, data position), written atomically.

`OUT/checkpoints/step_00000100/` holds the weights and optimizer state and `trainer.json`, written last, which
records the size and sha256 of every other file. Two layouts:
- full (one process, DDP): `model.pt` + `optimizer.pt`, unsharded state dicts of tensors, read back with
  `torch.load(weights_only=True)`;
- sharded (FSDP): a `torch.distributed.checkpoint` directory (`.metadata` + one `__R_0.distcp` per rank): every
  rank writes and reads only its own shards, so no rank ever holds the full fp32 weights plus Adam state.
  DCP's `.metadata` is a pickle: it is read by an unpickler that admits only DCP's metadata classes.
Nothing is ever unpickled beyond tensors and those classes. A checkpoint is written to a temp dir and renamed
into place, so a kill -9 at any moment leaves the previous one intact; on resume a checkpoint whose files do not
match `trainer.json` (truncated, edited) is skipped with a one-line message and the previous one is used.
The LR schedule and RNG are pure functions of the step (see `schedule.py`, `loop.py`): the step restores them.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from paraphrase_pipe.output.shards import sha256_file

PREFIX = "step_"
TRAINER = "trainer.json"


class CheckpointError(ValueError):
    """A checkpoint that must not be loaded (not plain tensors); printed without a traceback."""


def _options(full: bool, **kw) -> StateDictOptions:
    return StateDictOptions(full_state_dict=full, **kw)


def is_sharded(module: torch.nn.Module) -> bool:
    """FSDP2 modules hold DTensor parameters: they checkpoint shard by shard."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).glob(f"{PREFIX}*") if (p / TRAINER).is_file())


def damage(path: Path) -> str | None:
    """Why the checkpoint at `path` is not intact (a file missing, of another size or checksum), or None."""
    try:
        files = json.loads((path / TRAINER).read_text()).get("files")
    except (OSError, json.JSONDecodeError) as exc:
        return f"{TRAINER} unreadable ({type(exc).__name__})"
    if files is None:
        return None  # written before checksums were recorded
    for name, want in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["bytes"]:
            return f"{name} has {f.stat().st_size:,} bytes, {want['bytes']:,} were written"
        if sha256_file(f) != want["sha256"]:
            return f"{name} does not match its checksum"
    return None


def latest(root: Path, say=print) -> Path | None:
    """The newest intact checkpoint; each damaged newer one is reported in one line and skipped."""
    found = checkpoints(root)
    for path in reversed(found):
        why = damage(path)
        if why is None:
            return path
        older = [p for p in found if p < path]
        say(f"checkpoint {path.name} is damaged ({why}): "
            + (f"trying {older[-1].name}" if older else "no earlier checkpoint, starting from step 0"))
    return None


def _record_files(tmp: Path, state: dict, step: int) -> None:
    files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
             for f in sorted(tmp.iterdir()) if f.is_file() and f.name != TRAINER}
    for name in files:
        with open(tmp / name, "rb") as fh:
            os.fsync(fh.fileno())
    (tmp / TRAINER).write_text(json.dumps({**state, "step": step, "files": files}, indent=1))
    with open(tmp / TRAINER, "rb") as fh:
        os.fsync(fh.fileno())


def save(root: Path, step: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
         main: bool, keep: int) -> Path:
    """Collective call. Full layout: every rank gathers, rank 0 writes. Sharded: every rank writes its shards."""
    final = Path(root) / f"{PREFIX}{step:08d}"
    tmp = Path(root) / f".tmp-{final.name}"
    sharded = is_sharded(module)
    model_sd, optim_sd = get_state_dict(module, optimizer, options=_options(not sharded, cpu_offload=not sharded))
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if sharded:
        import torch.distributed.checkpoint as dcp

        dist.barrier()  # the temp dir exists before any rank writes into it
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))  # returns after every rank wrote
    elif main:
        torch.save(model_sd, tmp / "model.pt")
        torch.save(optim_sd, tmp / "optimizer.pt")
    if not main:
        return final
    _record_files(tmp, state, step)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_tensors(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} is not a safe checkpoint (it holds Python objects, not only tensors): "
                              "refused, nothing was loaded") from None


_DCP_CLASSES = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
                ("torch.distributed.checkpoint.filesystem", "_StorageInfo")}


class _MetadataUnpickler(pickle.Unpickler):
    """Admits DCP's metadata dataclasses, torch.Size and dtypes only."""

    def find_class(self, module: str, name: str):
        if (module, name) in _DCP_CLASSES or module == "torch.distributed.checkpoint.metadata" or (
                module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def _safe_reader(path: Path):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            meta = path / ".metadata"
            try:
                metadata = _MetadataUnpickler(io.BytesIO(meta.read_bytes())).load()
            except (pickle.UnpicklingError, EOFError, AttributeError) as exc:
                raise CheckpointError(f"{meta} is not a safe checkpoint ({exc}): refused, nothing was loaded") from None
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(path))


def load(path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model and optimizer in place; returns the trainer state. Sharded checkpoints are read shard by
    shard into this rank's part (any world size, FSDP or not: DCP reshards); full ones are read whole by every
    rank."""
    if (path / ".metadata").is_file():
        import torch.distributed.checkpoint as dcp

        model_sd, optim_sd = get_state_dict(module, optimizer, options=_options(False))
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, storage_reader=_safe_reader(path))
        model_sd, optim_sd = state["model"], state["optim"]
        full = False
    else:
        model_sd, optim_sd = _load_tensors(path / "model.pt"), _load_tensors(path / "optimizer.pt")
        full = True
    set_state_dict(module, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=_options(full))
    return json.loads((path / TRAINER).read_text())


def full_model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded model weights on CPU (collective under FSDP), for `save_pretrained`."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_options(True, cpu_offload=True))
