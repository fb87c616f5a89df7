"""Released-checkpoint formats: state-spaces `config.json` + `pytorch_model.bin` and transformers' Mamba dirs.

The tiny checkpoints below are written by hand in mamba_ssm's exact layout (key names and shapes of
`MambaLMHeadModel.state_dict()` as its modules define them), not produced by our code, and the loaded model
is checked against transformers' own Mamba / Mamba2 implementation on the same tensors.
"""

import json
import math

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from paraphrase_pipe.models import build_model, export_state_spaces, load_state_spaces

D, N_LAYER, VOCAB, PAD = 32, 2, 100, 8  # padded vocabulary 104, as MambaLMHeadModel pads it


def mamba1_mixer(d=D, n=8, k=4, e=2):
    r, di = math.ceil(d / 16), e * d
    return {"A_log": torch.log(torch.arange(1, n + 1.0)).repeat(di, 1), "D": torch.randn(di),
            "in_proj.weight": torch.randn(2 * di, d) * 0.1, "conv1d.weight": torch.randn(di, 1, k) * 0.3,
            "conv1d.bias": torch.randn(di) * 0.1, "x_proj.weight": torch.randn(r + 2 * n, di) * 0.1,
            "dt_proj.weight": torch.randn(di, r) * 0.3, "dt_proj.bias": torch.randn(di) * 0.5 - 3,
            "out_proj.weight": torch.randn(d, di) * 0.1}


def mamba2_mixer(d=D, n=16, k=4, e=2, p=16, g=1):
    di, h = e * d, e * d // p
    return {"dt_bias": torch.randn(h) * 0.5 - 3, "A_log": torch.log(torch.rand(h) * 15 + 1), "D": torch.randn(h),
            "in_proj.weight": torch.randn(2 * di + 2 * g * n + h, d) * 0.1,
            "conv1d.weight": torch.randn(di + 2 * g * n, 1, k) * 0.3, "conv1d.bias": torch.randn(di + 2 * g * n) * 0.1,
            "norm.weight": 1 + torch.randn(di) * 0.1, "out_proj.weight": torch.randn(d, di) * 0.1}


def mha_mixer(d=D, heads=4, heads_kv=2, hd=8):
    return {"in_proj.weight": torch.randn(hd * (heads + 2 * heads_kv), d) * 0.1, "in_proj.bias": torch.randn(hd * (heads + 2 * heads_kv)) * 0.1,
            "out_proj.weight": torch.randn(d, heads * hd) * 0.1}


def write_checkpoint(path, config, mixers, mlp_hidden=0):
    vp = -(-config["vocab_size"] // config["pad_vocab_size_multiple"]) * config["pad_vocab_size_multiple"]
    emb = torch.randn(vp, D) * 0.5
    state = {"backbone.embedding.weight": emb, "backbone.norm_f.weight": 1 + 0.1 * torch.randn(D)}
    for i, mixer in enumerate(mixers):
        state[f"backbone.layers.{i}.norm.weight"] = 1 + 0.1 * torch.randn(D)
        state.update({f"backbone.layers.{i}.mixer.{k}": v for k, v in mixer.items()})
        if mlp_hidden:
            state[f"backbone.layers.{i}.norm2.weight"] = 1 + 0.1 * torch.randn(D)
            state[f"backbone.layers.{i}.mlp.fc1.weight"] = torch.randn(2 * mlp_hidden, D) * 0.1
            state[f"backbone.layers.{i}.mlp.fc2.weight"] = torch.randn(D, mlp_hidden) * 0.1
    state["lm_head.weight"] = emb  # tied: MambaLMHeadModel's state_dict holds both keys
    path.mkdir(parents=True, exist_ok=True)
    torch.save(state, path / "pytorch_model.bin")
    (path / "config.json").write_text(json.dumps(config))
    return state


MAMBA1_CFG = {"d_model": D, "n_layer": N_LAYER, "vocab_size": VOCAB, "ssm_cfg": {"d_state": 8}, "rms_norm": True,
              "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": PAD}
MAMBA2_CFG = {"d_model": D, "d_intermediate": 0, "n_layer": N_LAYER, "vocab_size": VOCAB,
              "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 16, "chunk_size": 8}, "attn_layer_idx": [],
              "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
              "pad_vocab_size_multiple": PAD, "tie_embeddings": True}
HYBRID_CFG = {**MAMBA2_CFG, "n_layer": 3, "d_intermediate": 100, "attn_layer_idx": [1],
              "attn_cfg": {"causal": True, "num_heads": 4, "num_heads_kv": 2, "head_dim": 8, "rotary_emb_dim": 4,
                           "out_proj_bias": False}}


def transformers_reference(kind, state):
    vp = state["backbone.embedding.weight"].shape[0]
    common = dict(hidden_size=D, num_hidden_layers=N_LAYER, vocab_size=vp, layer_norm_epsilon=1e-5,
                  tie_word_embeddings=True, residual_in_fp32=True)
    if kind == "mamba1":
        hf = MambaForCausalLM(MambaConfig(state_size=8, time_step_rank=2, **common))
    else:
        hf = Mamba2ForCausalLM(Mamba2Config(state_size=16, head_dim=16, num_heads=4, n_groups=1, chunk_size=8,
                                            **common))
    renamed = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in state.items()}
    hf.load_state_dict(renamed, strict=True)
    return hf.eval()


@pytest.mark.parametrize("kind, cfg, make", [("mamba1", MAMBA1_CFG, mamba1_mixer), ("mamba2", MAMBA2_CFG, mamba2_mixer)])
def test_state_spaces_checkpoint_loads_and_matches_transformers(tmp_path, kind, cfg, make):
    state = write_checkpoint(tmp_path / "ckpt", cfg, [make() for _ in range(N_LAYER)])
    model = build_model(tmp_path / "ckpt")
    assert model.config.ssm_layer == kind and model.config.padded_vocab_size == 104
    assert set(model.state_dict()) == set(state)
    x = torch.randint(0, VOCAB, (2, 19))
    with torch.no_grad():
        ours = model(x, use_cache=False).logits
        ref = transformers_reference(kind, state)(x).logits
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cfg, mixers, mlp", [
    (MAMBA1_CFG, lambda: [mamba1_mixer(), mamba1_mixer()], 0),
    (MAMBA2_CFG, lambda: [mamba2_mixer(), mamba2_mixer()], 0),
    (HYBRID_CFG, lambda: [mamba2_mixer(), mha_mixer(), mamba2_mixer()], 128),  # mamba2attn layout, GatedMLP
])
def test_state_spaces_round_trip(tmp_path, cfg, mixers, mlp):
    state = write_checkpoint(tmp_path / "in", cfg, mixers(), mlp_hidden=mlp)
    model = load_state_spaces(tmp_path / "in")
    export_state_spaces(model, tmp_path / "out")
    back = torch.load(tmp_path / "out" / "pytorch_model.bin", weights_only=True)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    exported = json.loads((tmp_path / "out" / "config.json").read_text())
    for key, value in cfg.items():
        if key == "attn_cfg" and value:
            assert {k: exported[key][k] for k in value} == value
        elif key != "fused_add_norm":
            assert exported[key] == value, key
    x = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(load_state_spaces(tmp_path / "out")(x).logits, model(x).logits, rtol=0, atol=0)


def test_transformers_format_directory(tmp_path):
    hf = MambaForCausalLM(MambaConfig(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=2)).eval()
    hf.save_pretrained(tmp_path)
    model = build_model(tmp_path)
    x = torch.randint(0, 64, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, hf(x).logits, rtol=1e-4, atol=1e-5)


class NotATensor:
    pass


def test_bad_checkpoints_give_clear_errors(tmp_path):
    state = write_checkpoint(tmp_path / "missing", MAMBA1_CFG, [mamba1_mixer(), mamba1_mixer()])
    del state["backbone.layers.1.mixer.D"]
    torch.save(state, tmp_path / "missing" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="missing.*layers.1.mixer.D"):
        build_model(tmp_path / "missing")

    write_checkpoint(tmp_path / "shape", {**MAMBA1_CFG, "d_model": 48}, [mamba1_mixer(), mamba1_mixer()])
    with pytest.raises(ValueError, match="shape"):
        build_model(tmp_path / "shape")

    write_checkpoint(tmp_path / "pickle", MAMBA1_CFG, [mamba1_mixer(), mamba1_mixer()])
    torch.save({"backbone.embedding.weight": NotATensor()}, tmp_path / "pickle" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only"):
        build_model(tmp_path / "pickle")

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        build_model(tmp_path / "empty")
    with pytest.raises(ValueError, match="neither a preset"):
        build_model("mamba-7b")
    with pytest.raises(ValueError, match="no state-spaces"):
        export_state_spaces(build_model("parallel-tiny"), tmp_path / "parallel")
