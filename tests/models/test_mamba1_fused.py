"""The fused Mamba-1 training path (`mamba1_fused.py`: conv, x_proj, dt_proj, scan, gate and out_proj in one autograd
Function in the kernels' (B, D, L) layout, document resets by sparse corrections) against the op-by-op pure path
(plain conv and scan with document masks), values and every gradient. The compiled kernels are replaced by their
pure-PyTorch stand-in `TorchKernel` (same interface and output layouts, no resets: no CUDA here), so this runs the
Function's real forward, recompute and hand-written backward; benchmarks/mamba1_packed_check.py checks the compiled
kernels on a GPU."""

import functools

import pytest
import torch

from paraphrase_pipe.models import kernels, mamba1
from paraphrase_pipe.models.context import build_context
from paraphrase_pipe.models.conv import causal_conv
from paraphrase_pipe.models.mamba1 import Mamba1
from paraphrase_pipe.models.mamba1_fused import conv_forward, conv_windows
from paraphrase_pipe.models.selective_scan_reset import TorchKernel

from .conftest import VOCAB, make_model

B, L, D_MODEL = 3, 40, 16


def _mixer(bias: bool, seed: int) -> Mamba1:
    torch.manual_seed(seed)
    m = Mamba1(D_MODEL, d_state=4, d_conv=4, dt_rank=3, bias=bias)
    with torch.no_grad():
        m.A_log[0] = -7.0  # a very slow channel (|A| ~ 1e-3): its reset needs the largest step
        m.D.normal_()
        m.conv1d.bias.normal_()
        m.dt_proj.bias.normal_(-2, 0.5)
    return m


def _doc_ids():
    """Row 0: documents of 1 and 2 tokens (shorter than the conv window), one starting at t = 1; row 1 unpacked;
    row 2: a document starting on the last token."""
    ids = torch.zeros(B, L, dtype=torch.long)
    ids[0, 1:], ids[0, 3:], ids[0, 4:], ids[0, 6:], ids[0, 25:] = 1, 2, 3, 4, 5
    ids[2, 17:], ids[2, L - 1:] = 1, 2
    return ids


def _rel(a, b):
    return float((a.detach() - b.detach()).norm() / b.detach().norm().clamp_min(1e-30))


def _grads(mixer, hidden, out, grad):
    leaves = [hidden] + list(mixer.parameters())
    return torch.autograd.grad(out, leaves, grad)


@pytest.mark.parametrize("bias,packed", [(False, True), (True, True), (False, False)])
def test_fused_mixer_matches_the_op_by_op_pure_path(bias, packed):
    mixer = _mixer(bias, seed=int(bias))
    hidden = torch.randn(B, L, D_MODEL, requires_grad=True)
    ctx = build_context(B, L, hidden.device, seq_idx=_doc_ids() if packed else None, kernels="torch")
    ref = mixer.forward_ops(hidden, ctx)
    out = mixer.forward_fused(hidden, ctx.seg, kernel=TorchKernel)
    assert out.shape == ref.shape and _rel(out, ref) <= 1e-5
    grad = torch.randn_like(ref)
    names = ["hidden"] + [n for n, _ in mixer.named_parameters()]
    for name, got, want in zip(names, _grads(mixer, hidden, out, grad), _grads(mixer, hidden, ref, grad)):
        assert got is not None and _rel(got, want) <= 1e-5, (name, _rel(got, want))


def test_without_the_conv_correction_documents_leak():
    """The check above can fail: the conv run without its start correction reads the previous document's tail."""
    seg = build_context(B, L, torch.device("cpu"), seq_idx=_doc_ids()).seg
    x = torch.randn(B, 8, L)
    w, b = torch.randn(8, 4), torch.randn(8)
    want = TorchKernel.conv(x, w, b)  # no resets ...
    masked = causal_conv(x.transpose(1, 2), w, b, seg=seg).transpose(1, 2)  # ... the pure conv with masks
    assert (want - masked).abs().max() > 1e-2
    torch.testing.assert_close(conv_forward(TorchKernel, x, w, b, conv_windows(seg, 4))[0], masked, rtol=1e-6, atol=1e-6)


def test_only_the_inputs_mamba_inner_fn_saves_are_kept_for_backward():
    """Conv output and delta are recomputed in backward: the only saved (B, d_inner, L)-sized activations are
    in_proj's output xz (x and z) and the scan's output, as in mamba_ssm's mamba_inner_fn (checkpoint_lvl=1)."""
    mixer = _mixer(False, seed=0)
    hidden = torch.randn(B, L, D_MODEL, requires_grad=True)
    seg = build_context(B, L, hidden.device, seq_idx=_doc_ids()).seg
    params = {p.data_ptr() for p in mixer.parameters()}
    saved = []

    def pack(t):
        if t.data_ptr() not in params:
            saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mixer.forward_fused(hidden, seg, kernel=TorchKernel)
    big = B * mixer.d_inner * L
    assert sorted(n for n in saved if n >= big) == [big, 2 * big]


def test_the_model_runs_the_fused_path_where_it_is_chosen(monkeypatch):
    """Model level: with the CUDA predicate forced on (the compiled kernels replaced by the stand-in), every
    Mamba-1 layer of a packed forward goes through the fused function and gives the pure model's loss and
    gradients."""
    model = make_model("mamba1").train()
    ids = torch.randint(0, VOCAB, (2, 48))
    doc = torch.zeros_like(ids)
    doc[0, 5:], doc[0, 7:], doc[1, 30:] = 1, 2, 1
    ref = model(ids, labels=ids, seq_idx=doc, use_cache=False).loss
    want = torch.autograd.grad(ref, list(model.parameters()))
    monkeypatch.setattr(mamba1, "use_fused_mamba1", lambda *a: True)
    monkeypatch.setattr(mamba1, "mamba1_fused", functools.partial(kernels.mamba1_fused, kernel=TorchKernel))
    with kernels.record_paths() as paths:
        loss = model(ids, labels=ids, seq_idx=doc, use_cache=False).loss
    assert paths == {"scan1": "fused-reset", "conv": "fused-reset"}
    assert _rel(loss, ref) <= 1e-6
    got = torch.autograd.grad(loss, list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), got, want):
        assert _rel(a, b) <= 1e-5, (name, _rel(a, b))
