"""`openai`: a client for one or more OpenAI-compatible endpoints (`vllm serve`, or any `/v1/completions` server).

asyncio + httpx on one event loop thread per engine, with at most `concurrency` requests in flight per engine
(shared by concurrent generate() calls), each sent to the endpoint with the fewest in flight among those not
currently failing. Connection errors, timeouts, dropped connections, 429 and 5xx are
retried with exponential backoff and full jitter (honouring Retry-After); other 4xx are never retried: a request
the server finds too long is dead-lettered as `context_overflow`, other refused requests as `request_rejected`,
and 401/403/404 (bad key, wrong model name) stop the build. When every endpoint has failed continuously for
`down_timeout` seconds the build stops with one clear error — committed shards and cached answers are kept, so
re-running the same command resumes.

Prompts go as token ids, rendered client-side through the model's chat template (see prompts.py); when `--model` is
a served name whose tokenizer cannot be loaded here, the server renders them (vLLM's `/tokenize` applies its chat
template), or the build stops at once naming the fix (`-E model_tokenizer=...`). The API key is
read from the environment variable named by `api_key_env` and never logged or recorded; credentials written into
an endpoint URL are used for the requests and shown as *** everywhere else (`redact`).
"""
from __future__ import annotations

import asyncio
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field, field_validator

from paraphrase_pipe.engines import EngineError
from paraphrase_pipe.engines.llm import Completion, GenerationOptions, LLMEngine, OnDone, Request
from paraphrase_pipe.engines.prompts import PromptRenderer, Template
from paraphrase_pipe.redact import redact

CONTEXT_ERROR = re.compile(r"context length|max_model_len|maximum model length|too long", re.IGNORECASE)
FATAL_STATUS = {401: "unauthorized (check the API key in api_key_env)", 403: "forbidden", 404: "not found (check --model / the endpoint URL)"}


class EndpointsDown(EngineError):
    """Every endpoint failed for longer than down_timeout."""


class OpenAIOptions(GenerationOptions):
    endpoints: list[str] = Field(default_factory=list, description="base URLs, e.g. http://10.0.0.5:8000")
    served_model_name: str | None = Field(None, description="`model` sent in requests [default: model]")
    concurrency: int | None = Field(None, ge=1, description="requests in flight at the servers for the whole build (Ray/"
                                    "Dask workers split it) [default: 512; --serve: 2 x max_num_seqs per server, or "
                                    "1024 per server when unset]")
    request_timeout: float = Field(600, gt=0, description="seconds for one request")
    connect_timeout: float = Field(10, gt=0)
    down_timeout: float = Field(300, gt=0, description="stop when every endpoint has failed this long")
    backoff_base: float = Field(0.5, gt=0)
    backoff_max: float = Field(30, gt=0)
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    gpus_per_endpoint: float = Field(0, ge=0, description="for the manifest's GPU-hours")

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        urls = []
        for url in value:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"endpoint {redact(url)!r} is not an http(s) URL")
            urls.append(re.sub(r"/v1/?$", "", url.rstrip("/")))
        return urls


@dataclass
class _Endpoint:
    url: str  # what requests go to, credentials included
    in_flight: int = 0
    failing: int = 0  # consecutive failures

    @property
    def name(self) -> str:
        """The URL as printed and recorded."""
        return redact(self.url)


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class OpenAIEngine(LLMEngine):
    name = "openai"
    placement = "worker"
    Options = OpenAIOptions

    @classmethod
    def gpus_held(cls, options: dict[str, Any], executor: str) -> float:
        o = cls.Options(**options)
        return o.gpus_per_endpoint * len(o.endpoints)

    def __init__(self, workdir=None, **options: Any):
        super().__init__(workdir, **options)
        self._check_endpoints()
        self._failing_since: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None

    def _check_endpoints(self) -> None:
        if not self.options.endpoints:
            raise EngineError("engine 'openai' needs at least one --endpoint URL (or --serve to start vLLM servers)")

    # ---- start-up: the prompt renderer, the I/O thread, and the context length ------------------------------------
    def concurrency(self) -> int:
        return self.options.concurrency or 512

    def _make_renderer(self) -> PromptRenderer:
        try:
            return super()._make_renderer()
        except EngineError as local:
            o = self.options
            if o.model_tokenizer or not o.endpoints:  # a tokenizer the user named, or no server yet (--serve)
                raise
            served = ServedRenderer(o.endpoints, o.served_model_name or o.model, self._headers(), self.template,
                                    o.connect_timeout + o.request_timeout)
            why = served.unavailable()
            if why:
                served.close()
                raise EngineError(f"{' '.join(str(local).split())}; and the server cannot render prompts for it ({why}): name the model's "
                                  "tokenizer with -E model_tokenizer=HUB_ID_OR_LOCAL_DIR") from None
            return served

    def _start(self) -> None:
        self._in_flight.full_at = self.concurrency()  # the engine is "full" when every slot holds a request
        self._endpoints = [_Endpoint(url) for url in self.options.endpoints]
        self._loop = asyncio.new_event_loop()
        self._io = threading.Thread(target=self._loop.run_forever, name="openai-client", daemon=True)
        self._io.start()
        if self.max_model_len is None:
            self.max_model_len = self._on_loop(self._probe_max_model_len())

    def _on_loop(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _probe_max_model_len(self) -> int | None:
        """vLLM lists max_model_len in /v1/models; other servers may not (then the server's 400 decides)."""
        served = self.options.served_model_name or self.options.model
        async with self._client(timeout=self.options.connect_timeout) as client:
            for endpoint in self._endpoints:
                try:
                    response = await client.get(f"{endpoint.url}/v1/models")
                    self._raise_fatal(response, endpoint)
                    models = response.json().get("data", [])
                except (OSError, ValueError, AttributeError, httpx.HTTPError):
                    continue
                for model in models:
                    if model.get("id") == served and model.get("max_model_len"):
                        return int(model["max_model_len"])
                if models and served not in {m.get("id") for m in models}:
                    names = ", ".join(str(m.get("id")) for m in models)
                    raise EngineError(f"{endpoint.name} does not serve model {served!r} (it serves: {names})")
        return None

    # ---- requests ------------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        name = self.options.api_key_env
        if not name:
            return {}
        key = os.environ.get(name)
        if not key:
            raise EngineError(f"api_key_env names {name!r}, but that environment variable is not set")
        return {"Authorization": f"Bearer {key}"}

    def _client(self, timeout: float | None = None) -> httpx.AsyncClient:
        o = self.options
        limits = httpx.Limits(max_connections=self.concurrency(), max_keepalive_connections=self.concurrency())
        return httpx.AsyncClient(timeout=httpx.Timeout(timeout or o.request_timeout, connect=o.connect_timeout),
                                 limits=limits, headers=self._headers())

    def _complete(self, requests: list[Request], on_done: OnDone) -> list[Completion]:
        return self._on_loop(self._complete_all(requests, on_done))

    async def _complete_all(self, requests: list[Request], on_done: OnDone) -> list[Completion]:
        if self._http is None:  # one client and one bound on requests in flight for every batch of this engine
            self._http, self._slots = self._client(), asyncio.Semaphore(self.concurrency())

        async def one(request: Request) -> Completion:
            async with self._slots:
                completion = await self._with_retries(self._http, request)
            on_done(request, completion)
            return completion

        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # a fatal error: do not keep paying for the rest of this batch
                task.cancel()
            raise

    def close(self) -> None:
        if isinstance(self._renderer, ServedRenderer):
            self._renderer.close()
        if self._loop is not None:
            if self._http is not None:
                self._on_loop(self._http.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._io.join(timeout=10)
            self._loop.close()
            self._loop = self._http = None
        super().close()

    def _pick(self) -> _Endpoint:
        return min(self._endpoints, key=lambda e: (e.failing > 0, e.in_flight, random.random()))

    async def _with_retries(self, client: httpx.AsyncClient, request: Request) -> Completion:
        attempt = 0
        while True:
            endpoint = self._pick()
            try:
                completion = await self._send(client, endpoint, request)
            except _Retry as retry:
                endpoint.failing += 1
                self._note_failure(endpoint, str(retry))
                delay = min(self.options.backoff_max, self.options.backoff_base * 2 ** attempt)
                delay = random.uniform(0, delay)  # full jitter: retries of many requests do not arrive together
                if retry.retry_after is not None:
                    delay = max(delay, min(retry.retry_after, self.options.backoff_max))
                attempt += 1
                await asyncio.sleep(delay)
                continue
            endpoint.failing = 0
            self._failing_since = None
            return completion

    async def _send(self, client: httpx.AsyncClient, endpoint: _Endpoint, request: Request) -> Completion:
        o = self.options
        payload = {"model": o.served_model_name or o.model, "prompt": request.prompt, "max_tokens": request.max_tokens,
                   "temperature": o.temperature, "top_p": o.top_p, "seed": request.seed}
        if o.stop:
            payload["stop"] = o.stop
        started = time.perf_counter()
        endpoint.in_flight += 1
        try:
            response = await client.post(f"{endpoint.url}/v1/completions", json=payload)
        except httpx.TransportError as exc:  # refused, reset, dropped mid-answer, timed out
            raise _Retry(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        finally:
            endpoint.in_flight -= 1
        latency = time.perf_counter() - started
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}: {response.text[:200]}", _retry_after(response))
        self._raise_fatal(response, endpoint)
        if status >= 400:
            message = _error_message(response)
            reason = "context_overflow" if CONTEXT_ERROR.search(message) else "request_rejected"
            return Completion(None, None, len(request.prompt), None, latency, endpoint.name, reason, f"HTTP {status}: {message}")
        try:
            body = response.json()
            choice = body["choices"][0]
            usage = body.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retry(f"malformed answer (HTTP {status}): {response.text[:200]}") from None
        return Completion(choice.get("text"), choice.get("finish_reason"), usage.get("prompt_tokens", len(request.prompt)),
                          usage.get("completion_tokens"), latency, endpoint.name)

    @staticmethod
    def _raise_fatal(response: httpx.Response, endpoint: _Endpoint) -> None:
        if response.status_code in FATAL_STATUS:
            raise EngineError(f"{endpoint.name} answered HTTP {response.status_code} {FATAL_STATUS[response.status_code]}: "
                              f"{_error_message(response)}")

    def _note_failure(self, endpoint: _Endpoint, reason: str) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since > self.options.down_timeout and all(e.failing for e in self._endpoints):
            urls = ", ".join(e.name for e in self._endpoints)
            raise EndpointsDown(
                f"every endpoint ({urls}) has failed for {now - self._failing_since:.0f} s "
                f"(down_timeout {self.options.down_timeout:g} s); last error from {endpoint.name}: {redact(reason)}. "
                "Stopped: committed shards and answered requests are kept, re-run the same command to resume."
            )



class ServedRenderer(PromptRenderer):
    """Prompt tokens from the server's own `/tokenize` (vLLM renders the served model's chat template there), for a
    served name that is no hub id or local dir. The same rules as the local renderer: a template that refuses the
    system role gets it merged into the user turn, a model without a chat template the plain concatenation."""

    def __init__(self, endpoints: list[str], model: str, headers: dict[str, str], template: Template, timeout: float):
        self.endpoints, self.model, self.template = endpoints, model, template
        self.chat_template = True
        self._http = httpx.Client(headers=headers, timeout=timeout)

    def _tokenize(self, body: dict) -> list[int]:
        failure = ""
        for url in self.endpoints:  # the first that answers; all serve the same model
            try:
                response = self._http.post(f"{url}/tokenize", json={"model": self.model, "add_special_tokens": False, **body})
            except httpx.HTTPError as exc:
                failure = f"{redact(url)}/tokenize: {type(exc).__name__}: {exc}"
                continue
            if response.status_code != 200:
                raise _Refused(f"{redact(url)}/tokenize answered HTTP {response.status_code}: {_error_message(response)}")
            return response.json()["tokens"]
        raise EngineError(f"no endpoint answered /tokenize ({failure})")

    def render(self, text: str) -> list[int]:
        messages = self.template.messages(text)
        attempts = [messages] + ([[{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}]]
                                 if len(messages) == 2 else [])
        for attempt in attempts:
            try:
                return self._tokenize({"messages": attempt, "add_generation_prompt": True})
            except _Refused as refused:
                if "chat template" in str(refused).lower():  # a base model: no chat template to render
                    self.chat_template = None
                    return self._tokenize({"prompt": "\n\n".join(m["content"] for m in messages) + "\n\n"})
                failure = refused
        raise EngineError(f"the server could not render the prompt: {failure}")

    def count(self, text: str) -> int:
        return len(self._tokenize({"prompt": text}))

    def render_many(self, texts: list[str]) -> list[list[int]]:
        return [self.render(text) for text in texts]

    def count_many(self, texts: list[str]) -> list[int]:
        return [self.count(text) for text in texts]

    def unavailable(self) -> str | None:
        """Why this server cannot render prompts (None: it can)."""
        try:
            self.count("probe")
        except (_Refused, EngineError) as exc:
            return str(exc)
        return None

    def close(self) -> None:
        self._http.close()


class _Refused(EngineError):
    """The server answered /tokenize with an error."""


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        return str(error.get("message", error) if isinstance(error, dict) else error)[:500]
    except ValueError:
        return response.text[:500]
