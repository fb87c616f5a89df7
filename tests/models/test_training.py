"""Every architecture and every merge mode learns: a few optimizer steps lower the loss on a synthetic task."""

import pytest
import torch

from .conftest import VARIANTS, make_model


def arithmetic_batch(n=8, length=24, vocab=512, seed=0):
    """Rows x_t = (a + b t) mod 61: predictable from the two previous tokens."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, 61, (n, 1), generator=g), torch.randint(1, 7, (n, 1), generator=g)
    return (a + b * torch.arange(length)) % 61


@pytest.mark.parametrize("variant", ["mamba2", "mamba1", "transformer", "sequential2"]
                         + [v for v in VARIANTS if v.startswith("parallel")])
def test_loss_decreases(variant):
    model = make_model(variant).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = arithmetic_batch()
    losses = []
    for _ in range(10):
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.75 * losses[0], losses
