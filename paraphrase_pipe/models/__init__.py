"""Model library: Mamba-1 / Mamba-2 / attention mixers and the four architectures of the paper.

    from paraphrase_pipe.models import build_model, PRESETS, HybridConfig, HybridForCausalLM
    model = build_model("sequential-130m")            # preset, fresh weights
    model = build_model("state-spaces/mamba-2.8b-slimpj", dtype=torch.bfloat16)   # hub id or local dir
    out = model(input_ids, labels=input_ids, seq_idx=doc_ids)   # packed rows: doc_ids (B, L)

Importing this package needs only torch and transformers: mamba_ssm / causal_conv1d kernels are imported
lazily on the first CUDA forward (`kernels.py`). The classes are registered with AutoConfig /
AutoModelForCausalLM under model_type "paraphrase_hybrid", so `AutoModelForCausalLM.from_pretrained(dir)`
(and lm-eval's HF wrapper) load saved models once this package is imported, and saved directories carry the
modeling files for `trust_remote_code=True` elsewhere. See `modeling.py` for the forward
signature, analysis hooks (`forward_hidden`) and ablations (`ablate`).
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .checkpoints import export_state_spaces, from_transformers, load_state_spaces
from .configuration import HybridConfig
from .modeling import HybridForCausalLM
from .presets import PRESETS, build_model

AutoConfig.register(HybridConfig.model_type, HybridConfig, exist_ok=True)
AutoModelForCausalLM.register(HybridConfig, HybridForCausalLM, exist_ok=True)
# save_pretrained writes `auto_map` and copies modeling.py, configuration.py and the files they import
# (relative imports only) into the model directory: `AutoModelForCausalLM.from_pretrained(dir,
# trust_remote_code=True)` then loads it in any process, without this package.
HybridConfig.register_for_auto_class()
HybridForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["HybridConfig", "HybridForCausalLM", "build_model", "PRESETS", "load_state_spaces",
           "export_state_spaces", "from_transformers"]
