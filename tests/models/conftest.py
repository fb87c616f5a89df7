"""Tiny configurations of every architecture for the model tests (CPU, pure PyTorch path)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from paraphrase_pipe.models import PRESETS, HybridConfig, HybridForCausalLM  # noqa: E402

VOCAB = 512
# (name, overrides of the tiny preset): every architecture, both SSM layer types, every merge mode
VARIANTS = {
    "mamba2": ("mamba-tiny", {}),
    "mamba1": ("mamba-tiny", {"ssm_layer": "mamba1"}),
    "transformer": ("transformer-tiny", {}),
    "sequential2": ("sequential-tiny", {"layer_pattern": "MA"}),
    "sequential1": ("sequential-tiny", {"layer_pattern": "AM", "ssm_layer": "mamba1"}),
    "parallel-xattn": ("parallel-tiny", {"merge": "cross-attention"}),
    "parallel-xattn-q-attn": ("parallel-tiny", {"merge": "cross-attention", "merge_cfg": {"query": "attn"},
                                                "ssm_layer": "mamba1"}),
    "parallel-sum": ("parallel-tiny", {"merge": "sum"}),
    "parallel-norm-mean": ("parallel-tiny", {"merge": "norm-mean", "ssm_layer": "mamba1"}),
    "parallel-gate": ("parallel-tiny", {"merge": "gate"}),
    "parallel-concat-proj": ("parallel-tiny", {"merge": "concat-proj"}),
}
MAIN = ["mamba2", "mamba1", "transformer", "sequential2", "parallel-xattn"]


def make_model(variant: str, seed: int = 0, **extra) -> HybridForCausalLM:
    preset, overrides = VARIANTS[variant]
    torch.manual_seed(seed)
    cfg = {**PRESETS[preset], "n_layer": 2, **overrides, **extra}
    return HybridForCausalLM(HybridConfig(**cfg)).eval()


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Tiny models: one intra-op thread is faster than two fighting over a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    yield
    torch.set_num_threads(threads)
