"""Numerics of the pure-PyTorch mixers against independent references.

- Mamba-1 / Mamba-2 models against transformers' own MambaForCausalLM / Mamba2ForCausalLM (same weights):
  logits and parameter gradients;
- the chunked, document-aware SSD scan against the plain recurrence of the Mamba-2 paper, for any chunk size;
- the document-aware causal convolution against F.conv1d.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from paraphrase_pipe.models import from_transformers
from paraphrase_pipe.models.conv import causal_conv, conv_tail
from paraphrase_pipe.models.rmsnorm import GatedRMSNorm
from paraphrase_pipe.models.ssd import ssd_scan


def _compare_with_transformers(hf_model, length):
    ours = from_transformers(hf_model)
    x = torch.randint(0, hf_model.config.vocab_size, (2, length))
    ref = hf_model(x, labels=x)
    out = ours(x, labels=x, use_cache=False)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    ref.loss.backward()
    out.loss.backward()
    hf_grads = {k.replace("embeddings.", "embedding."): p.grad for k, p in hf_model.named_parameters()}
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, hf_grads[name], rtol=1e-3, atol=1e-6, msg=name)


def test_mamba1_matches_transformers_mamba():
    cfg = MambaConfig(vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2, time_step_rank=4)
    _compare_with_transformers(MambaForCausalLM(cfg), length=19)


def test_mamba2_matches_transformers_mamba2():
    cfg = Mamba2Config(vocab_size=96, hidden_size=32, state_size=16, num_hidden_layers=2, head_dim=8, num_heads=8,
                       n_groups=1, chunk_size=8)
    _compare_with_transformers(Mamba2ForCausalLM(cfg), length=21)  # three chunks, the last one partial


def recurrence(x, dt, A, B, C, D, seg, state):
    """Mamba-2 SSM, one step at a time (h_t = exp(dt A) h + dt B x, y = C.h + D x), state reset where seg changes."""
    b, l, h, p = x.shape
    rep = h // B.shape[2]
    hstate = state.clone()
    ys = []
    for t in range(l):
        prev = seg[:, t - 1] if t else torch.zeros_like(seg[:, 0])
        keep = (seg[:, t] == prev).float()[:, None, None, None]
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        bt, ct = B[:, t].repeat_interleave(rep, 1), C[:, t].repeat_interleave(rep, 1)
        hstate = keep * decay * hstate + (dt[:, t, :, None] * x[:, t])[..., None] * bt[:, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", hstate, ct) + D[:, None] * x[:, t])
    return torch.stack(ys, 1), hstate


@pytest.mark.parametrize("chunk", [1, 5, 8, 64])
def test_ssd_chunked_scan_equals_recurrence(chunk):
    b, l, h, p, g, n = 2, 23, 4, 3, 2, 5
    x, B, C = torch.randn(b, l, h, p), torch.randn(b, l, g, n), torch.randn(b, l, g, n)
    dt_raw, dt_bias = torch.randn(b, l, h), torch.randn(h) * 0.5
    A, D = -torch.rand(h) * 2 - 0.1, torch.randn(h)
    state = torch.randn(b, h, p, n)
    seg = torch.tensor([[0] * 6 + [1] * 9 + [2] * 8, [1] * 23], dtype=torch.int32)  # row 0 continues `state`
    y, final = ssd_scan(x, dt_raw, A, B, C, D, dt_bias, chunk_size=chunk, seg=seg, state=state)
    ref_y, ref_final = recurrence(x, F.softplus(dt_raw + dt_bias), A, B, C, D, seg, state)
    torch.testing.assert_close(y, ref_y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(final, ref_final, rtol=1e-4, atol=1e-5)


def test_causal_conv_matches_conv1d_and_respects_documents():
    b, l, c, k = 2, 13, 6, 4
    x, w, bias = torch.randn(b, l, c), torch.randn(c, k), torch.randn(c)
    ref = F.silu(F.conv1d(x.transpose(1, 2), w[:, None], bias, padding=k - 1, groups=c)[..., :l]).transpose(1, 2)
    torch.testing.assert_close(causal_conv(x, w, bias), ref)
    seg = torch.tensor([[1] * 5 + [2] * 8] * 2)
    packed = causal_conv(x, w, bias, seg=seg)
    torch.testing.assert_close(packed[:, 5:], causal_conv(x[:, 5:], w, bias))
    # decoding one token with the cached tail equals the full convolution
    tail = conv_tail(x[:, :-1], seg[:, :-1], None, k)
    torch.testing.assert_close(causal_conv(x[:, -1:], w, bias, seg=seg[:, -1:] * 0, state=tail), packed[:, -1:])


def test_gated_rmsnorm_is_grouped():
    norm = GatedRMSNorm(8, eps=1e-5, group_size=4)
    norm.weight.data = torch.randn(8)
    y, z = torch.randn(3, 8), torch.randn(3, 8)
    h = (y * F.silu(z)).view(3, 2, 4)
    ref = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).view(3, 8) * norm.weight
    torch.testing.assert_close(norm(y, z), ref)
