"""The blocks of any Hugging Face causal LM, observed and switched off through forward hooks.

Why hooks: the analysis must treat our hybrids, Llama-style transformers and Mamba models alike. Every such model
keeps its blocks in one `nn.ModuleList` (`backbone.layers`, `model.layers`, `transformer.h`, ...) whose blocks map
the residual stream to the residual stream; a hook can read a block's input and output there, or replace the
output by the input (the block becomes the identity) without knowing the model's code.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.models.blocks import block_list as find_blocks


def block_list(model: nn.Module) -> nn.ModuleList:
    """The model's list of blocks (`paraphrase_pipe.models.blocks.block_list`); an EvalError if it has none."""
    blocks = find_blocks(model)
    if blocks is None:
        raise EvalError(f"{type(model).__name__}: no list of blocks found to analyse")
    return blocks


def block_kinds(model: nn.Module) -> list[str]:
    """A letter per block when the model says what its blocks are ("M" SSM, "A" attention, "P" parallel),
    else "B"."""
    kinds = getattr(model.config, "block_kinds", None)
    n = len(block_list(model))
    return list(kinds) if kinds and len(kinds) == n else ["B"] * n


def _hidden_in(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(output, hidden: torch.Tensor):
    """`output` of a block with its residual-stream tensor replaced by `hidden`."""
    if isinstance(output, torch.Tensor):
        return hidden
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    raise EvalError(f"cannot hook a block that returns {type(output).__name__}")


def _first(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


@contextmanager
def capture(model: nn.Module):
    """Collects, per forward pass, the residual stream entering the first block and leaving every block:
    `states[0]` is the input of block 0, `states[l + 1]` the output of block l (B, L, D each)."""
    blocks = block_list(model)
    states: list[torch.Tensor | None] = [None] * (len(blocks) + 1)

    def first_input(module, args, kwargs):
        states[0] = _hidden_in(args, kwargs)

    def output_of(index):
        def hook(module, args, kwargs, output):
            states[index + 1] = _first(output)
        return hook

    handles = [blocks[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [b.register_forward_hook(output_of(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        yield states
    finally:
        for h in handles:
            h.remove()


@contextmanager
def skip_blocks(model: nn.Module, layers):
    """Within the block, the given blocks pass their input through unchanged (their output is discarded)."""
    blocks = block_list(model)
    bad = [i for i in layers if not 0 <= i < len(blocks)]
    if bad:
        raise EvalError(f"no block {bad[0]} (the model has {len(blocks)})")

    def identity(module, args, kwargs, output):
        return _with_hidden(output, _hidden_in(args, kwargs))

    handles = [blocks[i].register_forward_hook(identity, with_kwargs=True) for i in layers]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
