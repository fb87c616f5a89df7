"""The feeder's pieces that need no engine: request accounting, batch cutting, the clients' shared budget.
(The feeder itself runs against the real CPU vLLM engine in test_vllm_inprocess.py.)"""
from __future__ import annotations

import time
from collections import deque

import pyarrow as pa

from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.engines.llm import InFlight
from paraphrase_pipe.executors.local import _take
from paraphrase_pipe.pipeline import Pipeline


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


def test_take_cuts_across_tables_without_losing_rows():
    ready = deque(pa.table({"i": list(range(a, b))}) for a, b in ((0, 3), (3, 8), (8, 9)))
    first = _take(ready, 4)
    second = _take(ready, 100)
    assert first["i"].to_pylist() == [0, 1, 2, 3]
    assert second["i"].to_pylist() == [4, 5, 6, 7, 8] and not ready


def test_http_clients_in_workers_split_the_build_budget():
    config = BuildConfig(engine="openai", engine_options={"model": "m", "endpoints": ["http://127.0.0.1:9"], "concurrency": 100})
    shared = Pipeline(config).sharing_clients(8)
    assert shared.config.engine_options["concurrency"] == 13 and config.engine_options["concurrency"] == 100
    default = BuildConfig(engine="openai", engine_options={"model": "m", "endpoints": ["http://127.0.0.1:9"]})
    assert Pipeline(default).sharing_clients(4).config.engine_options["concurrency"] == 128  # 512 / 4
    assert Pipeline(BuildConfig()).sharing_clients(4).config == BuildConfig()  # `none` has no budget
