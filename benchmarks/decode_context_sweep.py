"""Where a GPU's decode time goes at chunk 2048: vLLM's decode step time at a fixed batch as the context grows, and
at a fixed context as the batch grows (GPU only; one engine, random weights of a Llama shape).

A paraphrase at chunk 2048 decodes ~1,300 tokens after a ~2,300-token prompt. Each decode step reads the weights
once and every running sequence's KV cache: when the step time grows with batch x context, the KV reads (attention)
set the rate, and more sequences per step cannot raise it. Each point is two `LLM.generate` calls over the same
random-token prompts with the prefix cache off: one new token (the prefill), then 1 + `--new` new tokens; their
difference over `--new` is the decode step. Printed per point: the step, the decode rate, and the bytes a step must
read (weights + KV at the mean context) over the step: the memory bandwidth the step reached.

    python3 benchmarks/decode_context_sweep.py --shape 1.7b-gqa --model-tokenizer-dir .gpu2/tok --kv fp8 \
        --seqs 512 --contexts 128 1024 2304 --batches 256 768 --batch-context 2304 --json /tmp/sweep.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from engine_saturation_inprocess import SHAPES, write_shape  # noqa: E402

HBM_TB_S = 4.8  # H200's HBM3e bandwidth (NVIDIA's figure)
WARMUP_CONTEXT = 64  # prompt tokens of the untimed first point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.7b-gqa")
    parser.add_argument("--model-tokenizer-dir", type=Path, required=True)
    parser.add_argument("--kv", default="auto", help="kv_cache_dtype (fp8: one byte per element)")
    parser.add_argument("--seqs", type=int, default=512, help="the batch of the context sweep")
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 1024, 2304], help="prompt tokens")
    parser.add_argument("--batches", type=int, nargs="*", default=[256, 768], help="batches of the batch sweep")
    parser.add_argument("--batch-context", type=int, default=2304)
    parser.add_argument("--new", type=int, default=192, help="decode steps timed per point")
    parser.add_argument("--attention-backend", help="vLLM's attention_backend (e.g. TRITON_ATTN, FLEX_ATTENTION; "
                        "default: vLLM's choice, FLASH_ATTN on an H200): does another decode kernel read the KV faster?")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    hidden, inter, layers, heads, kv_heads = SHAPES[args.shape]
    model = write_shape(Path(tempfile.mkdtemp(prefix="decode-sweep-")) / args.shape, args.shape, args.model_tokenizer_dir)
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    longest = max([WARMUP_CONTEXT, *args.contexts, args.batch_context]) + args.new + 8
    llm = LLM(model=str(model), load_format="dummy", dtype="bfloat16", kv_cache_dtype=args.kv, enable_prefix_caching=False,
              max_model_len=longest, max_num_seqs=max([args.seqs, *args.batches]), seed=0,
              **({"attention_backend": args.attention_backend} if args.attention_backend else {}))
    kv_bytes = layers * kv_heads * (hidden // heads) * 2 * (1 if "fp8" in args.kv else 2)  # K and V, per token
    attention = 2 * hidden * hidden + 2 * hidden * (hidden // heads) * kv_heads  # q, o; k, v
    weight_bytes = 2 * (layers * (attention + 3 * hidden * inter) + vocab * hidden)  # + the LM head (embeddings: gathered rows)
    rng = random.Random(0)

    def point(seqs: int, context: int) -> dict:
        prompts = [TokensPrompt(prompt_token_ids=[rng.randrange(vocab) for _ in range(context)]) for _ in range(seqs)]
        seconds = []
        for new in (1, 1 + args.new):
            params = SamplingParams(max_tokens=new, min_tokens=new, ignore_eos=True, temperature=1.0, top_p=0.95, seed=0)
            started = time.perf_counter()
            llm.generate(prompts, params, use_tqdm=False)
            seconds.append(time.perf_counter() - started)
        step = (seconds[1] - seconds[0]) / args.new
        read = weight_bytes + seqs * (context + args.new / 2) * kv_bytes
        row = {"seqs": seqs, "context": context, "prefill_s": round(seconds[0], 3), "step_ms": round(step * 1e3, 2),
               "decode_tok_s": round(seqs / step), "read_gb_per_step": round(read / 1e9, 1),
               "bandwidth_tb_s": round(read / step / 1e12, 2)}
        print(f"{seqs:>5} seqs x {context:>5} tokens: prefill {seconds[0]:6.2f} s, decode step {step * 1e3:6.2f} ms = "
              f"{seqs / step:>8,.0f} tok/s; a step reads {read / 1e9:5.1f} GB = {read / step / 1e12:4.2f} TB/s "
              f"({read / step / 1e12 / HBM_TB_S:.0%} of {HBM_TB_S} TB/s)", flush=True)
        return row

    point(min(args.batches + [args.seqs]), WARMUP_CONTEXT)  # untimed: the kernels of a first decode are built here
    rows = [point(args.seqs, c) for c in args.contexts] + [point(b, args.batch_context) for b in args.batches]
    print(f"weights {weight_bytes / 1e9:.1f} GB, KV {kv_bytes / 1024:.0f} KiB per token ({args.kv})")
    if args.json:
        args.json.write_text(json.dumps({"shape": args.shape, "kv_cache_dtype": args.kv, "attention_backend": args.attention_backend, "kv_bytes_per_token": kv_bytes,
                                         "weight_bytes": weight_bytes, "new_tokens": args.new, "points": rows}, indent=2))


if __name__ == "__main__":
    main()
