"""Dask and local builds of the same input give the same rows (by id and content), however the work is split.
(Ray against local: test_ray_faults.py, under killed workers, and tests/build/test_executors.py undisturbed.)"""
from __future__ import annotations

import pytest

from .conftest import build, row_set


def test_dask_local_cluster_matches_local(tmp_path, local_reference):
    pytest.importorskip("dask.distributed")
    counts = build(tmp_path / "dask", executor="dask", workers=2, docs_per_task=10)  # 6 tasks over 2 workers
    assert row_set(tmp_path / "dask") == local_reference
    assert counts["accepted"] == len(local_reference) > 60
