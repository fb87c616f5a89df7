"""Fused cross-entropy, LR schedule and config: the pieces of the recipe, against plain references."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from paraphrase_pipe.train.config import ConfigError, load_config
from paraphrase_pipe.train.loss import linear_cross_entropy
from paraphrase_pipe.train.schedule import lr_at

RECIPES = sorted((Path(__file__).parents[2] / "pipelines").glob("train-*.yaml"))


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_loss_and_grads_match_materialised_logits(chunk):
    torch.manual_seed(chunk)
    h = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    t[::4] = -100
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=-100, reduction="sum")
    ref_grads = torch.autograd.grad(ref * 0.3, (h, w))
    out = linear_cross_entropy(h, w, t, chunk=chunk)
    grads = torch.autograd.grad(out * 0.3, (h, w))
    assert torch.allclose(out.double(), ref, rtol=1e-6)
    for g, r in zip(grads, ref_grads):
        assert (g - r).norm() / r.norm() < 1e-6


def test_chunked_loss_in_bf16_stays_close_and_keeps_fp32_weight_grad():
    torch.manual_seed(0)
    h = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(100, 32, requires_grad=True)
    t = torch.randint(0, 100, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_cross_entropy(h, w, t, chunk=16)
    out.backward()
    ref = F.cross_entropy(h.double() @ w.double().t(), t, reduction="sum")
    assert abs(out.item() - ref.item()) / ref.item() < 1e-2
    assert w.grad.dtype == torch.float32 and h.grad.dtype == torch.float32


def test_schedules_rewarm_then_decay_to_the_floor():
    total, warm = 100, 10
    for schedule in ("cosine", "wsd"):
        lrs = [lr_at(s, total, 1.0, warm, schedule, min_ratio=0.1, decay_fraction=0.2) for s in range(total)]
        assert lrs[0] == pytest.approx(0.1) and lrs[warm - 1] == pytest.approx(1.0)
        assert lrs[-1] == pytest.approx(0.1)
        assert all(a >= b - 1e-12 for a, b in zip(lrs[warm:], lrs[warm + 1:]))  # never rises after warm-up
    wsd = [lr_at(s, total, 1.0, warm, "wsd", 0.1, 0.2) for s in range(total)]
    assert wsd[79] == 1.0 and wsd[80] < 1.0  # stable until the last 20% of the run
    assert lr_at(50, total, 2.0, warm, "constant") == 2.0


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="steps"):
        load_config(None, {"data": ["x"], "model": "m"})
    with pytest.raises(ConfigError, match="weights"):
        load_config(None, {"data": ["a", "b"], "weights": [1.0], "steps": 1})
    with pytest.raises(ConfigError, match="lr"):
        load_config(None, {"steps": 1, "lr": -1})
    bad = tmp_path / "r.yaml"
    bad.write_text("seq_len: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("sequence_length: 12\nsteps: 1")
    with pytest.raises(ConfigError, match="sequence_length"):
        load_config(bad)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe):
    cfg = load_config(recipe, {"data": ["out"], "model": "m"})
    assert cfg.steps or cfg.tokens
