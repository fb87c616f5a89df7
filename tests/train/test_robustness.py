"""Review findings of issue 16, each against the real code path: weight-decay groups of every mixer, packed rows
for models that take no `seq_idx`, no gradient buffers under no_grad, verified checkpoints with fallback, a
planted pickle, a rerun of a finished run (sharded DCP checkpoints under FSDP: test_train.py)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from paraphrase_pipe.models import PRESETS, HybridConfig, HybridForCausalLM, build_model
from paraphrase_pipe.models.checkpoints import export_state_spaces, load_state_spaces
from paraphrase_pipe.train.config import load_config
from paraphrase_pipe.train.loop import _param_groups, train
from paraphrase_pipe.train.loss import linear_cross_entropy
from paraphrase_pipe.train.model import ModelError, SummedCausalLMLoss

from test_train import COMMON, _cli, _losses

SSM_NAMES = ("A_log", "D", "dt_bias")


def _tiny(ssm_layer: str, arch: str = "sequential-tiny", **extra) -> HybridForCausalLM:
    torch.manual_seed(0)
    return HybridForCausalLM(HybridConfig(**{**PRESETS[arch], "vocab_size": 256, "n_layer": 2,
                                             "ssm_layer": ssm_layer, **extra}))


def _no_decay_names(model) -> tuple[set, set]:
    loss = SummedCausalLMLoss(model)
    groups = _param_groups(loss, 0.1)
    name = {id(p): n for n, p in loss.named_parameters()}
    return ({name[id(p)] for p in groups[0]["params"]}, {name[id(p)] for p in groups[1]["params"]})


@pytest.mark.parametrize("ssm_layer,arch", [("mamba1", "sequential-tiny"), ("mamba2", "sequential-tiny"),
                                            ("mamba1", "parallel-tiny")])
def test_ssm_parameters_are_never_weight_decayed_however_the_model_was_made(ssm_layer, arch, tmp_path):
    model = _tiny(ssm_layer, arch)
    model.save_pretrained(tmp_path / "hf")
    made = {"constructed": model, "from_pretrained": HybridForCausalLM.from_pretrained(tmp_path / "hf"),
            "build_model(dir)": build_model(tmp_path / "hf")}
    if arch != "parallel-tiny":
        made["state-spaces"] = load_state_spaces(export_state_spaces(model, tmp_path / "ss"))
    for how, m in made.items():
        decay, keep = _no_decay_names(m)
        ssm = {n for n, _ in m.named_parameters() if n.rsplit(".", 1)[-1] in SSM_NAMES}
        expected = {"A_log", "D"} | ({"dt_bias"} if ssm_layer == "mamba2" else set())
        assert {n.rsplit(".", 1)[-1] for n in ssm} == expected, how
        assert {f"model.{n}" for n in ssm} <= keep, how
        assert not any(n.rsplit(".", 1)[-1] in SSM_NAMES for n in decay), (how, decay)
        assert any(n.endswith("in_proj.weight") for n in decay), how  # matrices are still decayed
        if ssm_layer == "mamba1":  # the 2-D A_log, which `ndim < 2` alone missed
            assert all(p.ndim == 2 for n, p in m.named_parameters() if n.endswith("A_log"))


def test_fsdp_sharding_keeps_the_no_weight_decay_flags(tmp_path):
    import torch.distributed as dist

    from paraphrase_pipe.train.distributed import Env, wrap

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        module = wrap(SummedCausalLMLoss(_tiny("mamba1", "mamba-tiny")), Env(world=2), "fsdp", False)
        keep = {id(p) for p in _param_groups(module, 0.1)[1]["params"]}
        a_log = module.model.backbone.layers[0].mixer.A_log
        assert type(a_log).__name__ == "DTensor" or type(a_log.data).__name__ == "DTensor"
        assert sorted(n for n, p in module.named_parameters() if id(p) in keep and p.ndim == 2) == [
            "model.backbone.layers.0.mixer.A_log", "model.backbone.layers.1.mixer.A_log"]
    finally:
        dist.destroy_process_group()


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2)).eval()


@pytest.mark.parametrize("loss_chunk", [16, 0])  # fused head + chunked loss, and plain logits
def test_hf_attention_model_keeps_packed_documents_apart(loss_chunk):
    loss = SummedCausalLMLoss(_llama(), loss_chunk)
    assert loss.boundaries == "position_ids"
    g = torch.Generator().manual_seed(0)
    ids, targets = torch.randint(0, 128, (2, 2, 12), generator=g)
    seq_idx = torch.tensor([[0] * 5 + [1] * 7, [0] * 9 + [1] * 3])
    packed = loss(ids, targets, seq_idx)
    alone = sum(loss(ids[r:r + 1, seq_idx[r] == d], targets[r:r + 1, seq_idx[r] == d])
                for r in range(2) for d in (0, 1))
    assert packed.item() == pytest.approx(alone.item(), rel=1e-5)
    other = ids.clone()
    other[0, :5] = (other[0, :5] + 7) % 128  # change document 0 of row 0: document 1's loss must not move
    t1 = targets.clone()
    t1[:, :] = -100
    t1[0, 5:11] = targets[0, 5:11]
    assert loss(ids, t1, seq_idx).item() == pytest.approx(loss(other, t1, seq_idx).item(), rel=1e-6)


def test_models_that_cannot_separate_documents_are_refused_with_one_clear_message():
    from transformers import MambaConfig, MambaForCausalLM

    stateful = MambaForCausalLM(MambaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, state_size=4))
    with pytest.raises(ModelError, match="cannot keep the documents of a packed row apart .*recurrent state"):
        SummedCausalLMLoss(stateful)


def test_no_grad_validation_allocates_no_head_gradient_buffers():
    class Shapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.seen += [tuple(o.shape) for o in (out if isinstance(out, (tuple, list)) else [out])
                          if isinstance(o, torch.Tensor)]
            return out

    hidden = torch.randn(64, 16, requires_grad=True)
    weight = torch.randn(200, 16, requires_grad=True)
    targets = torch.randint(0, 200, (64,))
    for grad, expect_buffers in ((False, False), (True, True)):
        with torch.set_grad_enabled(grad), Shapes() as shapes:
            loss = linear_cross_entropy(hidden, weight, targets, chunk=16)
        buffers = {(64, 16), (200, 16)} & set(shapes.seen)  # grad_h, grad_w
        assert bool(buffers) == expect_buffers, (grad, buffers)
        ref = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def _run(real_build, tiny_model, out, **extra) -> dict:
    cfg = {**COMMON, "data": [str(real_build)], "model": str(tiny_model), "steps": 8, "save_every": 4,
           "eval_every": 0, "val_fraction": 0.1, "output": str(out), **extra}
    return cfg


def test_damaged_checkpoint_falls_back_to_the_last_good_one_and_resumes_exactly(real_build, tiny_model, tmp_path,
                                                                                capsys):
    run = tmp_path / "run"
    cfg = _run(real_build, tiny_model, run)
    first = train(load_config(None, cfg))
    expected, weights = _losses(run), load_file(run / "final" / "model.safetensors")
    step8 = run / "checkpoints" / "step_00000008"
    meta = json.loads((step8 / "trainer.json").read_text())
    assert set(meta["files"]) == {"model.pt", "optimizer.pt"}
    assert first["val_loss"] is not None and meta["val_loss"] == first["val_loss"]

    # a rerun of the finished run says what it did and reports the final validation loss, not None
    from typer.testing import CliRunner

    from paraphrase_pipe.cli import app

    result = CliRunner().invoke(app, _cli(cfg)[1:])
    assert result.exit_code == 0, result.output
    assert f"final val_loss {first['val_loss']}" in result.output and "None" not in result.output

    # truncate the newest checkpoint (a full disk, a killed copy): one line, then resume from step 4
    size = (step8 / "model.pt").stat().st_size
    with open(step8 / "model.pt", "r+b") as f:
        f.truncate(size // 2)
    shutil.rmtree(run / "final")
    capsys.readouterr()
    again = train(load_config(None, cfg))
    said = capsys.readouterr().out
    assert f"checkpoint step_00000008 is damaged (model.pt has {size // 2:,} bytes, {size:,} were written): " \
           "trying step_00000004" in said, said
    assert "Traceback" not in said
    assert _losses(run) == expected and again["val_loss"] == first["val_loss"]
    final = load_file(run / "final" / "model.safetensors")
    assert all(torch.equal(weights[k], final[k]) for k in weights)


def test_a_planted_pickle_is_refused_in_one_line(real_build, tiny_model, tmp_path):
    run = tmp_path / "run"
    cfg = _run(real_build, tiny_model, run, steps=4)
    train(load_config(None, cfg))
    step = run / "checkpoints" / "step_00000004"
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model.backbone.embedding.weight": Evil()}, step / "model.pt")
    meta = json.loads((step / "trainer.json").read_text())  # an attacker rewrites the checksums too
    from paraphrase_pipe.output.shards import sha256_file

    meta["files"]["model.pt"] = {"bytes": (step / "model.pt").stat().st_size, "sha256": sha256_file(step / "model.pt")}
    (step / "trainer.json").write_text(json.dumps(meta))
    shutil.rmtree(run / "final")
    from typer.testing import CliRunner

    from paraphrase_pipe.cli import app

    result = CliRunner().invoke(app, _cli(cfg)[1:])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split("error:", 1)[1].split())  # the one error, unwrapped
    assert message.endswith("model.pt is not a safe checkpoint (it holds Python objects, not only tensors): "
                            "refused, nothing was loaded"), result.output
    assert "weights_only" not in result.output and "Traceback" not in result.output
    assert not marker.exists()
