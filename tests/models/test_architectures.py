"""Forward semantics of the four architectures: shapes, causality, packed documents, analysis hooks, ablations."""

import pytest
import torch

from paraphrase_pipe.models import HybridConfig

from .conftest import MAIN, VARIANTS, VOCAB, make_model


@pytest.mark.parametrize("variant", MAIN)
def test_shapes_loss_and_hidden_states(variant):
    model = make_model(variant)
    x = torch.randint(0, VOCAB, (2, 12))
    out = model(x, labels=x, output_hidden_states=True, use_cache=False)
    assert out.logits.shape == (2, 12, model.config.padded_vocab_size)
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(torch.log(torch.tensor(512.0)).item(), rel=0.2)
    assert len(out.hidden_states) == model.config.n_layer + 1
    assert out.hidden_states[0].shape == (2, 12, model.config.d_model)
    torch.testing.assert_close(model.lm_head(model.final_hidden_states(x)), out.logits)


@pytest.mark.parametrize("variant", MAIN)
def test_future_tokens_never_change_past_outputs(variant):
    model = make_model(variant)
    x = torch.randint(0, VOCAB, (2, 20))
    y = x.clone()
    y[:, 9:] = torch.randint(0, VOCAB, (2, 11))
    with torch.no_grad():
        a, b = model(x, use_cache=False).logits, model(y, use_cache=False).logits
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=1e-5)
    assert (a[:, 9:] - b[:, 9:]).abs().max() > 1e-3  # the change is visible where it may be


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_packed_documents_equal_separate_runs(variant):
    model = make_model(variant)
    a, b = torch.randint(0, VOCAB, (1, 11)), torch.randint(0, VOCAB, (1, 14))  # crosses a 16-token SSD chunk
    packed = torch.cat([a, b], 1)
    seq_idx = torch.tensor([[7] * 11 + [3] * 14])
    with torch.no_grad():
        out = model(packed, seq_idx=seq_idx, use_cache=False).logits
        ref = torch.cat([model(a, use_cache=False).logits, model(b, use_cache=False).logits], 1)
        leaky = model(packed, use_cache=False).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert (leaky[:, 11:] - ref[:, 11:]).abs().max() > 1e-3  # without seq_idx the first document is seen


def test_loss_ignores_predictions_across_documents():
    model = make_model("sequential2")
    x = torch.randint(0, VOCAB, (1, 10))
    seq_idx = torch.tensor([[0] * 4 + [1] * 6])
    out = model(x, labels=x, seq_idx=seq_idx, use_cache=False)
    labels = x[:, 1:].clone()
    labels[0, 3] = -100  # token 4 starts document 1: not predicted from document 0
    ref = torch.nn.functional.cross_entropy(out.logits[0, :-1].float(), labels[0], ignore_index=-100)
    torch.testing.assert_close(out.loss, ref)


def test_padding_mask_is_a_separate_document():
    model = make_model("parallel-xattn")
    x = torch.randint(1, VOCAB, (1, 9))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), x], 1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], 1)
    with torch.no_grad():
        out = model(padded, attention_mask=mask, use_cache=False).logits[:, 4:]
        ref = model(x, use_cache=False).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_forward_hidden_and_ablations():
    model = make_model("parallel-xattn")
    x = torch.randint(0, VOCAB, (2, 8))
    trace = model.forward_hidden(x)
    assert len(trace["hidden_states"]) == 3 and len(trace["mixer_outputs"]) == 2
    assert set(trace["branch_outputs"][1]) == {"ssm", "attn"}
    full = model(x, use_cache=False).logits
    with model.ablate(layers=[1]):
        skipped = model.forward_hidden(x)
        torch.testing.assert_close(skipped["hidden_states"][2], skipped["hidden_states"][1])
    with model.ablate(branches=["0.attn"]):
        no_attn = model.forward_hidden(x)
        assert no_attn["branch_outputs"][0]["attn"].abs().max() == 0
        assert (model(x, use_cache=False).logits - full).abs().max() > 1e-4
    assert model.config.skip_layers == [] and model.config.skip_branches == []
    torch.testing.assert_close(model(x, use_cache=False).logits, full)
    with pytest.raises(ValueError, match="skip_branches"):
        with model.ablate(branches=["0.mlp"]):
            pass


@pytest.mark.parametrize("bad, match", [
    ({"arch": "rnn"}, "arch must be one of"),
    ({"arch": "sequential"}, "layer_pattern"),
    ({"arch": "sequential", "layer_pattern": "MXA"}, "may only contain"),
    ({"merge": "concat"}, "merge must be one of"),
    ({"ssm_cfg": {"d_stat": 4}}, "unknown ssm_cfg keys"),
    ({"arch": "transformer", "attn_cfg": {"num_heads": 3, "num_heads_kv": 2}}, "multiple of num_heads_kv"),
    ({"skip_layers": [99]}, "skip_layers"),
    ({"kernels": "triton"}, "kernels must be one of"),
])
def test_config_errors_are_clear(bad, match):
    with pytest.raises(ValueError, match=match):
        HybridConfig(**{"d_model": 64, "n_layer": 2, **bad})


@pytest.mark.parametrize("merge", ["sum", "norm-mean", "gate", "concat-proj", "cross-attention"])
def test_a_removed_branch_leaves_the_kept_branch_alone_for_every_merge(merge):
    """Branch ablation means one thing for every merge (comparable recall drops): the block outputs its kept
    branch. Zeros through a cross-attention merge would instead leave a uniform average of the values."""
    model = make_model("parallel-xattn", merge=merge)
    x = torch.randint(0, VOCAB, (1, 8))
    trace = model.forward_hidden(x)
    with model.ablate(branches=["0.attn"]):
        no_attn = model.forward_hidden(x)
    with model.ablate(branches=["0.ssm"]):
        no_ssm = model.forward_hidden(x)
    torch.testing.assert_close(no_attn["mixer_outputs"][0], trace["branch_outputs"][0]["ssm"])
    torch.testing.assert_close(no_ssm["mixer_outputs"][0], trace["branch_outputs"][0]["attn"])
    assert (trace["mixer_outputs"][0] - trace["branch_outputs"][0]["ssm"]).abs().max() > 1e-6  # the merge does something
