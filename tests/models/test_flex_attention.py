"""Packed attention through FlexAttention block masks (document-causal) equals the dense-mask SDPA result, for
self-attention (GQA included) and the cross-attention merge. On CPU torch has no FlexAttention backward, so the
check is forward-only here; the dense path stays the CPU default (`kernels.use_flex_attention`)."""

import pytest
import torch

from paraphrase_pipe.models import kernels

from .conftest import make_model


@pytest.mark.parametrize("variant, extra", [
    ("transformer", {}),
    ("transformer", {"attn_cfg": {"num_heads": 4, "num_heads_kv": 2}}),  # grouped-query heads
    ("sequential2", {}),
    ("parallel-xattn", {}),
    ("parallel-xattn-q-attn", {}),
])
def test_flex_block_mask_equals_the_dense_mask(variant, extra, monkeypatch):
    model = make_model(variant, **extra)
    x = torch.randint(0, 512, (2, 40))
    seq_idx = torch.tensor([[0] * 7 + [1] * 20 + [2] * 13, [5] * 33 + [9] * 7])
    monkeypatch.setenv(kernels.ATTENTION_ENV_VAR, "dense")
    with torch.no_grad():
        dense = model(x, seq_idx=seq_idx, use_cache=False).logits
    monkeypatch.setenv(kernels.ATTENTION_ENV_VAR, "flex")
    ctx = model._context(2, 40, x.device, seq_idx, None)
    assert ctx.block_mask is not None and ctx.attn_mask is None
    with torch.no_grad():
        flex = model(x, seq_idx=seq_idx, use_cache=False).logits
    torch.testing.assert_close(flex, dense, rtol=1e-5, atol=1e-5)
    other = x.clone()
    other[0, :7] = (other[0, :7] + 1) % 512  # another first document: the later ones do not move
    with torch.no_grad():
        moved = model(other, seq_idx=seq_idx, use_cache=False).logits
    torch.testing.assert_close(moved[0, 7:], flex[0, 7:], rtol=1e-5, atol=1e-5)


def test_dense_mask_stays_the_cpu_default(monkeypatch):
    monkeypatch.delenv(kernels.ATTENTION_ENV_VAR, raising=False)
    assert not kernels.use_flex_attention(torch.device("cpu"))
    monkeypatch.setenv(kernels.ATTENTION_ENV_VAR, "sparse")
    with pytest.raises(ValueError, match="auto, flex or dense"):
        kernels.use_flex_attention(torch.device("cpu"))
