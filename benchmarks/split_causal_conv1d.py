"""Split causal_conv1d's .cu files by explicit template instantiation so nvcc compiles them in parallel.

The backward file alone takes minutes in one nvcc process. Every kernel there is a template, so each part keeps
the whole file body and 1/parts of its `template void ...;` instantiation lines (no symbol is defined twice).
Usage (benchmarks/gpu_setup.sh runs it):  python3 benchmarks/split_causal_conv1d.py UNPACKED_SDIST_DIR
"""
import re
import sys
from pathlib import Path

root = Path(sys.argv[1])
setup = (root / "setup.py").read_text()
for name, parts in (("causal_conv1d_bwd", 6), ("causal_conv1d_fwd", 6), ("causal_conv1d_update", 3)):
    src = (root / "csrc" / f"{name}.cu").read_text().splitlines(keepends=True)
    inst = [i for i, line in enumerate(src) if line.startswith("template void ")]
    body = [line for i, line in enumerate(src) if i not in set(inst)]
    files = []
    for p in range(parts):
        mine = [src[i] for i in inst[p::parts]]
        (root / "csrc" / f"{name}_p{p}.cu").write_text("".join(body + ["\n"] + mine))
        files.append(f'"csrc/{name}_p{p}.cu"')
    old = f'"csrc/{name}.cu"'
    assert old in setup, old
    setup = setup.replace(old, ", ".join(files))
(root / "setup.py").write_text(setup)
print("split:", re.findall(r'"csrc/[^"]+"', setup))
