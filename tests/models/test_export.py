"""Trained models load in the ecosystem without this package: pure Mamba-1 / Mamba-2 in transformers' own
`MambaForCausalLM` / `Mamba2ForCausalLM` format, hybrids with `auto_map` + modeling files (trust_remote_code).
Checked in a fresh interpreter in which `import paraphrase_pipe` is impossible."""

import json
import os
import subprocess
import sys

import torch

from paraphrase_pipe.models.checkpoints import config_to_transformers, export_transformers

from .conftest import make_model

FRESH = """
import json, sys
sys.modules["paraphrase_pipe"] = None  # any attempt to import the project fails
import torch
from transformers import AutoModelForCausalLM
out = {}
for d, remote in json.loads(sys.argv[1]):
    m = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=remote).eval()
    x = torch.load(d + "/x.pt")
    with torch.no_grad():
        out[d] = [type(m).__name__, (m(x).logits - torch.load(d + "/y.pt")).abs().max().item()]
print(json.dumps(out))
"""


def _save_reference(model, path):
    x = torch.randint(0, 512, (2, 13))
    with torch.no_grad():
        y = model(x, use_cache=False).logits
    torch.save(x, path / "x.pt")
    torch.save(y, path / "y.pt")


def test_models_load_with_auto_classes_in_a_fresh_interpreter(tmp_path):
    dirs = []
    for variant, want in (("mamba1", "MambaForCausalLM"), ("mamba2", "Mamba2ForCausalLM")):
        model = make_model(variant)
        assert config_to_transformers(model.config) is not None
        export_transformers(model, tmp_path / variant)
        assert not list((tmp_path / variant).glob("*.py"))  # native format: no code travels
        _save_reference(model, tmp_path / variant)
        dirs.append((str(tmp_path / variant), False, want))
    for variant in ("sequential2", "parallel-xattn"):
        model = make_model(variant)
        assert config_to_transformers(model.config) is None
        model.save_pretrained(tmp_path / variant)
        auto_map = json.loads((tmp_path / variant / "config.json").read_text())["auto_map"]
        assert auto_map == {"AutoConfig": "configuration.HybridConfig",
                            "AutoModelForCausalLM": "modeling.HybridForCausalLM"}
        _save_reference(model, tmp_path / variant)
        dirs.append((str(tmp_path / variant), True, "HybridForCausalLM"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    run = subprocess.run([sys.executable, "-c", FRESH, json.dumps([d[:2] for d in dirs])], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    for d, _, want in dirs:
        name, err = loaded[d]
        assert name == want and err < 1e-4, (d, name, err)


def test_only_exactly_mappable_models_get_the_transformers_format():
    assert config_to_transformers(make_model("mamba2", ssm_cfg={"ngroups": 2, "headdim": 16}).config) is None
    assert config_to_transformers(make_model("transformer").config) is None
    assert config_to_transformers(make_model("mamba1", skip_layers=[1]).config) is None
