"""The request cache survives kill -9 of the process that wrote it and is read by any later process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from paraphrase_pipe.engines.request_cache import CACHE_DIR, RequestCache, discard

WRITER = """
import sys, time
from pathlib import Path
from paraphrase_pipe.engines.request_cache import RequestCache
cache = RequestCache(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    cache.put(f"k{i}", {"text": f"answer {i}", "n": i})
print("written", flush=True)
time.sleep(60)  # killed here, never closes the cache
"""


def test_answers_written_before_a_kill_9_are_found_by_the_next_process(tmp_path):
    directory = tmp_path / CACHE_DIR
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(directory), "700"], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "written"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()

    cache = RequestCache(directory)  # another pid: its own file, and it reads the dead writer's
    found = cache.get_many([f"k{i}" for i in range(0, 800, 3)])  # more keys than one sqlite query may bind
    assert found == {f"k{i}": {"text": f"answer {i}", "n": i} for i in range(0, 700, 3)}
    cache.put("mine", {"text": "x"})
    assert cache.get_many(["mine", "k1"]) == {"mine": {"text": "x"}, "k1": {"text": "answer 1", "n": 1}}
    assert len(list(directory.glob("*.sqlite"))) == 2
    cache.close()

    discard(tmp_path)
    assert not (tmp_path / "cache").exists()


def test_lookups_are_cheap_enough_for_big_batches(tmp_path):
    cache = RequestCache(tmp_path)
    started = time.perf_counter()
    for i in range(2000):
        cache.put(f"k{i}", {"text": "t" * 200})
    assert len(cache.get_many([f"k{i}" for i in range(4000)])) == 2000
    assert time.perf_counter() - started < 10
    cache.close()


def test_a_damaged_cache_file_is_skipped_with_a_warning_not_fatal(tmp_path, caplog):
    writer = RequestCache(tmp_path)
    writer.put("k", {"text": "kept"})
    writer.close()
    (tmp_path / "otherhost-1.sqlite").write_bytes(b"not a database, as after a power loss" * 100)
    cache = RequestCache(tmp_path)
    assert cache.get_many(["k", "x"]) == {"k": {"text": "kept"}}  # the good file is still read
    assert "damaged" in caplog.text and (tmp_path / "otherhost-1.damaged").exists()
    cache.close()
