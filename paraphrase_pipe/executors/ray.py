"""`ray`: Ray Data. CPU steps are `map_batches` tasks; a driver-placed engine (vLLM) becomes an actor pool with
`num_gpus` per actor, as Ray Data LLM does; the driver consumes shard metadata as a stream and commits it.

`--ray-address` joins an existing cluster; otherwise a local Ray is started with `--workers` CPUs (default: all).
CPU steps run `--workers` wide (default: every CPU of the cluster). Every actor holding an LLM engine reports its
`stats()` to one small collector actor; their combination is the manifest's `engine_window`.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
from collections.abc import Callable

import pyarrow as pa

from paraphrase_pipe.engines import EngineError
from paraphrase_pipe.engines.llm import combined_stats, in_flight_target
from paraphrase_pipe.engines.vllm_args import ActorPoolHints, VLLMEngineArgs
from paraphrase_pipe.pipeline import Pipeline
from paraphrase_pipe.sources import Task

META_SCHEMA = pa.schema([("meta", pa.string())])
ENGINE_ERROR_LINE = re.compile(r"^(?:paraphrase_pipe\.engines\.)?EngineError: (.+)$", re.MULTILINE)


def _meta_table(metas: list[dict]) -> pa.Table:
    return pa.table({"meta": [json.dumps(m) for m in metas]}, schema=META_SCHEMA)


class _Front:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = [self.pipeline.front(Task.from_dict(json.loads(t))) for t in batch["task"].to_pylist()]
        return pa.concat_tables(tables)


class _EngineWindows:
    """The build's collector of engine statistics (a Ray actor): the latest `stats()` of each engine actor, by actor
    id — a restarted actor keeps its id, so a replaced engine contributes what its replacement has."""

    def __init__(self) -> None:
        self.latest: dict[str, dict] = {}

    def report(self, actor_id: str, stats: dict) -> None:
        self.latest[actor_id] = stats

    def all(self) -> list[dict]:
        return list(self.latest.values())


class _Reporting:
    """An actor holding an engine, which tells the collector its engine's stats when it starts and after every call
    (synchronously, before the call's output leaves: once the driver has every output, the collector has every
    engine's final figures). Ray Data's actors cannot be asked at the end: they are gone once the stream ends."""

    def __init__(self, pipeline: Pipeline, windows):
        import ray

        self.pipeline, self.windows = pipeline, windows
        self.engine = pipeline.make_engine()
        self.actor_id = ray.get_runtime_context().get_actor_id()
        self.where = {"actor": self.actor_id, "host": socket.gethostname(), "pid": os.getpid()}
        self.reporting = threading.Lock()  # concurrent calls report one after another: the latest figures win
        self.report()

    def report(self) -> None:
        if hasattr(self.engine, "stats"):  # LLM engines (`none` has no window)
            import ray

            with self.reporting:
                ray.get(self.windows.report.remote(self.actor_id, {**self.where, **self.engine.stats()}))


class _Whole(_Reporting):
    """A worker-placed engine (none, HTTP clients) is cheap: each CPU actor runs whole tasks with its own engine, so
    shards commit as tasks finish (no stage waits for the previous one) and a killed actor re-runs only its task."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        tasks = [Task.from_dict(json.loads(t)) for t in batch["task"].to_pylist()]
        metas = [meta for task in tasks for meta in self.pipeline.run_task(task, self.engine)]
        self.report()
        return _meta_table(metas)


class _Engine(_Reporting):
    """One engine per actor (GPU engines)."""

    def __call__(self, rows: pa.Table) -> pa.Table:
        answered = self.pipeline.middle(rows, self.engine)
        self.report()
        return answered


class _Back:
    def __init__(self, pipeline: Pipeline, generation: dict):
        self.pipeline, self.generation = pipeline, generation

    def __call__(self, rows: pa.Table) -> pa.Table:
        return _meta_table(self.pipeline.back(rows, self.generation))


def _engine_cpus(pipeline: Pipeline) -> int:
    """CPUs the engine actors reserve. The CPU steps must leave them free, or their actors can hold every CPU
    while an engine actor waits for one, and the pipeline deadlocks."""
    if pipeline.engine_site("ray") != "actors":
        return 0
    hints = _pool_hints(pipeline)
    return math.ceil(hints.replicas * hints.num_cpus)


def _calls_per_actor(pipeline: Pipeline) -> int:
    """Concurrent batches per engine actor: its in-flight target in batches of `batch_size`, plus one being
    refilled. Fixed before the actor starts, so an unset max_num_seqs counts as vLLM's default on a large GPU, 1024."""
    options = pipeline.config.engine_options
    target = in_flight_target(options.get("in_flight"), VLLMEngineArgs(**options).max_num_seqs or 1024)
    return math.ceil(target / _pool_hints(pipeline).batch_size) + 1


def _pool_hints(pipeline: Pipeline) -> ActorPoolHints:
    """The engine actor pool's options, with the defaults of the one place that defines them."""
    return ActorPoolHints(**pipeline.config.engine_options)


def _init_ray(pipeline: Pipeline) -> None:
    import ray

    if ray.is_initialized():
        return
    config = pipeline.config
    if config.ray_address:
        ray.init(address=config.ray_address, log_to_driver=False)
    else:
        engine_cpus = _engine_cpus(pipeline)
        cpus = (config.workers or os.cpu_count() or 1) + engine_cpus if engine_cpus else config.workers
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False


def run(pipeline: Pipeline, tasks: list[Task], on_shard: Callable[[dict], None]) -> dict | None:
    """Returns the engines' combined generation window (`combined_stats`), for the manifest."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    _init_ray(pipeline)
    cpus = pipeline.config.workers or max(int(ray.cluster_resources().get("CPU", 1)) - _engine_cpus(pipeline), 1)
    # on the driver's node: the collector is lost only with the build itself
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    windows = ray.remote(num_cpus=0, scheduling_strategy=here)(_EngineWindows).remote()
    ds = ray.data.from_items([{"task": json.dumps(t.to_dict())} for t in tasks], override_num_blocks=max(len(tasks), 1))
    if pipeline.engine_site("ray") == "workers":
        ds = ds.map_batches(_Whole, fn_constructor_args=(pipeline.sharing_clients(cpus), windows), batch_size=1,
                            batch_format="pyarrow", concurrency=cpus)
    else:
        ds = ds.map_batches(_Front, fn_constructor_args=(pipeline,), batch_size=1, batch_format="pyarrow", concurrency=cpus)
        hints = _pool_hints(pipeline)
        ds = ds.map_batches(
            _Engine,
            fn_constructor_args=(pipeline, windows),
            batch_format="pyarrow",
            batch_size=hints.batch_size,
            # enough batches per engine actor at once (engines are thread-safe) to keep its in-flight target
            # handed in: the next batches fill the engine while others drain
            compute=ray.data.ActorPoolStrategy(size=hints.replicas, max_concurrent_calls_per_actor=_calls_per_actor(pipeline),
                                               enable_true_multi_threading=True),
            num_gpus=float(hints.actor_gpus(VLLMEngineArgs(**pipeline.config.engine_options).tensor_parallel_size)),
            num_cpus=hints.num_cpus,
            # a dead engine actor (OOM-killed, node lost) comes back at most this often, then the build fails;
            # an error the engine raises (vLLM out of memory at start) is not retried at all: it fails fast
            max_restarts=hints.max_restarts,
        )
        generation = pipeline.make_engine().identity()  # engine constructors are cheap: models load on first use
        ds = ds.map_batches(_Back, fn_constructor_args=(pipeline, generation), batch_format="pyarrow", batch_size=None, concurrency=cpus)
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for meta in batch["meta"].to_pylist():
                on_shard(json.loads(meta))
    except Exception as exc:
        raise _engine_failure(exc, pipeline) or exc
    return combined_stats(ray.get(windows.all.remote()))  # the collector goes with its last handle


def _engine_failure(exc: BaseException, pipeline: Pipeline) -> EngineError | None:
    """The engine's own error out of Ray's wrappers (RayTaskError, UserCodeException), or a dead engine actor that
    used up its restarts, as the one-line EngineError the CLI prints; None for anything else."""
    from ray.exceptions import ActorDiedError

    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    for item in chain:
        if isinstance(item, EngineError):
            return EngineError(str(item).strip().splitlines()[-1])
    # a cause Ray could not hand back as an object still shows in the remote traceback it carries
    found = [m.group(1) for item in chain for m in ENGINE_ERROR_LINE.finditer(str(item))]
    if found:
        return EngineError(found[-1])
    for item in chain:
        if isinstance(item, ActorDiedError) and "_Engine" in str(item):
            return EngineError(f"the engine actor died and was restarted {_pool_hints(pipeline).max_restarts} "
                               f"times (engine option max_restarts): {str(item).strip().splitlines()[0]}")
    return None
