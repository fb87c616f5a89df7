"""`vllm`: vLLM in-process. One engine per GPU (or tensor-parallel group): the local executor keeps it in the driver
process, the Ray executor runs one per actor (`replicas` actors, `num_gpus` each).

One thread owns the engine and steps it directly (what `LLM.generate` does inside). Every generate()/submit() call —
from any thread — hands its requests to that thread, so requests of concurrent batches share one continuous batch,
and each finished completion reaches the request cache immediately: a crash mid-batch loses only requests still
running. The feeder (executors/local.py) keeps 2 x max_num_seqs requests handed in, so vLLM's own waiting queue
always holds a full batch to schedule next.
"""
from __future__ import annotations

import itertools
import os
import queue
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from paraphrase_pipe.engines import EngineError
from paraphrase_pipe.engines.engine_log import OOM, start_failure, tee_output
from paraphrase_pipe.engines.llm import Completion, GenerationOptions, InFlight, LLMEngine, OnDone, Request
from paraphrase_pipe.schema import WORK_DIR
from paraphrase_pipe.engines.vllm_args import ActorPoolHints, VLLMEngineArgs


class VLLMOptions(GenerationOptions, VLLMEngineArgs, ActorPoolHints):
    metrics_every_s: float = Field(1.0, gt=0, description="seconds between samples of vLLM's own scheduler figures "
                                   "(steady rate, batch run, KV use): finer for a short `plan` sample")


class VLLMEngine(LLMEngine):
    name = "vllm"
    placement = "driver"
    Options = VLLMOptions

    _ids = itertools.count()
    _stepper: threading.Thread | None = None

    @classmethod
    def gpus_held(cls, options: dict[str, Any], executor: str) -> float:
        o = cls.Options(**options)
        return o.gpus_held(o.tensor_parallel_size, executor)

    def _start(self) -> None:
        o = self.options
        kwargs = o.vllm_kwargs(model=o.model, revision=o.revision, tokenizer=o.model_tokenizer, seed=o.seed,
                               max_model_len=o.max_model_len)
        kwargs.setdefault("disable_log_stats", False)  # vLLM's own scheduler figures (SchedulerWatch)
        if o.tensor_parallel_size > 1:
            # Inside a Ray actor vLLM would otherwise try to build its own placement group: the actor already holds
            # the group's GPUs, so plain worker processes on them are what we want.
            kwargs.setdefault("distributed_executor_backend", "mp")
        with tee_output(self._log_path()) as log:  # the engine core reports its errors on stdout/stderr only
            offset = log.stat().st_size
            try:
                from vllm import LLM

                self.llm = LLM(**kwargs)
            except Exception as exc:  # noqa: BLE001 - vLLM start-up fails in many ways (OOM, bad model, bad args)
                time.sleep(0.2)  # let the tee drain the core's last lines
                why = start_failure(exc, log, start=offset)
                kind = "ran out of memory while starting" if OOM.search(why) else "could not start"
                raise EngineError(f"vLLM {kind} {o.model!r}: {why}") from exc
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        # the scheduler's own batch width (vLLM picks it per GPU when unset): the feeder keeps twice that handed in
        self._in_flight.full_at = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        self._unfinished = InFlight()  # vLLM's own count of unfinished requests, read by the stepper at every step
        self._unfinished.full_at = self._in_flight.full_at
        self._watch = SchedulerWatch(self.llm.llm_engine, o.metrics_every_s) if not kwargs["disable_log_stats"] else None
        cache = self.llm.llm_engine.vllm_config.cache_config  # filled in from the engine core's profile run
        self._kv_cache_tokens = (cache.num_gpu_blocks or 0) * cache.block_size or None
        self._inbox: queue.Queue[_Batch] = queue.Queue()
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._finished: queue.Queue = queue.Queue()  # (batch, request, completion) from the stepper, or None: stop
        self._stepper = threading.Thread(target=self._step_forever, name="vllm-stepper", daemon=True)
        self._stepper.start()
        self._answers = threading.Thread(target=self._finish_forever, name="vllm-answers", daemon=True)
        self._answers.start()

    def _log_path(self) -> Path:
        where = self.workdir / WORK_DIR if self.workdir else Path(tempfile.gettempdir()) / "paraphrase-pipe"
        return where / "engine" / f"vllm-{socket.gethostname()}-{os.getpid()}.log"

    def _complete(self, requests: list[Request], on_done: OnDone) -> list[Completion]:
        batch = _Batch(requests, on_done)
        self._inbox.put(batch)
        while not batch.done.wait(1.0):
            if not self._stepper.is_alive():
                raise EngineError("the vLLM engine thread stopped") from self._failure
        if batch.error is not None:
            raise batch.error
        return [batch.results[r.key] for r in requests]

    def _step_forever(self) -> None:
        """The only thread that touches the vLLM engine: adds the requests of every waiting batch, steps, hands
        each finished completion to its batch."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        o, engine = self.options, self.llm.llm_engine
        live: dict[str, tuple[_Batch, Request, float]] = {}
        while not self._stopping.is_set():
            try:
                batch = self._inbox.get(timeout=0.2) if not live else self._inbox.get_nowait()
            except queue.Empty:
                batch = None
            while batch is not None:
                # token prompts go through the engine's renderer, as LLM.generate does (raw prompts in add_request
                # are deprecated); vLLM 0.26 and 0.32 both have it
                inputs = engine.renderer.render_cmpl([TokensPrompt(prompt_token_ids=r.prompt) for r in batch.requests])
                for request, engine_input in zip(batch.requests, inputs):
                    params = SamplingParams(temperature=o.temperature, top_p=o.top_p, max_tokens=request.max_tokens,
                                            seed=request.seed, stop=o.stop, output_kind=RequestOutputKind.FINAL_ONLY)
                    rid = f"pp-{next(self._ids)}"
                    engine.add_request(rid, engine_input, params)
                    live[rid] = (batch, request, time.perf_counter())
                try:
                    batch = self._inbox.get_nowait()
                except queue.Empty:
                    batch = None
            if not live:
                continue
            try:
                self._unfinished.observe(engine.get_num_unfinished_requests())
                outputs = engine.step()
                if self._watch is not None:
                    self._watch.poll()
                for out in outputs:
                    if out.finished and out.request_id in live:
                        batch, request, started = live.pop(out.request_id)
                        first = out.outputs[0]
                        self._finished.put((batch, request, Completion(first.text, first.finish_reason, len(out.prompt_token_ids or request.prompt),
                                                                       len(first.token_ids), time.perf_counter() - started)))
            except BaseException as exc:  # noqa: BLE001 - every waiting batch must hear about it
                self._failure = exc
                for batch, _, _ in live.values():
                    batch.fail(exc)
                return

    def _finish_forever(self) -> None:
        """Answers leave the stepper at once; their bookkeeping (request cache, progress, the waiting call) runs
        here, so the engine steps on while an answer is written down."""
        while (item := self._finished.get()) is not None:
            batch, request, completion = item
            batch.finish(request, completion)

    def stats(self) -> dict[str, Any]:
        """Adds the occupancy read from vLLM's own counter (what the scheduler saw), next to the feeder's count."""
        stats = super().stats()
        if self._stepper is not None:
            engine = self._unfinished.stats()
            stats["engine_counter"] = {k: engine.get(k) for k in ("mean_in_flight", "full_fraction", "window_s")}
            stats["engine_counter"]["kv_cache_tokens"] = self._kv_cache_tokens
            if self._watch is not None:
                stats["engine_counter"].update(self._watch.stats())
        return stats

    def scheduler_trace(self) -> list[list[float]]:
        """vLLM's figures sampled about once a second since the engine started (`SchedulerWatch.trace`)."""
        return self._watch.trace() if self._stepper is not None and self._watch is not None else []

    def close(self) -> None:
        if self._stepper is not None:
            self._stopping.set()
            self._stepper.join(timeout=30)
            self._finished.put(None)
            self._answers.join(timeout=30)  # every answer written down before the request cache closes
        super().close()
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            engine_core = getattr(llm.llm_engine, "engine_core", None)
            if engine_core is not None and hasattr(engine_core, "shutdown"):
                engine_core.shutdown()


class SchedulerWatch:
    """vLLM's own Prometheus figures, sampled about once a second by the stepper: output tokens generated, requests
    running and waiting, KV-cache use. `saturated_tok_s` is the steady per-GPU rate (`SteadyRate`: while requests
    waited, once the engine had run a full batch), free of the start and of the tail where the last requests
    drain; `max_running` is the batch it really ran (below max_num_seqs: the KV cache was the limit). Every figure is
    kept up to date as samples arrive, so reading them costs the same on a days-long build (a Ray engine actor reads
    them after every batch) as on a short one."""

    NAMES = {"vllm:generation_tokens": "tokens", "vllm:num_requests_running": "running",
             "vllm:num_requests_waiting": "waiting", "vllm:kv_cache_usage_perc": "kv"}
    TRACE_S = 3600  # the seconds of samples kept for `trace`: the first hour, far longer than a `plan` sample

    def __init__(self, engine, every_s: float):
        self.engine, self.every_s = engine, every_s
        self.trace_rows = round(self.TRACE_S / every_s)  # the first hour, whatever the sampling (`metrics_every_s`)
        self.rows: list[list[float]] = []  # [t, output tokens so far, running, waiting, KV use], the first trace_rows
        self.steady = SteadyRate()
        self.max_running, self.kv_peak = 0.0, 0.0
        self._next = 0.0

    def poll(self) -> None:
        now = time.perf_counter()
        if now < self._next:
            return
        self._next = now + self.every_s
        values = dict.fromkeys(self.NAMES.values(), 0.0)
        for metric in self.engine.get_metrics():  # summed over the engine's labels (one per engine core)
            if (key := self.NAMES.get(metric.name)) is not None:
                values[key] += metric.value
        self.add([now, values["tokens"], values["running"], values["waiting"], values["kv"]])

    def add(self, row: list[float]) -> None:
        self.steady.add(row)
        self.max_running, self.kv_peak = max(self.max_running, row[2]), max(self.kv_peak, row[4])
        if len(self.rows) < self.trace_rows:
            self.rows.append(row)

    def stats(self) -> dict[str, Any]:
        seconds, tokens = self.steady.seconds, self.steady.tokens
        return {"saturated_s": round(seconds, 1), "saturated_tok_s": round(tokens / seconds, 1) if seconds else None,
                "max_running": int(self.max_running), "kv_cache_peak": round(self.kv_peak, 3)}

    def trace(self) -> list[list[float]]:
        """The first trace_rows samples as [seconds since the first, output tokens so far, running, waiting, KV use]:
        what a short run's steady rate rests on (`plan` keeps it)."""
        start = self.rows[0][0] if self.rows else 0.0
        return [[round(t - start, 2), tokens, running, waiting, round(kv, 4)] for t, tokens, running, waiting, kv in self.rows]


class SteadyRate:
    """The engine's steady rate, kept as samples ([seconds, output tokens so far, running, waiting, KV use]) arrive:
    tokens and seconds over consecutive samples with requests waiting at both ends (the engine ran as many as it
    could), from the first sample at which it ran a full batch: at least FULL_SHARE of the most it has run. A batch
    that later grows past that share of it (a restart, a cache that grew) starts the count again; one more sequence
    after hours does not. Before the engine is first full, requests wait while the engine core is still taking them
    in: on an H200, a 4,096-request `plan` sample of the 125M shape spent its first 5.7 s there at 1% of its rate,
    which took the sample's rate to 0.55x the build's."""

    FULL_SHARE = 0.9

    def __init__(self, keep_intervals: bool = False):
        self.seconds = self.tokens = 0.0
        self.intervals: list[tuple[list[float], list[float]]] | None = [] if keep_intervals else None
        self._full = 0.0  # the most the engine has run
        self._counted_from: float | None = None  # the batch running at the sample the count starts from
        self._last: list[float] | None = None

    def add(self, row: list[float]) -> None:
        last, self._last = self._last, row
        self._full = max(self._full, row[2])
        if self._counted_from is not None and self._counted_from < self.FULL_SHARE * self._full:
            self._counted_from, self.seconds, self.tokens = None, 0.0, 0.0
            if self.intervals is not None:
                self.intervals.clear()
        if self._counted_from is None:
            if row[2] >= self.FULL_SHARE * self._full:
                self._counted_from = row[2]
        elif last[3] > 0 and row[3] > 0:
            self.seconds, self.tokens = self.seconds + row[0] - last[0], self.tokens + row[1] - last[1]
            if self.intervals is not None:
                self.intervals.append((last, row))


def waiting_intervals(rows: list[list[float]]) -> list[tuple[list[float], list[float]]]:
    """The pairs of consecutive samples the steady rate is taken over (`SteadyRate`), for a recorded trace."""
    steady = SteadyRate(keep_intervals=True)
    for row in rows:
        steady.add(row)
    return steady.intervals or []


class _Batch:
    """One generate() call waiting on the stepper thread."""

    def __init__(self, requests: list[Request], on_done: OnDone):
        self.requests, self.on_done = requests, on_done
        self.results: dict[str, Completion] = {}
        self.error: BaseException | None = None
        self.done = threading.Event()

    def finish(self, request: Request, completion: Completion) -> None:
        self.results[request.key] = completion
        try:
            self.on_done(request, completion)
        except BaseException as exc:  # noqa: BLE001 - e.g. the request cache's disk is full: this batch fails
            self.fail(exc)
        if len(self.results) == len(self.requests):
            self.done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done.set()
