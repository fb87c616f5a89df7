"""The document-resetting Triton selective scan (forward and backward) against the pure-PyTorch scan, values and
gradients. Runs on CPU under Triton's interpreter when triton is installed (the project venv has none: it is
skipped there; `benchmarks/mamba1_packed_check.py` checks the compiled kernel on a GPU)."""

import os

import pytest
import torch

if not torch.cuda.is_available():  # before triton is imported: run its kernels on CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from paraphrase_pipe.models.selective_scan import selective_scan  # noqa: E402
from paraphrase_pipe.models.selective_scan_triton import selective_scan_triton  # noqa: E402

CHUNK = 8  # checkpoint every 8 steps: several chunks on short rows (the interpreter is slow)


def _inputs(b, L, d, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, dt, z = (torch.randn(b, L, d, generator=g) for _ in range(3))
    B, C = (torch.randn(b, L, n, generator=g) for _ in range(2))
    A = -torch.exp(torch.randn(d, n, generator=g) * 0.5)
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g) * 0.5 - 2
    seg = torch.zeros(b, L, dtype=torch.int32)
    seg[0, 5:] = 1
    seg[0, CHUNK + 3:] = 2  # a boundary inside the second chunk
    seg[0, 2 * CHUNK:] = 3  # and one on a chunk edge
    seg[-1, 1:] = 4
    return [t.requires_grad_() for t in (x, dt, A, B, C, D, z, bias)], seg


@pytest.mark.parametrize("shape", [(2, 2 * CHUNK + 5, 40, 16), (1, 7, 8, 4)])  # partial chunks and blocks, N < 16
def test_triton_scan_matches_the_pure_scan_values_and_gradients(shape):
    tensors, seg = _inputs(*shape)
    ref, ref_last = selective_scan(*tensors, seg=seg)
    out, last = selective_scan_triton(*tensors, seg=seg, chunk=CHUNK)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    want = torch.autograd.grad(ref, tensors, grad)
    got = torch.autograd.grad(out, tensors, grad)
    for name, a, b in zip(("x", "dt", "A", "B", "C", "D", "z", "dt_bias"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
