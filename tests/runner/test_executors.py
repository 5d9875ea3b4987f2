"""Thread budget of local process workers."""

from __future__ import annotations

import os

from diffattr.runner.executors import threads_per_worker


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def test_workers_split_the_cpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_per_worker(1) == _cpus()
    assert threads_per_worker(_cpus() * 4) == 1  # never zero
    assert threads_per_worker(0) == _cpus()


def test_omp_num_threads_caps_each_worker(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_per_worker(1) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(10 * _cpus()))
    assert threads_per_worker(1) == _cpus()  # a cap, not a demand
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    assert threads_per_worker(1) == _cpus()
