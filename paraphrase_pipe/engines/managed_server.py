"""`vllm-serve` (`--serve`): the build starts its own vLLM OpenAI servers and talks to them with the `openai` client.

One server per GPU or tensor-parallel group of this node (on Ray: one per actor, on the actor's GPUs), bound to
127.0.0.1 on a free port. A supervisor thread starts them, waits for `/health`, restarts a server that dies
(at most `max_restarts` times each) and stops them all at the end; servers also die with their parent (Linux
PR_SET_PDEATHSIG) so a killed build leaves no GPU held. A server that fails to start — CUDA out of memory, a bad
model, bad flags — stops the build at once with the server's own error line instead of a hang.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field

from paraphrase_pipe.engines import EngineError
from paraphrase_pipe.engines.engine_log import OOM, error_excerpt
from paraphrase_pipe.engines.openai_client import OpenAIEngine, OpenAIOptions, _Endpoint
from paraphrase_pipe.schema import WORK_DIR
from paraphrase_pipe.engines.vllm_args import ActorPoolHints, VLLMEngineArgs, as_cli_flags

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


class ServerOptions(OpenAIOptions, VLLMEngineArgs, ActorPoolHints):
    servers: int | None = Field(None, ge=1, description="servers on this node [default: visible GPUs / tensor_parallel_size, at least 1]")
    server_args: list[str] = Field(default_factory=list, description="extra api_server flags, verbatim")
    startup_timeout: float = Field(900, gt=0, description="seconds for a server to answer /health")
    down_timeout: float = Field(1200, gt=0, description="stop when every server has failed this long (covers a restart)")


def visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


PORT_TAKEN = re.compile(r"Address already in use")
PORT_TRIES = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """One `api_server` process: start, wait for /health, stop. Knows its port, its GPUs and its log."""

    def __init__(self, index: int, argv: list[str], gpus: list[str], log_dir: Path):
        self.index, self.argv, self.gpus = index, argv, gpus
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"server-{index}.log"
        self.pid_file = log_dir / f"server-{index}.pid"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._log_from = 0  # where this start's part of the (appended) log begins

    def start(self) -> None:
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        argv = [*self.argv, "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            log.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} gpus={self.gpus or 'none'}: {' '.join(argv)}\n".encode())
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True, preexec_fn=die_with_parent)
        self.pid_file.write_text(str(self.proc.pid))

    def wait_healthy(self, timeout: float, may_move: bool = False) -> None:
        """`may_move`: before anyone knows the URL, a port another process took since free_port() chose it is
        traded for a new one (up to PORT_TRIES times); a restarted server keeps the URL its clients already use."""
        deadline, tries = time.monotonic() + timeout, 1
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None and may_move and tries < PORT_TRIES and PORT_TAKEN.search(self._this_start_log()):
                tries += 1
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.start()
                continue
            if code is not None:
                kind = "ran out of memory" if OOM.search(self.log.read_text(errors="replace")[-20000:]) else f"exited with code {code}"
                raise EngineError(f"vLLM server {self.index} (GPUs {','.join(self.gpus) or 'none'}) {kind} during start-up: "
                                  f"{error_excerpt(self.log)}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise EngineError(f"vLLM server {self.index} did not become healthy within {timeout:g} s: {error_excerpt(self.log)}")

    def _this_start_log(self) -> str:
        with open(self.log, "rb") as f:
            f.seek(self._log_from)
            return f.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)  # the server and its engine-core children
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


class ManagedServerEngine(OpenAIEngine):
    name = "vllm-serve"
    placement = "driver"
    Options = ServerOptions

    @classmethod
    def gpus_held(cls, options: dict[str, Any], executor: str) -> float:
        o = cls.Options(**options)
        if executor == "ray" or o.num_gpus is not None:
            return o.gpus_held(o.tensor_parallel_size, executor)
        gpus = len(visible_gpus())
        return min(gpus, (o.servers or max(gpus // o.tensor_parallel_size, 1)) * o.tensor_parallel_size)

    def __init__(self, workdir=None, **options: Any):
        super().__init__(workdir, **options)
        self.servers: list[ServerProcess] = []
        self._fatal: EngineError | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def concurrency(self) -> int:
        """Twice what each server schedules at once, so its own waiting queue always holds a full batch."""
        per_server = 2 * self.options.max_num_seqs if self.options.max_num_seqs else 1024
        return self.options.concurrency or per_server * max(len(self.servers), 1)

    def _check_endpoints(self) -> None:
        if self.options.endpoints:
            raise EngineError("--serve starts its own servers: drop --endpoint (or drop --serve to use those endpoints)")

    def server_argv(self) -> list[str]:
        o = self.options
        kwargs = o.vllm_kwargs(model=o.model, revision=o.revision, tokenizer=o.model_tokenizer, seed=o.seed,
                               max_model_len=o.max_model_len)
        if o.served_model_name:
            kwargs["served_model_name"] = o.served_model_name
        return [sys.executable, "-m", SERVER_MODULE, *as_cli_flags(kwargs), *o.server_args]

    def _plan_servers(self) -> list[ServerProcess]:
        o = self.options
        gpus, tp = visible_gpus(), o.tensor_parallel_size
        count = o.servers or max(len(gpus) // tp, 1)
        if gpus and count * tp > len(gpus):
            raise EngineError(f"{count} server(s) x tensor_parallel_size {tp} need {count * tp} GPUs; {len(gpus)} visible")
        log_dir = (self.workdir / WORK_DIR / "serve") if self.workdir else Path(tempfile.mkdtemp(prefix="vllm-serve-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        argv = self.server_argv()
        return [ServerProcess(i, argv, gpus[i * tp:(i + 1) * tp], log_dir) for i in range(count)]

    def _start(self) -> None:
        self.servers = self._plan_servers()
        ready = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, args=(ready,), name="vllm-serve-supervisor", daemon=True)
        self._supervisor.start()
        ready.wait()
        if self._fatal:
            self.close()
            raise self._fatal
        self.options.endpoints = [s.url for s in self.servers]
        super()._start()

    def _supervise(self, ready: threading.Event) -> None:
        """Owns the server processes (they die with this thread's process): start, then watch and restart."""
        try:
            for server in self.servers:
                server.start()
            for server in self.servers:
                server.wait_healthy(self.options.startup_timeout, may_move=True)  # no client has the URLs yet
        except EngineError as exc:
            self._fatal = exc
        finally:
            ready.set()
        while not self._fatal and not self._stopping.wait(1.0):
            for server in self.servers:
                if not server.alive() and not self._stopping.is_set():
                    self._restart(server)

    def _restart(self, server: ServerProcess) -> None:
        why = error_excerpt(server.log)
        limit = self.options.max_restarts  # -1: no limit
        if OOM.search(why) or 0 <= limit <= server.restarts:
            self._fatal = EngineError(f"vLLM server {server.index} died ({server.restarts} restarts so far): {why}")
            return
        server.restarts += 1
        try:
            server.start()
            server.wait_healthy(self.options.startup_timeout)
        except EngineError as exc:
            self._fatal = exc

    def _note_failure(self, endpoint: _Endpoint, reason: str) -> None:
        if self._fatal:
            raise self._fatal
        super()._note_failure(endpoint, reason)

    def close(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        for server in self.servers:
            server.stop()
        super().close()
