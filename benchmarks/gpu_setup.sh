#!/usr/bin/env bash
# Install the state-spaces CUDA kernels (mamba_ssm, optionally causal_conv1d) on a bare GPU machine from the
# sdists carried in .gpu/. Fetch them on a machine with a registry (the env vars stop setup.py from compiling):
#   MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
#     pip download --no-deps --no-build-isolation --no-binary :all: mamba-ssm causal-conv1d -d .gpu/
# and name .gpu in the device call's `carry`. Usage, in one call:  bash benchmarks/gpu_setup.sh && python3 ...
#
# GPU_SETUP_BUILD=1 (default): compile mamba_ssm for sm_90 only (H100/H200): 174 s measured on the H100
#   machine (8 jobs, while causal_conv1d compiled beside it). Gives Mamba-1 `selective_scan_fn` and the
#   Mamba-2 Triton kernels.
# GPU_SETUP_BUILD=0: no compilation (~20 s): the pure-Python mamba_ssm wheel plus a stub `selective_scan_cuda`
#   module. Mamba-2 runs its Triton kernels, Mamba-1 the pure PyTorch scan.
# GPU_SETUP_CONV1D=1 (default 0): also compile causal_conv1d, in parallel. Its .cu files are split by template
#   instantiation (benchmarks/split_causal_conv1d.py) so nvcc runs them on all cores; abandoned after
#   GPU_SETUP_CONV1D_DEADLINE seconds (default 540): the models then use the pure PyTorch convolution.
# Wheels built once come back for the next machine: GPU_SAVE_WHEELS=DIR writes them there in 15 MiB pieces
#   (the device tool returns files of at most 16 MiB); pieces or wheels found in GPU_WHEELS (default
#   .gpu/wheels) are installed instead of compiling.
# Triton autotuning (minutes per new shape on a fresh machine): export TRITON_CACHE_DIR and
#   TRITON_CACHE_AUTOTUNING=1 before running; `bash benchmarks/gpu_setup.sh save-autotune DIR` keeps only the
#   autotune results (*.autotune.json, small) in DIR/triton_autotune.tgz, and a later gpu_setup.sh unpacks
#   .gpu/triton_autotune.tgz into TRITON_CACHE_DIR: the chosen configs are then compiled, not re-tuned.
set -uo pipefail
set -m  # background builds get their own process group, so an abandoned one can be stopped with all its nvcc
cd "$(dirname "$0")/.."
TRITON_DIR=${TRITON_CACHE_DIR:-$HOME/.triton/cache}
if [ "${1:-}" = "save-autotune" ]; then
  mkdir -p "$2" && (cd "$TRITON_DIR" && find . -name '*.autotune.json' -print0 | tar czf "$2/triton_autotune.tgz" --null -T -)
  echo "gpu_setup: $(tar tzf "$2/triton_autotune.tgz" | wc -l) autotune results saved in $2/triton_autotune.tgz"
  exit 0
fi
if [ -f .gpu/triton_autotune.tgz ]; then
  mkdir -p "$TRITON_DIR" && tar xzf .gpu/triton_autotune.tgz -C "$TRITON_DIR" && \
    echo "gpu_setup: restored $(tar tzf .gpu/triton_autotune.tgz | wc -l) Triton autotune results into $TRITON_DIR"
fi
SRC=${GPU_SDIST_DIR:-.gpu}
WORK=${GPU_BUILD_DIR:-/tmp/gpu_build}
JOBS=${MAX_JOBS:-16}
DEADLINE=${GPU_SETUP_CONV1D_DEADLINE:-540}
START=$(date +%s)
mkdir -p "$WORK/wheels"
export TORCH_CUDA_ARCH_LIST="9.0"

unpack() {  # unpack NAME: the sdist's directory on stdout
  local tarball
  tarball=$(ls "$SRC"/"$1"-*.tar.gz 2>/dev/null | head -1)
  [ -n "$tarball" ] || { echo "gpu_setup: no $SRC/$1-*.tar.gz" >&2; return 1; }
  tar xzf "$tarball" -C "$WORK" && echo "$WORK/$(basename "$tarball" .tar.gz)"
}

build() {  # build NAME ENVPREFIX: keep only sm_90 in setup.py, build a wheel into $WORK/wheels
  local name=$1 prefix=$2 dir
  dir=$(unpack "$name") || return 1
  python3 - "$dir/setup.py" <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
marker = "    # HACK: The compiler flag"
assert marker in s, "setup.py layout changed: cannot restrict the CUDA archs"
s = s.replace(marker, '    cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]\n' + marker, 1)
for flag in ('"--ptxas-options=-v",', '"-lineinfo",'):  # verbose ptxas output and line tables: time and size
    s = s.replace(flag, "")
open(p, "w").write(s)
EOF
  [ "$name" != causal_conv1d ] || python3 benchmarks/split_causal_conv1d.py "$dir" || return 1
  (cd "$dir" && env "${prefix}_FORCE_BUILD=TRUE" MAX_JOBS="$JOBS" \
     python3 -m pip wheel --no-build-isolation --no-deps --no-index -w "$WORK/wheels" . >"$WORK/$name.log" 2>&1) \
    || { echo "gpu_setup: $name build failed, see $WORK/$name.log" >&2; tail -20 "$WORK/$name.log" >&2; return 1; }
  echo "gpu_setup: built $name in $(( $(date +%s) - START )) s"
}

# mamba_ssm's package __init__ also imports Mamba-3 (Triton/TileLang code we do not use): if that import
# breaks on this Triton, drop it so the Mamba-1/Mamba-2 kernels stay importable.
fix_mamba3_import() {
  python3 -c "import importlib.util as u; assert u.find_spec('mamba_ssm')" 2>/dev/null || return 0
  python3 -c "import mamba_ssm" 2>"$WORK/import.err" && return 0
  tail -3 "$WORK/import.err" >&2
  local init
  init=$(python3 -c "import importlib.util as u; print(u.find_spec('mamba_ssm').origin)")
  sed -i 's/^from mamba_ssm.modules.mamba3 import Mamba3/# &/' "$init"
  python3 -c "import mamba_ssm" || exit 1
  echo "gpu_setup: disabled the Mamba-3 import in $init" >&2
}

CARRIED=${GPU_WHEELS:-.gpu/wheels}
if compgen -G "$CARRIED/*.whl*" >/dev/null; then  # wheels built on an earlier machine, maybe in pieces
  mkdir -p "$WORK/carried"
  for whl in $(ls "$CARRIED" | sed 's/\.part-..$//' | sort -u); do cat "$CARRIED/$whl"* >"$WORK/carried/$whl"; done
  python3 -m pip install -q --no-deps --no-index "$WORK"/carried/*.whl && echo "gpu_setup: installed carried $(ls "$WORK/carried")"
  fix_mamba3_import
fi

if python3 -c "import torch, selective_scan_cuda, mamba_ssm" 2>/dev/null; then  # torch first: the .so needs libc10
  echo "gpu_setup: mamba_ssm already importable"
elif [ "${GPU_SETUP_BUILD:-1}" = "0" ]; then
  dir=$(unpack mamba_ssm) || exit 1
  (cd "$dir" && MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
     python3 -m pip wheel -q --no-build-isolation --no-deps --no-index -w "$WORK/wheels" .) || exit 1
  python3 -m pip install -q --no-deps --no-index "$WORK"/wheels/mamba_ssm-*.whl || exit 1
  site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo '"""Stub: mamba_ssm installed without its compiled selective scan (gpu_setup.sh GPU_SETUP_BUILD=0)."""' \
    >"$site/selective_scan_cuda.py"
  echo "gpu_setup: pure mamba_ssm + stub selective_scan_cuda (Mamba-2 Triton only)"
else
  build mamba_ssm MAMBA & MAMBA_PID=$!
  CONV_PID=
  if [ "${GPU_SETUP_CONV1D:-0}" = "1" ] && ! python3 -c "import torch, causal_conv1d" 2>/dev/null; then
    build causal_conv1d CAUSAL_CONV1D & CONV_PID=$!
  fi
  wait "$MAMBA_PID" || exit 1
  if [ -n "$CONV_PID" ]; then
    while kill -0 "$CONV_PID" 2>/dev/null && [ $(( $(date +%s) - START )) -lt "$DEADLINE" ]; do sleep 5; done
    if kill -0 "$CONV_PID" 2>/dev/null; then
      echo "gpu_setup: causal_conv1d not built after ${DEADLINE}s: continuing without it" >&2
      kill -- -"$CONV_PID" 2>/dev/null
    fi
  fi
  python3 -m pip install -q --no-deps --no-index "$WORK"/wheels/*.whl || exit 1
  if [ -n "${GPU_SAVE_WHEELS:-}" ]; then
    mkdir -p "$GPU_SAVE_WHEELS"
    for whl in "$WORK"/wheels/*.whl; do split -b 15M -a 2 "$whl" "$GPU_SAVE_WHEELS/$(basename "$whl").part-"; done
    ls -la "$GPU_SAVE_WHEELS"
  fi
fi

fix_mamba3_import  # the wheel just built or installed
python3 - <<'EOF'
import torch, mamba_ssm
try:
    import causal_conv1d
    conv = causal_conv1d.__version__
except Exception as exc:
    conv = f"missing ({type(exc).__name__})"
print(f"gpu_setup: torch {torch.__version__}, mamba_ssm {mamba_ssm.__version__}, causal_conv1d {conv}")
EOF
echo "gpu_setup: done in $(( $(date +%s) - START )) s"
