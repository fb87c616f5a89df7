"""Batch-job ergonomics: progress lines in a log, an honest dry run, a fast `nothing to do`, clear errors."""
from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console

from paraphrase_pipe.build import run_build
from paraphrase_pipe.config import resolve_config
from paraphrase_pipe.output.ranges import range_id
from paraphrase_pipe.output.resume import planned_tasks
from paraphrase_pipe.output.running import BatchWork, clear_running, read_running
from paraphrase_pipe.output.shards import write_rows
from paraphrase_pipe.pipeline import Pipeline
from paraphrase_pipe.schema import split_live
from paraphrase_pipe.sources import discover
from paraphrase_pipe.sweep import expand

from .conftest import CLI, REPO, run_cli, sample_records, write_jsonl

PIPELINES = REPO / "pipelines"
TOK = "builtin:gpt2"
COMPARED = ("documents", "chunks", "accepted", "tokens", "rejected", "excluded", "rejects_by_reason")


def test_progress_lines_reach_a_captured_log_every_log_every_seconds(tmp_path):
    """stderr a pipe (a Slurm/Ray job log) and --no-progress: no bar, but a line every --log-every seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [*CLI, "build", "--tokenizer", TOK, "--chunk", "64", "--workers", "1", "--no-progress", "--log-every", "0.25",
           "-o", str(tmp_path / "o")]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    arrivals = [(time.monotonic() - started, line) for line in proc.stderr]
    assert proc.wait() == 0, "".join(line for _, line in arrivals)
    finished = time.monotonic() - started
    lines = [(t, line) for t, line in arrivals if line.startswith("progress ")]
    assert len(lines) >= 2, arrivals
    for field in ("documents", "chunks", "accepted", "rejected", "in ", "out ", "tok/s", "ETA"):
        assert field in lines[-1][1], lines[-1][1]
    assert re.search(r"\d+/332 documents", lines[-1][1])
    # every line within --log-every of the previous one (the slack is for a loaded 2-core machine), none after the end
    gaps = [b - a for (a, _), (b, _) in zip(lines, lines[1:])]
    assert max(gaps) < 2.0, gaps
    assert lines[-1][0] <= finished
    assert "━" not in "".join(line for _, line in arrivals)  # no bar in a log


def test_progress_total_is_never_exceeded(tmp_path):
    """A truncated .zst yields one more row (its dead letter) than the planner counted: the total grows with it."""
    full = write_jsonl(tmp_path / "in" / "cut.jsonl.zst", sample_records(120))
    full.write_bytes(full.read_bytes()[: len(full.read_bytes()) * 2 // 3])
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200)
    config = resolve_config(None, input=[str(tmp_path / "in")], tokenizer=TOK, chunk=512, output=str(tmp_path / "o"), workers=1)
    result = run_build(config, console=console)
    assert result.counts["rejects_by_reason"].get("truncated_input") == 1
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    shown = [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) docs", plain)]
    assert shown and all(done <= total for done, total in shown), shown
    assert shown[-1][0] == result.counts["documents"]


def _sends(recipe_values: dict, out: Path) -> dict:
    """A real build that reads and chunks exactly as `recipe_values` do and sends nothing to an LLM."""
    config = resolve_config(None, **{**recipe_values, "engine": "none", "engine_options": {}, "layout": "orig", "mix": 0.0,
                                     "output": str(out), "progress": False})
    return run_build(config).counts


def test_dry_run_of_the_paper_recipe_counts_what_the_real_build_would_chunk_and_send(tmp_path):
    recipe = PIPELINES / "slimpajama-paraphrase.yaml"
    dry = run_build(resolve_config(recipe, tokenizer=TOK, limit=40, chunk=512, output=str(tmp_path / "dry"), progress=False), dry_run=True)
    assert dry.sends_to_engine and not (tmp_path / "dry").exists()
    real = _sends({**resolve_config(recipe, tokenizer=TOK, limit=40, chunk=512).model_dump(exclude={"output", "progress"})}, tmp_path / "real")
    assert {k: dry.counts.get(k) for k in COMPARED} == {k: real.get(k) for k in COMPARED}
    assert dry.counts["accepted"] > 40 and dry.counts["tokens"] > 10_000
    assert "no_paraphrase" not in dry.counts["rejects_by_reason"]

    shown = run_cli("build", "--recipe", str(recipe), "--tokenizer", TOK, "--limit", "40", "--chunk", "512", "--dry-run")
    assert re.search(rf"chunks to paraphrase\s*│\s*{dry.counts['accepted']:,}", shown.stdout), shown.stdout


def test_dry_run_of_a_sweep_counts_what_each_point_would_send(tmp_path):
    recipe = PIPELINES / "chunk-sweep.yaml"
    proc = run_cli("sweep", str(recipe), "--only", "chunk512", "--only", "chunk1024", "--tokenizer", TOK, "--limit", "20",
                   "--dry-run", cwd=tmp_path)
    shown = [int(n.replace(",", "")) for n in re.findall(r"chunks to paraphrase\s*│\s*([\d,]+)", proc.stdout)]
    points = dict(expand(recipe))
    expected = [_sends({**points[name], "tokenizer": TOK, "limit": 20}, tmp_path / name)["accepted"] for name in ("chunk512", "chunk1024")]
    assert shown == expected and expected[0] > expected[1] > 20
    assert not (tmp_path / "out").exists()


def test_nothing_to_do_rerun_imports_no_transformers_and_reads_no_tokenizer(tmp_path):
    """A finished build without --tokenizer (the default fell back to builtin:gpt2) reruns as `nothing to do`
    without resolving the default tokenizer again (no transformers import, no hub look-up)."""
    out = tmp_path / "o"
    run_cli("build", "--limit", "6", "--chunk", "256", "-o", str(out), "--no-progress")
    probe = ("import sys, runpy; sys.argv = ['paraphrase-pipe', 'build', '--limit', '6', '--chunk', '256', '-o', sys.argv[1]]\n"
             "try:\n    runpy.run_module('paraphrase_pipe.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('transformers imported:', 'transformers' in sys.modules, 'cli imported as a module:', 'paraphrase_pipe.cli' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert "nothing to do" in proc.stdout, proc.stdout + proc.stderr
    assert "transformers imported: False" in proc.stdout
    assert "cli imported as a module: False" in proc.stdout  # `python -m paraphrase_pipe.cli` runs one copy of it


def test_an_unreachable_hub_turns_hub_offline_mode_on_for_the_process():
    probe = ("import huggingface_hub.constants as c, os\n"
             "from paraphrase_pipe.tokenizer import hub_reachable\n"
             "assert not c.HF_HUB_OFFLINE\n"
             "print(hub_reachable(), os.environ.get('HF_HUB_OFFLINE'), c.HF_HUB_OFFLINE)")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "https://127.0.0.1:9"  # nothing listens there: refused at once
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.stdout.split() == ["False", "1", "True"], proc.stderr


def test_sweep_errors_name_what_sweep_takes(tmp_path):
    recipe = PIPELINES / "compare-datasets.yaml"
    args = ["sweep", str(recipe), "--only", "original-only", "--tokenizer", TOK, "--limit", "3", "--no-progress"]
    run_cli(*args, cwd=tmp_path)
    changed = run_cli(*args[:-3], "--limit", "4", "--no-progress", cwd=tmp_path, check=False)
    assert changed.returncode == 2 and "different configuration (changed: limit)" in changed.stderr
    assert "--overwrite" not in changed.stderr and "--output" not in changed.stderr
    assert "output:" in changed.stderr and "Traceback" not in changed.stderr


def test_config_errors_have_no_doubled_colon_and_help_shows_defaults():
    proc = run_cli("build", "--tokenizer", TOK, "--layout", "orig+para", "--dry-run", check=False)
    assert proc.returncode == 2
    line = " ".join(proc.stderr.split())
    assert "invalid build configuration: layout 'orig+para' needs paraphrases" in line and ": :" not in line
    assert "Value error" not in line
    shown = " ".join(run_cli("build", "--help").stdout.split())
    for default in ("[default: 2048]", "[default: out]", "[default: local]", "[default: orig]", "[default: 30]"):
        assert default in shown, default
    top = run_cli("--help").stdout
    assert "heavy imports" not in top and "registers" not in top
    assert run_cli("--version").stdout.strip() == "paraphrase-pipe 0.1.0"


def _first_task(inp: str, out: str):
    """The first task of a real build's plan over `inp`, through the front (read, chunk): (task, its rows)."""
    config = resolve_config(None, input=[inp], tokenizer=TOK, chunk=64, output=out, docs_per_task=10)
    task = planned_tasks(None, discover(config.input), config)[0]
    return task, Pipeline(config).front(task)


def _answer_in_two_steps(inp: str, out: str, half, go_on) -> None:
    """A worker process: the task's live chunks answered in two steps, through the paraphrase stage's reports."""
    _, rows = _first_task(inp, out)
    live, _ = split_live(rows)
    work = BatchWork(Path(out), rows, live)
    for i in range(len(live) // 2):
        work.answered(i, 3)
    work.file.flush()
    half.set()
    go_on.wait(60)
    work.finish([SimpleNamespace(completion_tokens=3)] * len(live))


def test_running_work_reaches_the_driver_from_another_process_and_ends_equal_to_the_commit(tmp_path):
    """The reports of a paraphrase batch in another process (as on local workers, Ray actors, Dask workers): half its
    chunks answered shows as half done; all answered, the range's counts are exactly what committing it adds."""
    inp, out = str(write_jsonl(tmp_path / "in" / "docs.jsonl", sample_records(10)).parent), tmp_path / "out"
    ctx = mp.get_context("spawn")
    half, go_on = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_answer_in_two_steps, args=(inp, str(out), half, go_on))
    child.start()
    try:
        assert half.wait(60), "the worker never reported"
        (rid, partial), = read_running(out).items()
        go_on.set()
        child.join(60)
    finally:
        child.kill()
    assert child.exitcode == 0
    (rid_again, final), = read_running(out).items()
    task, rows = _first_task(inp, str(out))
    live = pc.is_null(rows["reject_reason"])
    answered = rows.set_column(rows.schema.get_field_index("completion_tokens"), "completion_tokens",
                               pc.if_else(live, pa.scalar(3, pa.int32()), pa.scalar(None, pa.int32())))
    metas = write_rows(answered, out, 4096, dry_run=True)  # what committing the task would record
    committed = {k: sum(m[k] for m in metas) for k in ("documents", "chunks", "source_tokens", "generated_tokens")}
    n_live = pc.sum(live).as_py()
    assert rid == rid_again == range_id(*task.range)
    assert final == committed and committed["documents"] == 10 and n_live > 20
    assert partial["generated_tokens"] == 3 * (n_live // 2) and partial["chunks"] < final["chunks"]
    assert partial["documents"] < final["documents"]
    clear_running(out)
    assert read_running(out) == {}
