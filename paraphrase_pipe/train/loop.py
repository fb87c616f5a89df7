"""The training run: data -> model -> optimizer steps, with validation, checkpoints and exact resume.

One optimizer step = `accum` micro-batches on each of `world` ranks = a fixed number of sequences drawn from
the mixture in a global order (`packing.rank_slice`). The loss is the mean over every non-masked target of
the step, whatever the split into ranks and micro-batches, so 1 process and N processes compute the same
update. Randomness (dropout, if any) is reseeded from (seed, step, rank) every step: resume needs no RNG dump.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from paraphrase_pipe.train import checkpoint, distributed
from paraphrase_pipe.train.config import TrainConfig
from paraphrase_pipe.train.data import (DataError, Source, TextTokenizer, held_out, read_manifest,
                                        tokenize_source)
from paraphrase_pipe.train.metrics import METRICS, Metrics, plot
from paraphrase_pipe.train.loss import IGNORE
from paraphrase_pipe.train.model import SummedCausalLMLoss, blocks, load_model, tokenizer_source
from paraphrase_pipe.train.packing import Mixture, PackedWindows, collate, make_sample, rank_slice
from paraphrase_pipe.train.schedule import lr_at


@dataclass
class Plan:
    """Batch geometry of the run, derived once from the config and the world size."""

    micro_batch: int
    accum: int
    world: int
    seq_len: int
    steps: int

    @property
    def sequences(self) -> int:
        return self.micro_batch * self.accum * self.world

    @property
    def tokens(self) -> int:
        return self.sequences * self.seq_len


def make_plan(cfg: TrainConfig, world: int) -> Plan:
    per_micro = cfg.micro_batch * cfg.seq_len * world
    accum = max(1, cfg.batch_tokens // per_micro) if cfg.batch_tokens else 1
    if cfg.batch_tokens and accum * per_micro != cfg.batch_tokens:
        raise DataError(f"batch_tokens {cfg.batch_tokens} is not a multiple of micro_batch x seq_len x world = "
                        f"{cfg.micro_batch} x {cfg.seq_len} x {world} = {per_micro}")
    return Plan(cfg.micro_batch, accum, world, cfg.seq_len, cfg.total_steps(accum * per_micro))


def resolve_tokenizer(cfg: TrainConfig, sources: list[Source]) -> TextTokenizer:
    """--tokenizer, else the model's own, else the one the (first) build was chunked with."""
    from paraphrase_pipe.tokenizer import load_tokenizer

    name = cfg.tokenizer or tokenizer_source(cfg.model)
    if name is None:
        manifest = read_manifest(sources[0].path)
        name = (manifest.get("tokenizer") or {}).get("name") or manifest.get("config", {}).get("tokenizer")
        if not name:
            raise DataError(f"{sources[0].path}/manifest.json names no tokenizer; pass --tokenizer")
    return TextTokenizer.wrap(load_tokenizer(name))


def data_sources(cfg: TrainConfig) -> tuple[list[Source], list[float]]:
    """--data entries with their weights, plus the `original` column of each when replay > 0."""
    if not cfg.data:
        raise DataError("no training data: pass --data OUT (a `paraphrase-pipe build` output dir)")
    sources = [Source.parse(d) for d in cfg.data]
    weights = [w / sum(cfg.weights) for w in cfg.weights] if cfg.weights else [1 / len(sources)] * len(sources)
    if cfg.replay:
        replay = [Source(s.path, "original") for s in sources]
        return sources + replay, [w * (1 - cfg.replay) for w in weights] + [w * cfg.replay for w in weights]
    return sources, weights


def _tokenize_all(sources: list[Source], tok: TextTokenizer, cfg: TrainConfig, env: distributed.Env) -> list:
    """Local rank 0 of every node fills the cache first (atomic, so shared file systems are safe)."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    if env.local_rank == 0:
        out = [tokenize_source(s, tok, cache) for s in sources]
    distributed.barrier(env)
    return out if env.local_rank == 0 else [tokenize_source(s, tok, cache) for s in sources]


def build_data(cfg: TrainConfig, tok: TextTokenizer, env: distributed.Env) -> tuple[Mixture, PackedWindows | None]:
    """Training mixture, and validation windows: `val_data`, else the held-out documents of the first source."""
    sources, weights = data_sources(cfg)
    tokenized = _tokenize_all(sources, tok, cfg, env)
    train = [np.arange(len(t.doc_hash)) if cfg.val_data else np.flatnonzero(~held_out(t.doc_hash, cfg.val_fraction))
             for t in tokenized]
    mixture = Mixture([PackedWindows(t.tokens, t.offsets, rows, cfg.seq_len, seed=cfg.seed)
                       for t, rows in zip(tokenized, train)], weights, cfg.seed)
    if cfg.val_data:
        held = _tokenize_all([Source.parse(cfg.val_data)], tok, cfg, env)[0]
        val = PackedWindows(held.tokens, held.offsets, np.arange(len(held.doc_hash)), cfg.seq_len)
    else:
        held = tokenized[0]
        val = PackedWindows(held.tokens, held.offsets, np.flatnonzero(held_out(held.doc_hash, cfg.val_fraction)),
                            cfg.seq_len)
    return mixture, val if len(val) else None


def _param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No decay on vectors (norm scales, biases, SSM A_log/D/dt_bias) or on params flagged `_no_weight_decay`."""
    decay, keep = [], []
    for p in module.parameters():
        if p.requires_grad:
            (keep if p.ndim < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def build_module(cfg: TrainConfig, vocab_size: int, env: distributed.Env,
                 model: torch.nn.Module | None = None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model, wrapped loss module): fp32 master weights, optional checkpointing / compile, DDP or FSDP.
    `model` skips loading (benchmarks pass models built elsewhere)."""
    model = model if model is not None else load_model(cfg.model, vocab_size, cfg.model_overrides)
    module = SummedCausalLMLoss(model, cfg.loss_chunk, compile_loss=cfg.compile).to(env.device)
    layers = blocks(model)
    if cfg.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        ids = {id(b) for b in layers}
        apply_activation_checkpointing(module, check_fn=lambda m: id(m) in ids)
        layers = blocks(model)
    if cfg.compile:
        for layer in layers:
            layer.compile()
    return model, distributed.wrap(module, env, cfg.distributed, cfg.precision == "bf16")


def make_optimizer(module: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the fp32 master weights; the fused CUDA kernel on GPUs."""
    return torch.optim.AdamW(_param_groups(module, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             fused=device.type == "cuda" or None)


def autocast_fn(device: torch.device, bf16: bool):
    """bf16 autocast over fp32 master weights (matmuls in bf16, reductions and the optimizer in fp32)."""
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def train_step(module, optimizer, micro: list[dict], scale: float, autocast, grad_clip: float,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over this rank's micro-batches: (summed loss, grad norm) as device tensors.

    `scale` = world / targets of the whole step, so the update is the mean over every target whatever the
    split into ranks and micro-batches. Nothing here waits for the GPU: the next step's batches are cut while
    this one runs.
    """
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i, batch in enumerate(micro):
        batch = _batch_to(batch, device)
        with distributed.grad_sync(module, i == len(micro) - 1):
            with autocast():
                loss = module(**batch)
            (loss * scale).backward()
        total += loss.detach()
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip or math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm


def _batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=pin) for k, v in batch.items()}


def validate(module, val: PackedWindows, cfg: TrainConfig, env: distributed.Env, autocast) -> float | None:
    """Mean CE over the first held-out windows, the same set for any world size (rounded to a multiple of it);
    every rank runs the same number of forwards, as FSDP needs."""
    per_rank = min(cfg.val_sequences, len(val)) // env.world
    if per_rank == 0:
        return None
    mine = range(env.rank * per_rank, (env.rank + 1) * per_rank)
    total = torch.zeros(2, dtype=torch.float64, device=env.device)
    module.eval()
    with torch.no_grad():
        for i in range(0, per_rank, cfg.micro_batch):
            batch = _batch_to(collate([make_sample(*val.window(k)) for k in mine[i:i + cfg.micro_batch]]), env.device)
            with autocast():
                total[0] += module(**batch).double()
            total[1] += (batch["targets"] != IGNORE).sum()
    module.train()
    total = distributed.all_sum(env, total)
    return float(total[0] / total[1])


def save_final(out: Path, model, module, tok: TextTokenizer, env: distributed.Env) -> Path:
    """The model + tokenizer in a directory any Hugging Face tool loads: pure Mamba-1 / Mamba-2 models in
    transformers' own `MambaForCausalLM` / `Mamba2ForCausalLM` format (vLLM, lm-eval, TGI read it natively),
    hybrids in ours with `auto_map` and the modeling files (`trust_remote_code=True`)."""
    from paraphrase_pipe.models.checkpoints import config_to_transformers, export_transformers

    state = checkpoint.full_model_state(module)
    final = out / "final"
    if env.main:
        from transformers import PreTrainedTokenizerFast

        prefix = "model."
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
        shutil.rmtree(final, ignore_errors=True)  # a rerun may switch formats: no stale files from the last one
        if getattr(model.config, "model_type", None) == "paraphrase_hybrid" and config_to_transformers(model.config):
            export_transformers(model, final, state)
        else:
            model.save_pretrained(final, state_dict=state)
        eos = tok.backend.id_to_token(tok.eos_id)
        PreTrainedTokenizerFast(tokenizer_object=tok.backend, eos_token=eos, bos_token=eos).save_pretrained(final)
    distributed.barrier(env)
    return final


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; returns a summary (final step, losses, output paths)."""
    env = distributed.init(cfg.device)
    try:
        return _train(cfg, env)
    finally:
        distributed.shutdown(env)


def _train(cfg: TrainConfig, env: distributed.Env) -> dict:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    sources, _ = data_sources(cfg)
    tok = resolve_tokenizer(cfg, sources)
    mixture, val = build_data(cfg, tok, env)
    plan = make_plan(cfg, env.world)
    model, module = build_module(cfg, tok.vocab_size, env)
    optimizer = make_optimizer(module, cfg, env.device)
    autocast = autocast_fn(env.device, cfg.precision == "bf16")
    start, ckpt_dir = 0, out / "checkpoints"
    found = None
    if cfg.resume:  # rank 0 verifies the files (size + checksum) and picks; every rank loads that one
        found = distributed.from_main(env, checkpoint.latest(ckpt_dir) if env.main else None)
    val_loss = None
    if found is not None:
        state = checkpoint.load(found, module, optimizer)
        mixture.load_state_dict(state["data"])
        start, val_loss = state["step"], state.get("val_loss")
        changed = sorted(k for k, v in cfg.model_dump(mode="json").items() if state.get("config", {}).get(k) != v)
        if changed and env.main:
            print(f"resuming from {found} with changed settings: {', '.join(changed)}")
    if val is None and env.main:
        print("no held-out windows for validation: raise val_fraction or pass --val-data")
    if env.main:
        (out / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
        metrics = Metrics(out, plan.steps, start, cfg.tensorboard, cfg.progress)
        metrics.start_clock(start * plan.tokens)

    def save(step: int, val_loss: float | None) -> None:
        checkpoint.save(ckpt_dir, step, module, optimizer, {"data": mixture.state_dict(), "tokens": step * plan.tokens,
                        "val_loss": val_loss, "config": cfg.model_dump(mode="json")}, env.main, cfg.keep_checkpoints)
        distributed.barrier(env)

    seen = 0.0  # targets (all ranks) since the last log row
    if start == 0 and cfg.eval_every and val is not None:  # the starting point of the curve
        val_loss = validate(module, val, cfg, env, autocast)
        if env.main:
            metrics.log({"step": 0, "tokens": 0, "val_loss": val_loss})
    window = torch.zeros((), dtype=torch.float64, device=env.device)  # this rank's loss sum since then
    for step in range(start, plan.steps):
        torch.manual_seed(cfg.seed * 1_000_003 + step * env.world + env.rank)
        lr = lr_at(step, plan.steps, cfg.lr, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio, cfg.decay_fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        picks = mixture.draw(plan.sequences)
        count = mixture.targets(picks)  # the same number on every rank, no communication
        micro = [mixture.batch(mb) for mb in rank_slice(picks, plan.micro_batch, plan.accum, env.rank, env.world)]
        loss, norm = train_step(module, optimizer, micro, env.world / count, autocast, cfg.grad_clip, env.device)
        window += loss
        seen += count
        done = step + 1
        last = done == plan.steps
        evaluate = bool(cfg.eval_every and done % cfg.eval_every == 0) or last
        if evaluate:
            val_loss = validate(module, val, cfg, env, autocast) if val is not None else None
        if done % cfg.log_every == 0 or evaluate:
            row = {"step": done, "tokens": done * plan.tokens, "loss": float(distributed.all_sum(env, window)) / seen,
                   "lr": lr, "grad_norm": float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)}
            if evaluate:
                row["val_loss"] = val_loss
            if env.main:
                metrics.log(row)
            window, seen = torch.zeros_like(window), 0.0
        if cfg.save_every and done % cfg.save_every == 0 and not last:
            save(done, val_loss)
    if start < plan.steps:
        save(plan.steps, val_loss)
    elif env.main:
        print(f"{found} is the last step ({plan.steps}): nothing to train, writing the final model again")
    final = save_final(out, model, module, tok, env)
    summary = {"steps": plan.steps, "tokens": plan.steps * plan.tokens, "final": str(final), "val_loss": val_loss,
               "accum": plan.accum, "world": env.world}
    if env.main:
        metrics.close()
        summary["loss_png"] = str(plot(out / METRICS, out / "loss.png"))
    return summary
