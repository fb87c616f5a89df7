"""`HybridConfig`: one Hugging Face config for the four model types of the paper.

`arch` picks the layer layout; every layer is a pre-norm residual block around one *mixer*:

- `mamba`       every mixer is an SSM (Mamba-1 or Mamba-2, `ssm_layer`);
- `transformer` every mixer is causal self-attention (usually with `d_intermediate > 0`, an MLP per block);
- `sequential`  SSM and attention mixers stacked: `layer_pattern` ("MMMA" repeated to `n_layer`) or
                `attn_layer_idx` (the state-spaces convention) says which layers are attention;
- `parallel`    every mixer runs an SSM branch and an attention branch on the same input and merges them
                (`merge`: sum | norm-mean | gate | concat-proj | cross-attention, see `merge.py`).

`ssm_cfg` / `attn_cfg` use the keyword names of mamba_ssm's `Mamba`/`Mamba2`/`MHA`, so a state-spaces
`config.json` maps onto this config key for key (`checkpoints.py`). `ssm_cfg` may mix Mamba-1 and Mamba-2 keys
(e.g. in a preset); only those of `ssm_layer` are used, so switching `ssm_layer` needs no other change.
"""

from __future__ import annotations

from transformers import PretrainedConfig

ARCHS = ("mamba", "transformer", "sequential", "parallel")
MERGES = ("sum", "norm-mean", "gate", "concat-proj", "cross-attention")
SSM_LAYERS = ("mamba1", "mamba2")
KERNEL_MODES = ("auto", "torch", "cuda")

# Per-type defaults, the mamba_ssm ones (Mamba-1 `Mamba`, Mamba-2 `Mamba2`, `MHA`).
SSM_DEFAULTS = {
    "mamba1": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "dt_min": 0.001, "dt_max": 0.1,
               "dt_init": "random", "dt_scale": 1.0, "dt_init_floor": 1e-4, "conv_bias": True, "bias": False},
    "mamba2": {"d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1, "A_init_range": [1, 16],
               "dt_min": 0.001, "dt_max": 0.1, "dt_init_floor": 1e-4, "dt_limit": [0.0, float("inf")],
               "conv_bias": True, "bias": False, "chunk_size": 256, "rmsnorm": True, "norm_before_gate": False},
}
# Keys of mamba_ssm's modules that only select kernels or sharding: accepted and ignored.
SSM_IGNORED = {"use_fast_path", "use_mem_eff_path", "layer", "process_group", "sequence_parallel", "conv_init",
               "D_has_hdim", "d_ssm"}
ATTN_DEFAULTS = {"num_heads": None, "num_heads_kv": None, "head_dim": None, "rotary_emb_dim": None,
                 "rotary_emb_base": 10000.0, "qkv_proj_bias": False, "out_proj_bias": False, "softmax_scale": None,
                 "causal": True, "d_conv": 0}


class HybridConfig(PretrainedConfig):
    """Config of `HybridForCausalLM` (see the module docstring for `arch`).

    Ablations (read at every forward, so they can be changed on a loaded model, see `HybridForCausalLM.ablate`):
    `skip_layers` (list of layer indices: the block is the identity) and `skip_branches` (list of
    "<layer>.ssm" / "<layer>.attn": that branch of a parallel block contributes zeros to the merge).
    `kernels`: "auto" (CUDA kernels when the tensors are on CUDA and mamba_ssm imports), "torch" or
    "cuda"; the environment variable PARAPHRASE_PIPE_KERNELS overrides it (`kernels.py`).
    """

    model_type = "paraphrase_hybrid"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layer"}

    def __init__(
        self,
        arch: str = "mamba",
        vocab_size: int = 50277,
        d_model: int = 768,
        n_layer: int = 24,
        d_intermediate: int = 0,
        mlp_type: str = "swiglu",
        mlp_multiple_of: int = 128,
        ssm_layer: str = "mamba2",
        ssm_cfg: dict | None = None,
        attn_cfg: dict | None = None,
        layer_pattern: str | None = None,
        attn_layer_idx: list[int] | None = None,
        merge: str = "cross-attention",
        merge_cfg: dict | None = None,
        rms_norm: bool = True,
        norm_epsilon: float = 1e-5,
        residual_in_fp32: bool = True,
        pad_vocab_size_multiple: int = 8,
        initializer_range: float = 0.02,
        rescale_prenorm_residual: bool = True,
        skip_layers: list[int] | None = None,
        skip_branches: list[str] | None = None,
        kernels: str = "auto",
        use_cache: bool = True,
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        self.arch = arch
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layer = n_layer
        self.d_intermediate = d_intermediate
        self.mlp_type = mlp_type
        self.mlp_multiple_of = mlp_multiple_of
        self.ssm_layer = ssm_layer
        self.ssm_cfg = dict(ssm_cfg or {})
        self.attn_cfg = dict(attn_cfg or {})
        self.layer_pattern = layer_pattern
        self.attn_layer_idx = list(attn_layer_idx) if attn_layer_idx is not None else None
        self.merge = merge
        self.merge_cfg = dict(merge_cfg or {})
        self.rms_norm = rms_norm
        self.norm_epsilon = norm_epsilon
        self.residual_in_fp32 = residual_in_fp32
        self.pad_vocab_size_multiple = pad_vocab_size_multiple
        self.initializer_range = initializer_range
        self.rescale_prenorm_residual = rescale_prenorm_residual
        self.skip_layers = list(skip_layers or [])
        self.skip_branches = list(skip_branches or [])
        self.kernels = kernels
        self.use_cache = use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.validate_hybrid()

    # -- derived values -------------------------------------------------------------------------------------------
    @property
    def padded_vocab_size(self) -> int:
        m = max(1, int(self.pad_vocab_size_multiple or 1))
        return -(-self.vocab_size // m) * m

    @property
    def block_kinds(self) -> list[str]:
        """One letter per layer: "M" SSM mixer, "A" attention mixer, "P" parallel SSM + attention."""
        if self.arch == "mamba":
            return ["M"] * self.n_layer
        if self.arch == "transformer":
            return ["A"] * self.n_layer
        if self.arch == "parallel":
            return ["P"] * self.n_layer
        if self.attn_layer_idx is not None:
            return ["A" if i in set(self.attn_layer_idx) else "M" for i in range(self.n_layer)]
        pattern = "".join((self.layer_pattern or "").split())
        return [pattern[i % len(pattern)] for i in range(self.n_layer)]

    def ssm_kwargs(self) -> dict:
        """Resolved keyword arguments of the SSM mixer (mamba_ssm names)."""
        defaults = SSM_DEFAULTS[self.ssm_layer]
        return {**defaults, **{k: v for k, v in self.ssm_cfg.items() if k in defaults}}

    def attn_kwargs(self) -> dict:
        """Resolved keyword arguments of the attention mixer (mamba_ssm `MHA` names)."""
        cfg = {**ATTN_DEFAULTS, **self.attn_cfg}
        if cfg["num_heads"] is None:
            cfg["num_heads"] = max(1, self.d_model // 64)
        if cfg["num_heads_kv"] is None:
            cfg["num_heads_kv"] = cfg["num_heads"]
        if cfg["head_dim"] is None:
            cfg["head_dim"] = self.d_model // cfg["num_heads"]
        if cfg["rotary_emb_dim"] is None:
            cfg["rotary_emb_dim"] = cfg["head_dim"]
        return cfg

    def validate_hybrid(self) -> None:
        """Raise a ValueError that says what is wrong, instead of a shape error deep inside a forward."""
        def fail(msg):
            raise ValueError(f"HybridConfig: {msg}")

        if self.arch not in ARCHS:
            fail(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.ssm_layer not in SSM_LAYERS:
            fail(f"ssm_layer must be one of {SSM_LAYERS}, got {self.ssm_layer!r}")
        if self.merge not in MERGES:
            fail(f"merge must be one of {MERGES}, got {self.merge!r}")
        if self.kernels not in KERNEL_MODES:
            fail(f"kernels must be one of {KERNEL_MODES}, got {self.kernels!r}")
        if self.mlp_type not in ("swiglu", "gelu"):
            fail(f"mlp_type must be 'swiglu' or 'gelu', got {self.mlp_type!r}")
        if self.n_layer < 1 or self.d_model < 1 or self.vocab_size < 1:
            fail("n_layer, d_model and vocab_size must be positive")
        if self.arch == "sequential":
            pattern = "".join((self.layer_pattern or "").split())
            if self.attn_layer_idx is None and not pattern:
                fail("arch='sequential' needs layer_pattern (e.g. 'MMMA') or attn_layer_idx")
            if pattern and set(pattern) - {"M", "A"}:
                fail(f"layer_pattern may only contain 'M' and 'A', got {self.layer_pattern!r}")
            if self.attn_layer_idx is not None and any(not 0 <= i < self.n_layer for i in self.attn_layer_idx):
                fail(f"attn_layer_idx {self.attn_layer_idx} out of range for n_layer={self.n_layer}")
        if self.ssm_cfg.get("d_ssm") not in (None, self.ssm_cfg.get("expand", 2) * self.d_model):
            fail("ssm_cfg.d_ssm (partial SSM width) is not supported")
        if self.ssm_cfg.get("D_has_hdim"):
            fail("ssm_cfg.D_has_hdim=True is not supported")
        unknown = set(self.ssm_cfg) - set(SSM_DEFAULTS["mamba1"]) - set(SSM_DEFAULTS["mamba2"]) - SSM_IGNORED
        if unknown:
            fail(f"unknown ssm_cfg keys: {sorted(unknown)}")
        unknown = set(self.attn_cfg) - set(ATTN_DEFAULTS)
        if unknown:
            fail(f"unknown attn_cfg keys: {sorted(unknown)}")
        if any(t in "AP" for t in self.block_kinds):
            a = self.attn_kwargs()
            if a["num_heads"] % a["num_heads_kv"]:
                fail("attn_cfg.num_heads must be a multiple of num_heads_kv")
            if a["d_conv"]:
                fail("attn_cfg.d_conv > 0 (convolution inside attention) is not supported")
            if not a["causal"]:
                fail("attn_cfg.causal=False makes no sense for a causal LM")
            if a["rotary_emb_dim"] > a["head_dim"] or a["rotary_emb_dim"] % 2:
                fail("attn_cfg.rotary_emb_dim must be even and <= head_dim")
        if self.ssm_layer == "mamba2" and any(t in "MP" for t in self.block_kinds):
            s = self.ssm_kwargs()
            if (s["expand"] * self.d_model) % s["headdim"]:
                fail("expand * d_model must be a multiple of ssm_cfg.headdim")
            if ((s["expand"] * self.d_model) // s["headdim"]) % s["ngroups"]:
                fail("the number of SSM heads must be a multiple of ssm_cfg.ngroups")
        for i in self.skip_layers:
            if not (isinstance(i, int) and 0 <= i < self.n_layer):
                fail(f"skip_layers entry {i!r} is not a layer index in [0, {self.n_layer})")
        for b in self.skip_branches:
            layer, _, branch = str(b).partition(".")
            if branch not in ("ssm", "attn") or not layer.isdigit() or int(layer) >= self.n_layer:
                fail(f"skip_branches entry {b!r} must look like '<layer>.ssm' or '<layer>.attn'")
