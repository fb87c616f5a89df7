"""Two GPUs, training: `torchrun --nproc-per-node 2 -m paraphrase_pipe.train` against the same command on one
process, with the same global batch, under `--distributed ddp` and `fsdp`; then kill -9 one rank and resume.

What it runs is the real CLI on a real build output (`paraphrase-pipe build ... --engine none`), nothing else:
- N=1 (`--nproc-per-node 1`: one process, no wrapper; the same run for both modes) and N=2 per mode, the same
  micro-batch per GPU and the same global batch (N=1 accumulates twice as many micro-batches), `log_every=1`.
  The first `--steps` losses (OUT/metrics.jsonl) of N=2 are compared with N=1's: the max relative difference is
  printed, pass/fail against `--tol` (bf16 on GPU: 1e-2, a little over one bf16 ulp, 2^-7; fp32 on CPU: 1e-5,
  the tolerance of tests/train). Tokens/s per GPU = the rank-0 rate of metrics.jsonl / N, median over the steps
  after `--skip` warm-up steps (the last row, which holds the final validation, excluded); scaling efficiency =
  N=2 per GPU / N=1 per GPU (target >= 0.9).
- Kill and resume, per `--kill SIZE/MODE`: an N=2 run checkpointing at `--steps // 2` is killed (`kill -9` of the
  rank-1 process, found among torchrun's children by its RANK) after that checkpoint and one more step; the same
  command then resumes on 2 ranks. The checks of tests/train/test_train.py: the killed run stopped mid-run (no
  `final/`), the resumed curve equals the uninterrupted N=2 run's and so do the final weights. Bit for bit on CPU;
  on GPU the verdict is bit for bit when the uninterrupted run reproduces itself bit for bit (the killed run's
  steps before the kill are that check), else within `--tol` (kernels with atomics are not run-to-run exact).
NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1 and NVSHMEM_DISABLE_NVLS=1 are set in every process.
Every section has a deadline (`--budget-s` for the whole script): a run past it is stopped and recorded as cut,
and OUT/multi_gpu_train.json is rewritten after each section, so a cut call keeps what finished.

GPU, one call on `nvidia-h200-x2` (carry .gpu, made by `bash benchmarks/train_throughput_gpu.sh stage`):
    BENCH=benchmarks/multi_gpu_train.py bash benchmarks/train_throughput_gpu.sh run --data .gpu/e2ebuild
CPU dry run (2 gloo processes, a tiny Mamba-2, fp32; builds its own input from the bundled sample if missing):
    python benchmarks/multi_gpu_train.py --device cpu --data runs/mgpu_build --out runs/multi_gpu_train
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import children, kill_pids  # noqa: E402
from train_throughput import SIZES  # noqa: E402 - the state-spaces shapes (d_model, n_layer, layer)

from paraphrase_pipe.train.metrics import read_metrics  # noqa: E402

NCCL_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
os.environ.update(NCCL_ENV)  # this process and everything it starts: torchrun, its ranks, the build
# size -> (micro-batch per GPU, global batch in sequences): the one-GPU best micro-batch of train_throughput.py
GEOMETRY = {"780m": (16, 32), "2.7b": (8, 16), "tiny": (2, 4)}
START = time.time()


class Cut(Exception):
    """A run that would pass the script's deadline: stopped, recorded, the next sections skipped."""


def child_env(device: str) -> dict:
    env = {**os.environ, **NCCL_ENV, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # two ranks on a small CPU: no oversubscription
    return env


def ensure_build(data: Path, device: str) -> None:
    """A real build output of the bundled sample (engine none, GPT-2 BPE), as train_throughput_gpu.sh `stage`."""
    if (data / "manifest.json").is_file():
        return
    cmd = [sys.executable, "-m", "paraphrase_pipe.cli", "build", "--chunk", "256", "--engine", "none", "--tokenizer",
           "builtin:gpt2", "--limit", "60", "--output", str(data), "--no-progress"]
    subprocess.run(cmd, check=True, env=child_env(device), capture_output=True, timeout=600)


def train_args(args, size: str, mode: str, run: Path, save_every: int) -> list[str]:
    """The `paraphrase-pipe train` command line of every run: only --distributed, --output and --save-every vary."""
    d_model, n_layer, _ = SIZES[size]
    micro, global_batch = GEOMETRY[size]
    cpu = args.device == "cpu"
    out = ["--data", str(args.data), "--tokenizer", "builtin:gpt2", "--model", "mamba-tiny" if cpu else "mamba-130m",
           "--set", f"model_overrides={{d_model: {d_model}, n_layer: {n_layer}}}", "--seq-len", str(args.seq_len),
           "--micro-batch", str(micro), "--batch-tokens", str(global_batch * args.seq_len), "--steps", str(args.steps),
           "--warmup-steps", "5", "--lr", str(args.lr), "--precision", "fp32" if cpu else "bf16", "--device",
           args.device, "--distributed", mode, "--save-every", str(save_every), "--eval-every", "0", "--no-progress",
           "--output", str(run), "--set", "log_every=1", "--set", "tensorboard=false", "--set", "keep_checkpoints=1",
           "--compile" if args.compile else "--no-compile"]
    return (["--recipe", str(ROOT / "pipelines" / "train-smoke.yaml")] if cpu else []) + out


def launch(n: int, train: list[str], log: Path, device: str) -> subprocess.Popen:
    """torchrun (`python -m torch.distributed.run`, what the console script runs), its output to `log`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), "-m",
           "paraphrase_pipe.train", *train]
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        return subprocess.Popen(cmd, env=child_env(device), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, deadline: float) -> int:
    """Wait for torchrun; past the deadline kill it and its ranks (each in a session of its own) and raise Cut."""
    try:
        return proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        kill_pids([*rank_pids(proc.pid).values(), proc.pid])
        proc.wait()
        raise Cut(f"stopped at the deadline ({time.time() - START:.0f} s)") from None


def run_train(n: int, train: list[str], log: Path, device: str, deadline: float) -> None:
    rc = finish(launch(n, train, log, device), deadline)
    if rc != 0:
        raise RuntimeError(f"torchrun exited {rc}: {log.read_text()[-1500:]}")


def rank_pids(torchrun_pid: int) -> dict[int, int]:
    """RANK -> pid of torchrun's worker processes (its children, read from /proc)."""
    found = {}
    for pid in children(torchrun_pid):
        try:
            environ = (Path("/proc") / str(pid) / "environ").read_text().split("\0")
        except OSError:
            continue  # exited meanwhile
        env = dict(item.split("=", 1) for item in environ if "=" in item)
        if "RANK" in env:
            found[int(env["RANK"])] = pid
    return found


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if r.get("loss") is not None}


def max_rel(a: dict[int, float], b: dict[int, float], steps) -> float:
    return max((abs(b[s] - a[s]) / abs(a[s]) for s in steps), default=float("nan"))


def per_gpu_rate(run: Path, n: int, skip: int) -> float | None:
    """Median tokens/s per GPU over the steady steps: after `skip` warm-up steps, the last row (validation) left out."""
    rates = [r["tok_per_s"] for r in read_metrics(run / "metrics.jsonl") if r.get("tok_per_s")][skip:-1]
    return statistics.median(rates) / n if rates else None


def prune(run: Path, keep_final: bool = False) -> None:
    """Checkpoints (and the final model) are GBs at 780M-2.7B: only the curves and logs stay."""
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    if not keep_final:
        shutil.rmtree(run / "final", ignore_errors=True)


def same_weights(a: Path, b: Path) -> tuple[bool, float]:
    """(bit-for-bit equal, max abs difference) of two runs' final/model.safetensors."""
    from safetensors.torch import load_file

    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    if wa.keys() != wb.keys():
        return False, float("inf")
    diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    return all(wa[k].equal(wb[k]) for k in wa), diff


def one_gpu(args, size: str, work: Path, deadline: float) -> dict:
    run = work / f"{size}_n1"
    shutil.rmtree(run, ignore_errors=True)
    t = time.time()
    run_train(1, train_args(args, size, "ddp", run, 0), work / f"{size}_n1.log", args.device, deadline)
    prune(run)
    return {"section": f"{size} N=1", "size": size, "mode": "-", "n": 1, "wall_s": round(time.time() - t, 1),
            "losses": losses(run), "tok_per_s_per_gpu": per_gpu_rate(run, 1, args.skip)}


def two_gpus(args, size: str, mode: str, work: Path, deadline: float, one: dict, keep_final: bool) -> dict:
    run = work / f"{size}_{mode}_n2"
    shutil.rmtree(run, ignore_errors=True)
    t = time.time()
    run_train(2, train_args(args, size, mode, run, 0), work / f"{size}_{mode}_n2.log", args.device, deadline)
    prune(run, keep_final)
    curve, ref = losses(run), one["losses"]
    steps = sorted(ref)[:args.steps]
    row = {"section": f"{size} {mode} N=2", "size": size, "mode": mode, "n": 2, "wall_s": round(time.time() - t, 1),
           "losses": curve, "tok_per_s_per_gpu": per_gpu_rate(run, 2, args.skip), "steps_compared": len(steps)}
    row["max_rel_loss_diff"] = max_rel(ref, curve, steps) if set(steps) <= set(curve) else float("inf")
    row["loss_match"] = row["max_rel_loss_diff"] <= args.tol and len(steps) == args.steps
    if row["tok_per_s_per_gpu"] and one["tok_per_s_per_gpu"]:
        row["scaling_efficiency"] = row["tok_per_s_per_gpu"] / one["tok_per_s_per_gpu"]
    return row


def kill_and_resume(args, size: str, mode: str, work: Path, deadline: float, straight: Path) -> dict:
    """kill -9 rank 1 after the first checkpoint and one more step, resume on 2 ranks, compare with `straight`."""
    run, log = work / f"{size}_{mode}_killed", work / f"{size}_{mode}_killed.log"
    shutil.rmtree(run, ignore_errors=True)
    every = args.steps // 2
    train = train_args(args, size, mode, run, every)
    proc = launch(2, train, log, args.device)
    ckpt = run / "checkpoints" / f"step_{every:08d}" / "trainer.json"
    while proc.poll() is None and not (ckpt.is_file() and max(losses(run), default=0) > every):
        if time.time() > deadline:
            finish(proc, 0)
        time.sleep(0.01)
    pids = rank_pids(proc.pid)
    if proc.poll() is not None or 1 not in pids:
        finish(proc, deadline)
        raise RuntimeError(f"the run ended (rc {proc.returncode}) before rank 1 could be killed: "
                           f"{log.read_text()[-800:]}")
    os.kill(pids[1], signal.SIGKILL)
    rc = finish(proc, min(deadline, time.time() + 120))
    before = read_metrics(run / "metrics.jsonl")
    killed_at = max(losses(run), default=0)
    row = {"section": f"{size} {mode} kill+resume", "size": size, "mode": mode, "n": 2, "killed_rank": 1,
           "killed_pid": pids[1], "torchrun_rc_after_kill": rc, "checkpoint_step": every,
           "last_step_logged": killed_at,
           "stopped_mid_run": rc != 0 and every < killed_at < args.steps and not (run / "final").exists()}
    t = time.time()
    run_train(2, train, work / f"{size}_{mode}_resumed.log", args.device, deadline)  # the same command: resumes
    after_rows = read_metrics(run / "metrics.jsonl")
    resumed, ref = losses(run), losses(straight)
    head, tail = [s for s in sorted(ref) if s <= every], [s for s in sorted(ref) if s > every]

    def rows_at(rows, keep):
        return [r for r in rows if keep(r["step"])]

    row.update({
        "resume_wall_s": round(time.time() - t, 1), "resumed_from": every,
        # a resume keeps the rows up to the checkpoint as they were written before the kill (timings included)
        # and redoes the next one; a run restarted from scratch would have rewritten them all
        "resumed_at_checkpoint": rows_at(after_rows, lambda s: s <= every) == rows_at(before, lambda s: s <= every)
        and rows_at(after_rows, lambda s: s == every + 1) != rows_at(before, lambda s: s == every + 1),
        "resumed_steps": sorted(resumed) == sorted(ref),
        "before_kill_bit_exact": all(resumed.get(s) == ref[s] for s in head),
        "after_resume_bit_exact": all(resumed.get(s) == ref[s] for s in tail),
        "after_resume_max_rel_diff": max_rel(ref, resumed, tail) if set(tail) <= set(resumed) else float("inf")})
    row["final_weights_bit_exact"], row["final_weights_max_abs_diff"] = same_weights(straight, run)
    if args.device == "cpu" or row["before_kill_bit_exact"]:  # the run reproduces itself: demand bit for bit
        exact = row["after_resume_bit_exact"] and row["final_weights_bit_exact"]
    else:
        exact = row["after_resume_max_rel_diff"] <= args.tol
    row["resume_exact"] = exact and row["stopped_mid_run"] and row["resumed_at_checkpoint"] and row["resumed_steps"]
    prune(run)
    return row


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], tol: float) -> None:
    print(f"\n{'section':24} {'wall s':>7} {'tok/s/GPU':>10} {'scaling':>8} {'max rel loss diff':>18}  verdict")
    for r in rows:
        if "error" in r:
            print(f"{r['section']:24} {'':>7} {'':>10} {'':>8} {'':>18}  {r['error'][:90]}")
        elif "resume_exact" in r:
            print(f"{r['section']:24} {fmt(r.get('resume_wall_s'), '.1f'):>7} {'':>10} {'':>8} "
                  f"{fmt(r['after_resume_max_rel_diff'], '.2e'):>18}  resume from step {r['resumed_from']} "
                  f"(rank 1 killed at step {r['last_step_logged']}): {'PASS' if r['resume_exact'] else 'FAIL'} "
                  f"(bit-exact after resume {r['after_resume_bit_exact']}, before the kill "
                  f"{r['before_kill_bit_exact']}, weights {r['final_weights_bit_exact']})")
        else:
            eff, diff = r.get("scaling_efficiency"), r.get("max_rel_loss_diff")
            verdict = "" if r["n"] == 1 else (f"{r['steps_compared']} steps vs N=1: "
                                              f"{'PASS' if r['loss_match'] else 'FAIL'} (tol {tol:g}); scaling "
                                              f"{'PASS' if eff and eff >= 0.9 else 'FAIL'} (>= 0.9)")
            print(f"{r['section']:24} {r['wall_s']:>7.1f} {fmt(r['tok_per_s_per_gpu'], ',.0f'):>10} "
                  f"{fmt(eff, '.3f'):>8} {fmt(diff, '.2e'):>18}  {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a build output dir (on CPU: built here if missing)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--sizes", nargs="+", help="default: 780m 2.7b on cuda, tiny on cpu")
    ap.add_argument("--modes", nargs="+", default=["ddp", "fsdp"], choices=["ddp", "fsdp"])
    ap.add_argument("--kill", nargs="*", help="SIZE/MODE runs to kill and resume (default: 780m/fsdp on cuda, "
                                              "tiny/ddp tiny/fsdp on cpu; none: no argument)")
    ap.add_argument("--steps", type=int, help="steps of every run = steps compared (default 50 cuda, 20 cpu)")
    ap.add_argument("--seq-len", type=int, help="default 2048 cuda, 64 cpu")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--tol", type=float, help="max relative loss difference (default 1e-2 bf16 cuda, 1e-5 fp32 cpu)")
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out of tokens/s")
    ap.add_argument("--compile", action="store_true", help="--compile in every run (compile time per launch)")
    ap.add_argument("--budget-s", type=float, default=520, help="deadline for the whole script (the device call "
                                                                 "allows 600 s, with ~60 s of kernel install first)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/multi_gpu_train"), help="run dirs (checkpoints: GBs)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/multi_gpu_train")))
    args = ap.parse_args()
    cpu = args.device == "cpu"
    args.sizes = args.sizes or (["tiny"] if cpu else ["780m", "2.7b"])
    args.kill = args.kill if args.kill is not None else (["tiny/ddp", "tiny/fsdp"] if cpu else ["780m/fsdp"])
    args.steps = args.steps or (20 if cpu else 50)
    args.seq_len = args.seq_len or (64 if cpu else 2048)
    args.tol = args.tol if args.tol is not None else (1e-5 if cpu else 1e-2)
    args.data, args.work, args.out = args.data.resolve(), args.work.resolve(), args.out.resolve()
    deadline = START + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    ensure_build(args.data, args.device)
    rows: list[dict] = []
    results = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "env": NCCL_ENV, "rows": rows}

    def record(row: dict) -> None:
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "losses"}), f"[{time.time() - START:.0f} s]",
              flush=True)
        (args.out / "multi_gpu_train.json").write_text(json.dumps(results, indent=1))
        for log in args.work.glob("*.log"):  # the torchrun logs too, in case the call is cut later
            shutil.copy(log, args.out / log.name)

    def section(name: str, fn, *a):
        """One section; a failure is recorded and the next sections still run, the deadline stops them all."""
        if time.time() > deadline:
            record({"section": name, "error": "skipped (deadline)"})
            return None
        try:
            row = fn(*a)
        except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others
            row = {"section": name, "error": f"{type(exc).__name__}: {exc}"[:1500]}
        record(row)
        return None if "error" in row else row

    for size in args.sizes:
        one = section(f"{size} N=1", one_gpu, args, size, args.work, deadline)
        for mode in args.modes:
            kill = f"{size}/{mode}" in args.kill
            two = section(f"{size} {mode} N=2", two_gpus, args, size, mode, args.work, deadline, one, kill) \
                if one else record({"section": f"{size} {mode} N=2", "error": "no N=1 run to compare with"})
            if kill and two:
                straight = args.work / f"{size}_{mode}_n2"
                section(f"{size} {mode} kill+resume", kill_and_resume, args, size, mode, args.work, deadline, straight)
                prune(straight)
    print_table(rows, args.tol)


if __name__ == "__main__":
    main()
