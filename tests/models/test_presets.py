"""Presets are size-matched across the four types; kernel selection never imports mamba_ssm on CPU."""

import sys

import pytest
import torch

from paraphrase_pipe.models import PRESETS, HybridConfig, HybridForCausalLM, build_model, kernels


def n_params(name):
    with torch.device("meta"):
        model = HybridForCausalLM(HybridConfig(**PRESETS[name]))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size, target", [("130m", 130e6), ("370m", 370e6)])
def test_presets_are_size_matched(size, target):
    counts = {arch: n_params(f"{arch}-{size}") for arch in ("mamba", "transformer", "sequential", "parallel")}
    for arch, count in counts.items():
        assert abs(count - target) / target < 0.08, (arch, count)
        assert abs(count - counts["mamba"]) / counts["mamba"] < 0.06, counts


def test_preset_overrides_and_layer_kinds():
    model = build_model("sequential-tiny", n_layer=8, ssm_layer="mamba1", kernels="torch")
    assert model.config.block_kinds == list("MMMAMMMA")
    assert type(model.backbone.layers[0].mixer).__name__ == "Mamba1"
    assert build_model("parallel-tiny", merge="gate").config.merge == "gate"


def test_kernel_mode_resolution(monkeypatch):
    x = torch.zeros(2)
    assert kernels.resolve_mode("auto") == "auto"
    monkeypatch.setenv(kernels.ENV_VAR, "torch")
    assert kernels.resolve_mode("cuda") == "torch"
    monkeypatch.setenv(kernels.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="auto, torch or cuda"):
        kernels.resolve_mode("auto")
    monkeypatch.delenv(kernels.ENV_VAR)
    assert not kernels.use_cuda(x, "auto")
    with pytest.raises(RuntimeError, match="CUDA device"):
        kernels.use_cuda(x, "cuda")


def test_cpu_forward_never_imports_mamba_ssm_or_triton():
    model = build_model("mamba-tiny")
    model(torch.randint(0, 512, (1, 8)))
    assert "mamba_ssm" not in sys.modules and "causal_conv1d" not in sys.modules and "triton" not in sys.modules


def test_record_paths_reports_what_each_op_ran_inside_the_block_only():
    model = build_model("sequential-tiny", n_layer=4, ssm_layer="mamba1", vocab_size=64).eval()
    x = torch.randint(0, 64, (1, 8))
    with kernels.record_paths() as paths:
        model(x, use_cache=False)
    assert paths == {"scan1": "torch", "conv": "torch"}
    model(x, use_cache=False)  # outside the block nothing is recorded anywhere
    with kernels.record_paths() as again:
        pass
    assert again == {} and paths == {"scan1": "torch", "conv": "torch"}
