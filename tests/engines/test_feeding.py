"""The feeder's pieces that need no engine: request accounting, cutting calls and putting tasks back together, the clients' shared budget.
(The feeder itself runs against the real CPU vLLM engine in test_vllm_inprocess.py.)"""
from __future__ import annotations

import time
from collections import deque

import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.engines.llm import InFlight, combined_stats
from paraphrase_pipe.executors.local import _Reassembly, _take
from paraphrase_pipe.pipeline import Pipeline
from paraphrase_pipe.schema import RANGE_COLUMN, RANGE_ROWS_COLUMN


def test_in_flight_window_starts_when_requests_reach_the_backend():
    count = InFlight()
    count.full_at = 2
    count.add(4)
    time.sleep(0.05)  # engine start-up: counted in flight, outside the window
    count.sending()
    time.sleep(0.1)
    count.finish(2, output_tokens=10, answered=True)
    time.sleep(0.1)
    count.finish(2, output_tokens=6, answered=True)
    stats = count.stats()
    assert count.now == 0 and stats["requests"] == 4 and stats["output_tokens"] == 16
    assert 0.19 < stats["window_s"] < 0.3
    assert 2.8 < stats["mean_in_flight"] < 3.2  # 4 for half the window, 2 for the other half
    assert stats["full_fraction"] > 0.95  # never below full_at=2 inside the window
    assert abs(stats["last_at"] - time.time()) < 0.5  # its bounds in epoch seconds too, comparable across processes
    assert abs(stats["last_at"] - stats["first_at"] - stats["window_s"]) < 2e-3


def test_engines_in_other_processes_combine_over_the_union_of_their_windows():
    """Two engines, the second opening its window while the first is half done (as Ray actors started apart do):
    summed answers over the union window, in flight summed per second of it; per engine = the rate / engines."""
    first, second = InFlight(), InFlight()
    first.add(2)
    first.sending()
    time.sleep(0.1)
    second.add(2)
    second.sending()
    time.sleep(0.1)
    first.finish(2, output_tokens=30, answered=True)
    time.sleep(0.1)
    second.finish(2, output_tokens=10, answered=True)
    stats = [{"actor": "a", **first.stats()}, {"actor": "b", **second.stats(), "start_s": 2.5}]
    combined = combined_stats(stats)
    assert combined["engines"] == stats and combined["requests"] == 4 and combined["output_tokens"] == 40
    assert combined["first_at"] == stats[0]["first_at"] and combined["last_at"] == stats[1]["last_at"]
    assert combined["window_s"] >= 0.3 and combined["window_s"] > max(s["window_s"] for s in stats) + 0.05
    assert combined["output_tok_s"] == round(40 / combined["window_s"], 1)
    assert abs(combined["output_tok_s_per_engine"] - combined["output_tok_s"] / 2) <= 0.1
    # 2 in flight, then 4 while both are open, then 2: ~2.7 (2 x the engines' windows / the union), whatever the timing
    area = sum(s["mean_in_flight"] * s["window_s"] for s in stats)
    assert 2 < combined["mean_in_flight"] < 4 and abs(combined["mean_in_flight"] - area / combined["window_s"]) <= 0.1
    assert combined["start_s"] == 2.5
    assert combined_stats([]) is None
    # vLLM's own figures (SchedulerWatch) from each engine: steady rates add up, the largest batch and KV peak show
    watched = [{**s, "engine_counter": {"mean_in_flight": 2.0, "full_fraction": 1.0, "window_s": s["window_s"],
                                        "saturated_tok_s": rate, "max_running": running, "kv_cache_peak": kv,
                                        "kv_cache_tokens": 4096}}
               for s, rate, running, kv in zip(stats, (100.0, 50.0), (8, 6), (0.4, 0.7))]
    counter = combined_stats(watched)["engine_counter"]
    assert (counter["saturated_tok_s"], counter["saturated_engines"], counter["max_running"], counter["kv_cache_peak"]) == (150.0, 2, 8, 0.7)
    assert counter["kv_cache_tokens"] == 8192  # the engines' caches together


def test_calls_cut_tasks_at_any_row_and_answers_come_back_as_whole_tasks_in_order():
    sizes = ((0, 3), (3, 8), (8, 9))
    tasks = [pa.table({"i": list(range(a, b)), RANGE_COLUMN: [f"r{a}"] * (b - a), RANGE_ROWS_COLUMN: [b - a] * (b - a)})
             for a, b in sizes]
    ready, again = deque(tasks), _Reassembly()
    calls = []
    for rows in (4, 2, 100):  # the engine's room: cuts inside the second task, twice
        batch = _take(ready, rows)
        calls.append((batch, again.send(batch)))
    assert [b.num_rows for b, _ in calls] == [4, 2, 3] and not ready
    assert calls[1][1] == {"r3": 1} and calls[2][1] == {"r3": 3, "r8": 0}
    whole = []
    for batch, places in reversed(calls):  # calls finish out of order
        whole += again.add(Pipeline.per_task(batch), places)
    assert sorted((t.to_pylist() for t in whole), key=lambda t: t[0]["i"]) == [t.to_pylist() for t in tasks]
    assert not again.pieces and not again.sent and not again.answered


def test_http_clients_in_workers_split_the_build_budget():
    config = BuildConfig(engine="openai", engine_options={"model": "m", "endpoints": ["http://127.0.0.1:9"], "concurrency": 100})
    shared = Pipeline(config).sharing_clients(8)
    assert shared.config.engine_options["concurrency"] == 13 and config.engine_options["concurrency"] == 100
    default = BuildConfig(engine="openai", engine_options={"model": "m", "endpoints": ["http://127.0.0.1:9"]})
    assert Pipeline(default).sharing_clients(4).config.engine_options["concurrency"] == 128  # 512 / 4
    assert Pipeline(BuildConfig()).sharing_clients(4).config == BuildConfig()  # `none` has no budget


def test_stages_are_row_wise_so_a_task_cut_anywhere_joins_back_to_the_same_table(tmp_path):
    """The feeder cuts a task's rows across engine calls: every stage keeps the rows' order and columns, so the
    pieces' results joined are the task's own result — with rows rejected before a stage (a set excluded, and
    answers the engine refused, which sit between live rows when compose runs)."""
    from paraphrase_pipe.sources import discover, plan_tasks
    from paraphrase_pipe.stages.compose import compose_rows
    from paraphrase_pipe.stages.paraphrase import paraphrase_rows
    from paraphrase_pipe.tokenizer import load_tokenizer

    config = BuildConfig(chunk=128, tokenizer="builtin:gpt2", limit=12, sets=["-RedPajamaWikipedia"], output=str(tmp_path))
    pipeline = Pipeline(config)
    rows = pipeline.front(plan_tasks(discover(config.input), config)[0])
    assert 0 < pc.sum(pc.is_valid(rows["reject_reason"])).as_py() < len(rows)  # both kinds, interleaved
    tokenizer = load_tokenizer(config.tokenizer)
    stages = {"paraphrase": lambda t: paraphrase_rows(t, _Echo()),
              "compose": lambda t: compose_rows(paraphrase_rows(t, _Echo()), {}, layout="orig+para", tokenizer=tokenizer)}
    for name, stage in stages.items():
        whole = stage(rows)
        cuts = (0, 5, 6, 23, len(rows))
        joined = pa.concat_tables([stage(rows.slice(a, b - a)) for a, b in zip(cuts, cuts[1:])], promote_options="default")
        assert joined.equals(whole), name
        assert whole["chunk_id"].to_pylist() == rows["chunk_id"].to_pylist(), name  # the task's own order


class _Echo:
    """Unit-test engine (answers at once: the source as its paraphrase, or a refusal for every third chunk by id):
    the stages' row bookkeeping, not generation."""
    name = "echo"
    reports_answers = False

    def generate(self, chunks):
        from paraphrase_pipe.engines.base import Generation

        return [Generation(None, error="context_overflow", provenance={}) if int(c["chunk_id"][:8], 16) % 3 == 0 else
                Generation(c["original"], finish_reason="stop", prompt_tokens=1, completion_tokens=1, provenance={}) for c in chunks]
