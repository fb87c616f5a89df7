"""The engine log tee: a child started inside keeps reaching the log (and the real stderr) after the block ends,
this process's own output stops going to the log, and the excerpt finds the child's error line."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from paraphrase_pipe.engines.engine_log import error_excerpt, tee_output


def test_children_keep_writing_through_the_tee_and_the_parent_gets_its_fds_back(tmp_path, capfd):
    log = tmp_path / "engine" / "vllm.log"
    with tee_output(log):
        os.write(2, b"parent inside\n")
        child = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(0.5); "
                                  "print('child log line', flush=True); time.sleep(0.2); "
                                  "sys.stderr.write('ValueError: No available memory for the cache blocks\\n')"])
    os.write(2, b"parent after\n")
    child.wait()
    time.sleep(0.3)  # the pumps drain the pipes once the child is gone

    text = log.read_text()
    assert "parent inside" in text and "child log line" in text and "No available memory" in text
    assert "parent after" not in text
    out, err = capfd.readouterr()
    assert "child log line" in out and "No available memory" in err and "parent after" in err  # nothing swallowed
    assert error_excerpt(log).startswith("ValueError: No available memory for the cache blocks")


def test_excerpt_reads_from_an_offset_and_names_a_missing_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("ValueError: an earlier start failed\n")
    offset = log.stat().st_size
    with open(log, "a") as f:
        f.write("INFO loading weights\nINFO still loading\n")
    assert "an earlier start failed" in error_excerpt(log)
    this_start = error_excerpt(log, start=offset)
    assert "an earlier start" not in this_start and "still loading" in this_start
    assert error_excerpt(tmp_path / "missing.log") == f"(no log at {tmp_path / 'missing.log'})"
