"""Real engines for the engine tests: a tiny random-weight Llama (built once), one real vLLM OpenAI server on
127.0.0.1 shared by every test that needs one (started in the background as soon as the session knows it will be
needed, so it boots while the first tests run), and a runner for full `paraphrase-pipe build` commands.

Every engine mode is configured the same way, so their outputs can be compared row for row: 16 documents of the
bundled sample at chunk 256 (63 chunks), max_model_len 560 (the longest prompts overflow and are rejected up front),
at most 24 new tokens, stop string "th" (a random model emits it often: some answers stop, others are truncated),
top_p 1 (a random model's near-uniform distributions would make a top-p cut-off depend on float noise, which
differs with batch composition; with it off, every mode samples the very same tokens from its per-chunk seeds).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from paraphrase_pipe.engines.managed_server import SERVER_MODULE, die_with_parent, free_port
from paraphrase_pipe.filters import FilterOptions

from .tiny_llm import build_tiny_llm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

REPO = Path(__file__).resolve().parents[2]
MAX_MODEL_LEN = 560
MAX_TOKENS = 24
# What every build of these tests shares (input, chunking, generation) — identical rows whatever the engine mode.
COMMON = ["--chunk", "256", "--tokenizer", "builtin:gpt2", "--limit", "16", "--max-model-len", str(MAX_MODEL_LEN),
          "-E", f"max_tokens={MAX_TOKENS}", "-E", "stop=[th]", "-E", "top_p=1", "--no-progress"]
# vLLM on a 2-core CPU: float32, no CUDA graphs, one process for the engine (starts in seconds).
VLLM_CPU = ["-E", "dtype=float32", "-E", "enforce_eager=true", "-E", "num_gpus=0",
            "-E", "engine_args={distributed_executor_backend: uni}"]
SERVER_FLAGS = ["--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--enforce-eager", "--seed", "0",
                "--no-enable-chunked-prefill", "--distributed-executor-backend", "uni"]
SERVED_ALIAS = "tiny-alias"  # a second name the shared server answers to: no hub id, no local dir
NO_FILTERS = "filter_options:\n" + "".join(f"  {g}: {{enabled: false}}\n" for g in FilterOptions.model_fields)
COMPARED = ("sample_id", "chunk_id", "paraphrase", "finish_reason", "prompt_tokens", "completion_tokens", "reject_reason")


@pytest.fixture(scope="package")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="package")
def recipe(tmp_path_factory) -> Path:
    """Random-weight paraphrases fail every closeness gate: these tests are about the LLM stage, so gates are off."""
    path = tmp_path_factory.mktemp("recipe") / "no-filters.yaml"
    path.write_text(NO_FILTERS)
    return path


def build_cmd(out: Path, model: Path, recipe: Path, *args: str, env: dict | None = None, check: bool = True,
              timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "paraphrase_pipe.cli", "build", "-o", str(out), "--model", str(model),
           "--recipe", str(recipe), *COMMON, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}")
    return proc


def build_popen(out: Path, model: Path, recipe: Path, *args: str) -> subprocess.Popen:
    """A build in its own process group (so a test can kill -9 all of it)."""
    cmd = [sys.executable, "-m", "paraphrase_pipe.cli", "build", "-o", str(out), "--model", str(model),
           "--recipe", str(recipe), *COMMON, *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "COLUMNS": "200"})


def rows(out: Path, kind: str | None = None) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = [kind] if kind else ["shards", "rejected"]
    tables = [pa.ipc.open_file(pa.memory_map(str(out / s["path"]))).read_all() for k in kinds for s in manifest[k]]
    return [r for t in tables for r in t.to_pylist()]


def engine_window(out: Path, where: str) -> dict:
    """The manifest's engine window of a build whose engines ran in other processes (Ray actors, Dask workers): one
    entry per engine, each with `where` it ran (actor / worker) and its host and pid, whose answers add up to those in
    the shards; the combined window spans every engine's, in epoch seconds; the combined figures are over it."""
    window = json.loads((out / "manifest.json").read_text())["runs"][-1]["engine_window"]
    engines = window["engines"]
    assert len({(e[where], e["host"], e["pid"]) for e in engines}) == len(engines), engines
    sent = [r["completion_tokens"] for r in rows(out) if r["completion_tokens"] is not None]
    assert window["requests"] == sum(e["requests"] for e in engines) == len(sent) > 0, window
    assert window["output_tokens"] == sum(e["output_tokens"] for e in engines) == sum(sent), window
    timed = [e for e in engines if e["requests"]]
    assert timed and all(window["first_at"] <= e["first_at"] <= e["last_at"] <= window["last_at"] for e in timed), window
    assert window["window_s"] >= max(e["window_s"] for e in timed) - 2e-3  # each rounded to the ms on its own
    assert abs(window["window_s"] - (window["last_at"] - window["first_at"])) < 2e-3
    assert window["output_tok_s"] == pytest.approx(window["output_tokens"] / window["window_s"], rel=1e-3)
    assert window["output_tok_s_per_engine"] == pytest.approx(window["output_tok_s"] / len(engines), rel=1e-2)
    assert window["start_s"] == max(e["start_s"] for e in engines if "start_s" in e) > 0
    return window


def comparable(out: Path) -> dict[str, tuple]:
    """chunk_id -> what must not depend on the engine mode (the LLM's answer and its fate)."""
    return {r["chunk_id"]: tuple(r.get(c) for c in COMPARED) for r in rows(out) if r["chunk_id"]}


class VLLMServer:
    """A real `api_server` process on 127.0.0.1 (dies with this process: PR_SET_PDEATHSIG)."""

    def __init__(self, model: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", SERVER_MODULE, "--model", str(model), "--served-model-name", str(model), SERVED_ALIAS,
                 "--host", "127.0.0.1", "--port", str(self.port), *SERVER_FLAGS],
                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)

    def wait(self, timeout: float = 240) -> VLLMServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"vLLM server died:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"vLLM server not healthy after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def requests_done(self) -> int:
        """From the server's own metrics: requests it finished (any finish reason)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total{")))

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="package")
def _server_boot(request, tiny_llm_dir, tmp_path_factory):
    server = VLLMServer(tiny_llm_dir, tmp_path_factory.mktemp("server") / "vllm-server.log")
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="package", autouse=True)
def _boot_server_early(request):
    """Start the shared server at the first engine test if any selected test needs it (it boots in ~30 s)."""
    if any("vllm_server" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("_server_boot")


@pytest.fixture(scope="package")
def vllm_server(_server_boot) -> VLLMServer:
    return _server_boot.wait()


@pytest.fixture(scope="package")
def inprocess_build(tiny_llm_dir, recipe, tmp_path_factory) -> Path:
    """(a) The reference build: vLLM in-process, local executor. Other modes must reproduce its rows."""
    out = tmp_path_factory.mktemp("inprocess") / "out"
    proc = build_cmd(out, tiny_llm_dir, recipe, "--engine", "vllm", *VLLM_CPU, "--log-every", "0.5", env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    (out.parent / "build.log").write_text(proc.stderr)  # its job log (stderr is a pipe): progress lines
    return out
