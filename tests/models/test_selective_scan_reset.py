"""Document resets on a kernel that cannot reset (`selective_scan_reset.py`): the construction and its hand-written
backward, against the pure-PyTorch scan with `seg`, values and every gradient. The compiled kernel is replaced by its
pure-PyTorch stand-in `TorchKernel` (`selective_scan_cuda`'s (B, D, L) interface, no resets; no CUDA here);
`benchmarks/mamba1_packed_check.py` runs the same check on the real kernel on a GPU."""

import pytest
import torch

from paraphrase_pipe.models.selective_scan import selective_scan
from paraphrase_pipe.models.selective_scan_reset import TorchKernel, document_starts, selective_scan_reset


def _inputs(b, L, d, n, seed):
    g = torch.Generator().manual_seed(seed)
    x, dt, z = (torch.randn(b, L, d, generator=g) for _ in range(3))
    B, C = (torch.randn(b, L, n, generator=g) for _ in range(2))
    A = -torch.exp(torch.randn(d, n, generator=g))  # decays from ~0.1 to ~10 per unit step
    A[0, :] = -1e-3  # a very slow channel: its reset needs the largest step
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g) * 0.5 - 2
    seg = torch.zeros(b, L, dtype=torch.int32)
    seg[0, 3:], seg[0, 11:], seg[0, 12:] = 1, 2, 3  # a one-token document too
    seg[-1, L - 1:] = 5  # a document that starts on the last token
    return [t.requires_grad_() for t in (x, dt, A, B, C, D, z, bias)], seg


@pytest.mark.parametrize("seed", [0, 1])
def test_reset_scan_matches_the_pure_scan_values_and_gradients(seed):
    tensors, seg = _inputs(2, 17, 6, 4, seed)
    ref, ref_last = selective_scan(*tensors, seg=seg)
    out, last = selective_scan_reset(*tensors, seg=seg, kernel=TorchKernel)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    want = torch.autograd.grad(ref, tensors, grad)
    got = torch.autograd.grad(out, tensors, grad)
    for name, a, b in zip(("x", "dt", "A", "B", "C", "D", "z", "dt_bias"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_without_the_construction_the_kernel_leaks_across_documents():
    """The check above can fail: the same kernel fed the packed row unchanged mixes the documents."""
    tensors, seg = _inputs(2, 17, 6, 4, 0)
    ref, _ = selective_scan(*tensors, seg=seg)
    x, dt, A, B, C, D, z, bias = tensors
    lay = lambda t: t.transpose(1, 2)  # noqa: E731
    leaky, _, _ = TorchKernel.fwd(lay(x), lay(dt), A, lay(B)[:, None], lay(C)[:, None], D, lay(z), bias)
    assert (leaky.transpose(1, 2) - ref).abs().max() > 1e-2


def test_document_starts():
    seg = torch.tensor([[0, 0, 1, 1, 1, 4], [2, 2, 2, 2, 2, 2]])
    assert document_starts(seg).tolist() == [[False, False, True, False, False, True], [False] * 6]


def test_start_positions_are_computed_once_per_batch_and_follow_changes():
    from paraphrase_pipe.models.selective_scan_reset import start_positions

    seg = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    first = start_positions(seg)
    assert start_positions(seg) is first  # every layer of a forward: no new device sync
    assert [t.tolist() for t in first] == [[0, 1], [2, 1]]
    seg[0, 3] = 2  # the same tensor, changed in place
    assert [t.tolist() for t in start_positions(seg)] == [[0, 0, 1], [2, 3, 1]]
    assert [t.tolist() for t in start_positions(seg.clone())] == [[0, 0, 1], [2, 3, 1]]
