"""`vllm`: vLLM in-process. One engine per GPU (or tensor-parallel group): the local executor keeps it in the driver
process, the Ray executor runs one per actor (`replicas` actors, `num_gpus` each).

All requests of a batch are queued at once and the engine is stepped directly (what `LLM.generate` does inside),
so continuous batching keeps the GPU full and each finished completion reaches the request cache immediately —
a crash mid-batch loses only requests still running.
"""
from __future__ import annotations

import itertools
import time
from typing import Any

from paraphrase_pipe.engines import EngineError
from paraphrase_pipe.engines.llm import Completion, GenerationOptions, LLMEngine, OnDone, Request
from paraphrase_pipe.engines.vllm_args import ActorPoolHints, VLLMEngineArgs


class VLLMOptions(GenerationOptions, VLLMEngineArgs, ActorPoolHints):
    pass


class VLLMEngine(LLMEngine):
    name = "vllm"
    placement = "driver"
    Options = VLLMOptions

    _ids = itertools.count()

    @classmethod
    def gpus_held(cls, options: dict[str, Any], executor: str) -> float:
        o = cls.Options(**options)
        return o.gpus_held(o.tensor_parallel_size, executor)

    def _start(self) -> None:
        o = self.options
        kwargs = o.vllm_kwargs(model=o.model, revision=o.revision, tokenizer=o.model_tokenizer, seed=o.seed,
                               max_model_len=o.max_model_len)
        if o.tensor_parallel_size > 1:
            # Inside a Ray actor vLLM would otherwise try to build its own placement group: the actor already holds
            # the group's GPUs, so plain worker processes on them are what we want.
            kwargs.setdefault("distributed_executor_backend", "mp")
        try:
            from vllm import LLM

            self.llm = LLM(**kwargs)
        except Exception as exc:  # noqa: BLE001 - vLLM start-up fails in many ways (OOM, bad model, bad args)
            raise EngineError(f"vLLM could not start {o.model!r}: {type(exc).__name__}: {exc}") from exc
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    def _complete(self, requests: list[Request], on_done: OnDone) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        o, engine = self.options, self.llm.llm_engine
        by_id: dict[str, tuple[Request, float]] = {}
        for request in requests:
            params = SamplingParams(temperature=o.temperature, top_p=o.top_p, max_tokens=request.max_tokens,
                                    seed=request.seed, stop=o.stop, output_kind=RequestOutputKind.FINAL_ONLY)
            rid = f"pp-{next(self._ids)}"
            engine.add_request(rid, TokensPrompt(prompt_token_ids=request.prompt), params)
            by_id[rid] = (request, time.perf_counter())
        done: dict[str, Completion] = {}
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if not out.finished or out.request_id not in by_id:
                        continue
                    request, started = by_id[out.request_id]
                    first = out.outputs[0]
                    completion = Completion(first.text, first.finish_reason, len(out.prompt_token_ids or request.prompt),
                                            len(first.token_ids), time.perf_counter() - started)
                    done[request.key] = completion
                    on_done(request, completion)
        finally:
            unfinished = [rid for rid, (request, _) in by_id.items() if request.key not in done]
            if unfinished:
                engine.abort_request(unfinished)
        return [done[r.key] for r in requests]

    def close(self) -> None:
        super().close()
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            engine_core = getattr(llm.llm_engine, "engine_core", None)
            if engine_core is not None and hasattr(engine_core, "shutdown"):
                engine_core.shutdown()
