"""`paraphrase-pipe train`: the recipe YAML gives the defaults, flags and `--set key=value` override them.

The same command line runs on one device or under torchrun (`torchrun --nproc-per-node 8 -m paraphrase_pipe.cli
train ...`); only rank 0 prints.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from paraphrase_pipe.console import app, fail, user_errors


def _weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--weights must be comma-separated numbers, got {text!r}") from None


def _sets(items: list[str] | None) -> dict:
    from paraphrase_pipe.train.config import parse_value

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set takes key=value, got {item!r}")
        out[key.strip().replace("-", "_")] = parse_value(value)
    return out


def _warn_gpu_defaults_on_cpu(recipe: Path | None, config) -> None:
    """Without a recipe the defaults are the GPU ones (seq 2048, bf16, micro-batch 8): say so on a CPU."""
    import torch

    on_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    if recipe is None and on_cpu and int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"warning: no --recipe, so the GPU defaults apply on this CPU (seq_len {config.seq_len}, "
                   f"{config.precision}, micro_batch {config.micro_batch}: slow, several GB of RAM); for a CPU run "
                   "use --recipe pipelines/train-smoke.yaml", err=True)


@app.command("train")
def train(
    data: Optional[list[str]] = typer.Option(None, "--data", "-d", help="build output dir (repeatable); DIR:column picks another column"),
    weights: Optional[str] = typer.Option(None, help="sampling weights of the --data dirs, e.g. 0.7,0.3"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="hub id, local dir, or a paraphrase_pipe.models preset"),
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe (pipelines/train-*.yaml); flags override it"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="run directory [default: runs/train]"),
    tokenizer: Optional[str] = typer.Option(None, help="default: the model's tokenizer, else the build's"),
    seq_len: Optional[int] = typer.Option(None, help="packed sequence length in tokens"),
    micro_batch: Optional[int] = typer.Option(None, help="sequences per device per forward"),
    batch_tokens: Optional[int] = typer.Option(None, help="tokens per optimizer step over all ranks (gradient accumulation)"),
    steps: Optional[int] = typer.Option(None, help="optimizer steps"),
    tokens: Optional[int] = typer.Option(None, help="training tokens (when --steps is not set)"),
    lr: Optional[float] = typer.Option(None, help="peak learning rate"),
    schedule: Optional[str] = typer.Option(None, help="cosine | wsd | constant"),
    warmup_steps: Optional[int] = typer.Option(None, help="LR re-warm steps"),
    replay: Optional[float] = typer.Option(None, help="fraction of samples from the un-paraphrased `original` column"),
    val_data: Optional[str] = typer.Option(None, help="held-out build dir (default: a doc_id split of the first --data)"),
    precision: Optional[str] = typer.Option(None, help="bf16 (autocast, fp32 master weights) | fp32"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile each block"),
    activation_checkpointing: Optional[bool] = typer.Option(None, "--activation-checkpointing/--no-activation-checkpointing"),
    distributed: Optional[str] = typer.Option(None, help="ddp | fsdp (under torchrun)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    seed: Optional[int] = typer.Option(None),
    save_every: Optional[int] = typer.Option(None, help="checkpoint every N steps"),
    eval_every: Optional[int] = typer.Option(None, help="validation every N steps"),
    cache_dir: Optional[str] = typer.Option(None, help="token cache dir when the build dir is read-only"),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="continue from the latest checkpoint"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar (batch logs)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="any config field: --set weight_decay=0.05 (repeatable)"),
) -> None:
    """Continually train a Mamba / hybrid model on build outputs (DDP / FSDP under torchrun)."""
    from paraphrase_pipe.train.checkpoint import CheckpointError
    from paraphrase_pipe.train.config import ConfigError, load_config
    from paraphrase_pipe.train.data import DataError
    from paraphrase_pipe.train.model import ModelError

    flags = dict(data=data or None, weights=_weights(weights), model=model, output=output, tokenizer=tokenizer,
                 seq_len=seq_len, micro_batch=micro_batch, batch_tokens=batch_tokens, steps=steps, tokens=tokens,
                 lr=lr, schedule=schedule, warmup_steps=warmup_steps, replay=replay, val_data=val_data,
                 precision=precision, compile=compile, activation_checkpointing=activation_checkpointing,
                 distributed=distributed, device=device, seed=seed, save_every=save_every, eval_every=eval_every,
                 cache_dir=cache_dir, resume=resume, progress=False if no_progress else None)
    try:
        config = load_config(recipe, {**flags, **_sets(set_)})
        _warn_gpu_defaults_on_cpu(recipe, config)
        from paraphrase_pipe.train.loop import train as run

        summary = run(config)
    except (ConfigError, DataError, ModelError, CheckpointError, *user_errors()) as exc:
        fail(str(exc))
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"trained {summary['steps']} steps, {summary['tokens']:,} tokens; final val_loss "
                   f"{summary['val_loss']}; model: {summary['final']}; curve: {summary.get('loss_png')}")
