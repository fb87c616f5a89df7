"""What every LLM engine shares: chunk -> prompt tokens -> (request cache | backend) -> cleaned Generation.

A backend (vLLM in-process, OpenAI-compatible HTTP, managed vLLM servers) only turns prompt token ids into raw
completions and reports each one as soon as it finishes; this class renders prompts, applies the `max_tokens`
rule and the context check, reuses cached answers, cleans outputs and writes provenance.

`generate` is thread-safe and backends share one request stream across concurrent calls. `submit` is its
non-blocking twin: it counts the chunks as in flight at once, so a feeder can keep `in_flight()` at
`target_in_flight()` (sized from the engine's own `max_num_seqs` / the client's concurrency), refilled as answers
arrive, independent of task boundaries. `stats()` says how full that kept the engine. Options are validated
by a pydantic model per engine, so a typo in a recipe is a one-line error, not a crash an hour into a run.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paraphrase_pipe.engines import EngineError
from paraphrase_pipe.engines.base import Generation
from paraphrase_pipe.engines.cleaning import clean
from paraphrase_pipe.engines.prompts import DEFAULT_TEMPLATE, PromptRenderer, load_model_tokenizer, load_template, max_new_tokens
from paraphrase_pipe.engines.request_cache import CACHE_DIR, RequestCache
from paraphrase_pipe.ids import stable_hash


class GenerationOptions(BaseModel):
    """Options every LLM engine takes (recipe `engine_options:` / CLI flags)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(description="hub id or local dir (in-process / served); the name the server serves (openai)")
    revision: str | None = None
    model_tokenizer: str | None = Field(None, description="the model's tokenizer if not `model` (e.g. a served alias)")
    template: str = DEFAULT_TEMPLATE
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 0
    stop: list[str] | None = Field(None, description="stop strings (not included in the output)")
    max_tokens_ratio: float = Field(1.3, gt=0, description="max_tokens = ratio x source tokens + margin")
    max_tokens_margin: int = Field(32, ge=0)
    max_tokens: int | None = Field(None, ge=1, description="hard cap on max_tokens")
    max_model_len: int | None = Field(None, ge=16, description="model context; asked from the engine when unset")
    on_truncated: Literal["reject", "keep"] = "reject"
    in_flight: int | None = Field(None, ge=1, description="requests the build keeps handed to the engine "
                                  "[default: 2 x the engine's max_num_seqs (in-process) or 2 x concurrency (HTTP)]")


@dataclass
class Request:
    key: str  # generation key: chunk id + engine identity
    prompt: list[int]
    max_tokens: int
    seed: int


@dataclass
class Completion:
    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    server: str | None = None  # which endpoint answered (HTTP backends)
    error: str | None = None  # a reject reason the backend decided (e.g. the server refused the request)
    error_detail: str | None = None


OnDone = Callable[[Request, Completion], None]
OnAnswer = Callable[[int, "int | None"], None]  # (chunk index in the call, its completion tokens)


class InFlight:
    """Requests handed to the engine and not answered yet, and how full that kept the engine over time.

    Time-weighted over the generation window (first request reaching the backend -> last answer): the mean in flight,
    and the share of the window with at least `full_at` in flight (the engine's max_num_seqs: it could run a full
    batch). Its bounds are also given in epoch seconds (`first_at`, `last_at`), which compare across processes and
    hosts (perf_counter values do not), so the windows of several engines combine (`combined_stats`).
    Thread-safe: feeders add, backend threads finish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch = time.time() - time.perf_counter()  # perf_counter -> epoch seconds
        self.now = 0
        self.full_at: int | None = None
        self.answered = self.output_tokens = 0
        self._first = self._last = self._t = None
        self._area = self._full_s = 0.0

    def add(self, n: int) -> None:
        with self._lock:
            self._advance()
            self.now += n

    def sending(self) -> None:
        """Requests reach the backend: the generation window opens (engine start-up stays out of it)."""
        with self._lock:
            if self._first is None:
                self._advance()
                self._first = self._t

    def finish(self, n: int = 1, output_tokens: int | None = None, answered: bool = False) -> None:
        with self._lock:
            self._advance()
            self.now -= n
            if answered:
                self.answered += n
                self.output_tokens += output_tokens or 0
                self._last = self._t

    def observe(self, now: int) -> None:
        """Gauge use: the count read from the engine itself (e.g. vLLM's unfinished requests) at this moment."""
        with self._lock:
            self._advance()
            if now and self._first is None:
                self._first = self._t
            if now or self.now:
                self._last = self._t
            self.now = now

    def _advance(self) -> None:
        t = time.perf_counter()
        if self._t is not None and self._first is not None:  # only inside the window
            self._area += self.now * (t - self._t)
            if self.full_at and self.now >= self.full_at:
                self._full_s += t - self._t
        self._t = t

    def stats(self) -> dict[str, Any]:
        with self._lock:
            window = (self._last - self._first) if self._first is not None and self._last is not None else 0.0
            if not window:
                return {"requests": self.answered, "output_tokens": self.output_tokens}
            return {"requests": self.answered, "output_tokens": self.output_tokens, "window_s": round(window, 3),
                    "output_tok_s": round(self.output_tokens / window, 1),
                    "mean_in_flight": round(self._area / window, 1), "full_at": self.full_at,
                    "full_fraction": round(self._full_s / window, 3) if self.full_at else None,
                    "first_at": round(self._first + self._epoch, 3), "last_at": round(self._last + self._epoch, 3)}


def combined_stats(engines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The build's `engine_window` from the `stats()` of several engines (Ray actors, Dask workers), each tagged with
    where it ran: the same keys as one engine's, so one reader serves every executor, plus the list under `engines`.

    `requests` and `output_tokens` are summed; the window is the union of the engines' windows in epoch seconds
    (earliest `first_at` -> latest `last_at`) and `output_tok_s` is over it. `output_tok_s_per_engine` is that
    combined rate divided by the number of engines — what each engine (one GPU per single-GPU engine) delivered over
    the build's generation window, the time it was held, idle stretches included (a sum of the engines' own rates
    would leave out the time one waited for the others). `mean_in_flight` is the sum of the engines' time-weighted
    means over the union window, `full_fraction` the engines' full share weighted by their windows (likewise vLLM's
    own `engine_counter`, whose steady `saturated_tok_s` and `kv_cache_tokens` are summed and `max_running` /
    `kv_cache_peak` the largest),
    `start_s` the slowest start (the build waited for it). None without any engine."""
    if not engines:
        return None
    timed = [e for e in engines if e.get("first_at") is not None]
    combined: dict[str, Any] = {"engine": engines[0].get("engine"),
                                "target_in_flight": sum(e.get("target_in_flight") or 0 for e in engines),
                                "requests": sum(e.get("requests", 0) for e in engines),
                                "output_tokens": sum(e.get("output_tokens", 0) for e in engines)}
    starts = [e["start_s"] for e in engines if e.get("start_s") is not None]
    if starts:
        combined["start_s"] = max(starts)
    if timed:
        first, last = min(e["first_at"] for e in timed), max(e["last_at"] for e in timed)
        window = last - first
        if window > 0:
            rate = combined["output_tokens"] / window
            full_at = [e["full_at"] for e in timed if e.get("full_at")]
            combined.update(window_s=round(window, 3), output_tok_s=round(rate, 1),
                            output_tok_s_per_engine=round(rate / len(engines), 1),
                            full_at=sum(full_at) if len(full_at) == len(timed) else None,
                            **_occupancy(timed, window), first_at=first, last_at=last)
            counters = [e["engine_counter"] for e in timed if e.get("engine_counter")]
            if counters:
                combined["engine_counter"] = {**_occupancy(counters, window), "window_s": round(window, 3)}
                if all(c.get("kv_cache_tokens") for c in counters):
                    combined["engine_counter"]["kv_cache_tokens"] = sum(c["kv_cache_tokens"] for c in counters)
                steady = [c["saturated_tok_s"] for c in counters if c.get("saturated_tok_s") is not None]
                if steady:  # vLLM's own steady rates (SchedulerWatch): summed, the rate of all engines busy at once
                    combined["engine_counter"].update(saturated_tok_s=round(sum(steady), 1), saturated_engines=len(steady),
                                                      max_running=max(c.get("max_running", 0) for c in counters),
                                                      kv_cache_peak=max(c.get("kv_cache_peak", 0.0) for c in counters))
    combined["engines"] = engines
    return combined


def _occupancy(stats: list[dict[str, Any]], window: float) -> dict[str, Any]:
    """mean_in_flight (summed over engines, per second of `window`) and full_fraction (weighted by each one's window)."""
    spans = [s.get("window_s") or 0.0 for s in stats]
    mean = sum((s.get("mean_in_flight") or 0.0) * w for s, w in zip(stats, spans)) / window
    full = [(s["full_fraction"], w) for s, w in zip(stats, spans) if s.get("full_fraction") is not None]
    weight = sum(w for _, w in full)
    return {"mean_in_flight": round(mean, 1), "full_fraction": round(sum(f * w for f, w in full) / weight, 3) if weight else None}


def in_flight_target(in_flight: int | None, batch: int) -> int:
    """Requests a feeder keeps handed to an engine that runs `batch` sequences at once: twice that, so the engine's
    own waiting queue always holds a full batch to schedule next (the `in_flight` option overrides it)."""
    return in_flight or 2 * batch


def request_seed(seed: int, chunk_id: str) -> int:
    """Per-chunk sampling seed: the same chunk gets the same sample whatever its batch, worker or retry."""
    return int(stable_hash(seed, chunk_id, size=4), 16) & 0x7FFFFFFF


class LLMEngine:
    name: ClassVar[str]
    placement: ClassVar[Literal["worker", "driver"]]
    Options: ClassVar[type[GenerationOptions]] = GenerationOptions
    wants_workdir: ClassVar[bool] = True  # Pipeline.make_engine passes the build's output dir (request cache)
    reports_answers: ClassVar[bool] = True  # generate/submit take `on_answer` (the progress inside a task)

    def __init__(self, workdir: str | Path | None = None, **options: Any):
        try:
            self.options = self.Options(**options)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
            raise EngineError(f"bad options for engine {self.name!r}: {problems}") from None
        self.template = load_template(self.options.template)  # cheap, and fails before any work
        self.workdir = Path(workdir) if workdir else None
        self.max_model_len = self.options.max_model_len
        self._renderer: PromptRenderer | None = None
        self._cache: RequestCache | None = None
        self._opening = threading.Lock()
        self._in_flight = InFlight()
        self._callers: ThreadPoolExecutor | None = None
        self._start_s: float | None = None  # how long opening took (model load, compile, server start)

    # ---- the seam --------------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        o = self.options
        ident = {
            "model": o.model, "revision": o.revision, "template": self.template.describe(),
            "sampling": {"temperature": o.temperature, "top_p": o.top_p, "seed": o.seed, **({"stop": o.stop} if o.stop else {})},
            "max_tokens_rule": {"ratio": o.max_tokens_ratio, "margin": o.max_tokens_margin, "cap": o.max_tokens},
        }
        if o.model_tokenizer:
            ident["model_tokenizer"] = o.model_tokenizer
        return ident

    def generate(self, chunks: list[dict[str, Any]], on_answer: OnAnswer | None = None) -> list[Generation]:
        """`on_answer(i, completion_tokens)` as soon as chunk i has its answer (backend, request cache or rejected up
        front), from the engine's threads: what the build's progress counts inside a running task."""
        self._in_flight.add(len(chunks))
        return self._generate_counted(chunks, on_answer)

    def submit(self, chunks: list[dict[str, Any]], on_answer: OnAnswer | None = None) -> Future:
        """generate() without waiting: the chunks count as in flight before this returns (a feeder reading
        in_flight() next sees them); the Future holds the Generations."""
        self._in_flight.add(len(chunks))
        with self._opening:
            if self._callers is None:
                self._callers = ThreadPoolExecutor(64, thread_name_prefix=f"{self.name}-call")
        return self._callers.submit(self._generate_counted, chunks, on_answer)

    def in_flight(self) -> int:
        return self._in_flight.now

    def target_in_flight(self) -> int:
        """How many requests a feeder keeps handed in: 2 x the batch the engine runs (read from the engine once it is
        open; before that its max_num_seqs option, or vLLM's smallest default, 256)."""
        batch = self._in_flight.full_at or getattr(self.options, "max_num_seqs", None) or 256
        return in_flight_target(self.options.in_flight, batch)

    def stats(self) -> dict[str, Any]:
        """Start-up seconds and generation-window figures of this engine (see InFlight), for the manifest's run record."""
        start = {"start_s": round(self._start_s, 3)} if self._start_s is not None else {}
        return {"engine": self.name, "target_in_flight": self.target_in_flight(), **start, **self._in_flight.stats()}

    def _generate_counted(self, chunks: list[dict[str, Any]], on_answer: OnAnswer | None = None) -> list[Generation]:
        """Every chunk was counted in flight by the caller; each is finished exactly once here, whatever happens."""
        unfinished, lock = len(chunks), threading.Lock()
        answer = on_answer or (lambda i, tokens: None)
        position: dict[str, int] = {}  # request key -> chunk index

        def finish(n: int, **kw) -> None:  # a backend may still report a request after its batch failed: count once
            nonlocal unfinished
            with lock:
                n = min(n, unfinished)
                unfinished -= n
            if n:
                self._in_flight.finish(n, **kw)

        def on_done(request: Request, completion: Completion) -> None:
            finish(1, output_tokens=completion.completion_tokens, answered=True)
            self._remember(request, completion)
            answer(position[request.key], completion.completion_tokens)

        try:
            self._open()
            identity = self.identity()
            answers: dict[int, Generation] = {}
            requests: dict[int, Request] = {}
            for i, (request, overflow) in enumerate(self._requests(chunks, identity)):
                if overflow:
                    answers[i] = overflow
                    answer(i, None)
                else:
                    requests[i] = request
                    position[request.key] = i
            cached = self._cache.get_many([r.key for r in requests.values()]) if self._cache else {}
            to_send = [r for r in requests.values() if r.key not in cached]
            finish(len(chunks) - len(to_send))  # answered without the backend
            for i, request in requests.items():
                if request.key in cached:
                    answer(i, cached[request.key].get("completion_tokens"))
            if to_send:
                self._in_flight.sending()
            fresh = dict(zip((r.key for r in to_send), self._complete(to_send, on_done))) if to_send else {}
            for i, request in requests.items():
                completion = Completion(**cached[request.key]) if request.key in cached else fresh[request.key]
                answers[i] = self._generation(chunks[i], request, completion)
            return [answers[i] for i in range(len(chunks))]
        finally:
            finish(unfinished)

    def close(self) -> None:
        if self._callers is not None:
            self._callers.shutdown(wait=False, cancel_futures=True)
            self._callers = None
        if self._cache:
            self._cache.close()
            self._cache = None

    # ---- backends implement these ------------------------------------------------------------------------------
    def _start(self) -> None:
        """Acquire heavy resources (load the model, start servers, probe endpoints); may set self.max_model_len."""

    def _complete(self, requests: list[Request], on_done: OnDone) -> list[Completion]:
        """One Completion per request, same order; call on_done(request, completion) the moment each finishes."""
        raise NotImplementedError

    def _extra_provenance(self) -> dict[str, Any]:
        return {}

    def _make_renderer(self) -> PromptRenderer:
        """Prompts are rendered with the model's own tokenizer, loaded here (before `_start`)."""
        o = self.options
        return PromptRenderer(load_model_tokenizer(o.model_tokenizer or o.model, o.revision), self.template)

    # ---- internals ---------------------------------------------------------------------------------------------
    def _open(self) -> None:
        with self._opening:
            if self._renderer is not None:
                return
            started = time.perf_counter()
            renderer = self._make_renderer()
            if self.workdir is not None:
                self._cache = RequestCache(self.workdir / CACHE_DIR)
            self._start()
            self._start_s = time.perf_counter() - started
            self._renderer = renderer  # last: marks the engine open for other threads

    def _requests(self, chunks: list[dict[str, Any]], identity: dict) -> list[tuple[Request | None, Generation | None]]:
        """Per chunk: its request, or the dead-letter answer of a prompt that cannot fit the context."""
        o = self.options
        texts = [chunk["original"] for chunk in chunks]
        made = []
        for chunk, prompt, source in zip(chunks, self._renderer.render_many(texts), self._renderer.count_many(texts)):
            budget = max_new_tokens(source, o.max_tokens_ratio, o.max_tokens_margin, o.max_tokens)
            if self.max_model_len and len(prompt) + budget > self.max_model_len:
                detail = f"prompt {len(prompt)} + max_tokens {budget} tokens > max_model_len {self.max_model_len}"
                made.append((None, Generation(None, prompt_tokens=len(prompt), provenance=self._provenance(None, None, budget),
                                              error="context_overflow", error_detail=detail)))
            else:
                key = stable_hash(chunk["chunk_id"], identity)
                made.append((Request(key, prompt, budget, request_seed(o.seed, chunk["chunk_id"])), None))
        return made

    def _remember(self, request: Request, completion: Completion) -> None:
        if self._cache and completion.error is None:
            self._cache.put(request.key, dict(vars(completion)))  # flat fields: no deep-copying asdict per answer

    def _provenance(self, request: Request | None, completion: Completion | None, max_tokens: int) -> dict[str, Any]:
        o = self.options
        prov = {
            "engine": self.name, "model": o.model, "revision": o.revision,
            "template": self.template.id, "template_version": self.template.version, "template_hash": self.template.hash,
            "sampling": {"temperature": o.temperature, "top_p": o.top_p, "max_tokens": max_tokens},
            "seed": request.seed if request else None,
            **self._extra_provenance(),
        }
        if completion is not None:
            prov.update(finish_reason=completion.finish_reason, prompt_tokens=completion.prompt_tokens,
                        completion_tokens=completion.completion_tokens, latency_s=round(completion.latency_s, 4))
            if completion.server:
                prov["server"] = completion.server
        return prov

    def _generation(self, chunk: dict[str, Any], request: Request, completion: Completion) -> Generation:
        common = dict(finish_reason=completion.finish_reason, prompt_tokens=completion.prompt_tokens,
                      completion_tokens=completion.completion_tokens,
                      provenance=self._provenance(request, completion, request.max_tokens))
        if completion.error:
            return Generation(None, error=completion.error, error_detail=completion.error_detail, **common)
        cleaned = clean(completion.text, completion.finish_reason, chunk["original"], on_truncated=self.options.on_truncated)
        if cleaned.reason:  # dead-lettered: keep the raw answer for the audit trail
            return Generation(completion.text, error=cleaned.reason, error_detail=cleaned.detail, **common)
        return Generation(cleaned.text, **common)
