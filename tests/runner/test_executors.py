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


def test_pool_workers_take_the_gpus_in_turn():
    from diffattr.runner.job import worker_gpu

    assert [worker_gpu("cuda", k, 2) for k in range(5)] == [0, 1, 0, 1, 0]
    assert [worker_gpu("cuda", k, 3) for k in range(4)] == [0, 1, 2, 0]
    # one GPU, an explicit index, another device: the device as the user gave it
    assert worker_gpu("cuda", 3, 1) is None
    assert worker_gpu("cuda:1", 3, 4) is None
    assert worker_gpu("cpu", 3, 4) is None


def test_worker_init_ranks_workers_and_sets_their_gpu(monkeypatch):
    import multiprocessing as mp

    import torch

    from diffattr.runner.job import worker_init

    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    threads = torch.get_num_threads()
    try:
        counter = mp.get_context("spawn").Value("i", 0)
        for _ in range(3):
            worker_init(1, counter, "cuda")
        assert chosen == [0, 1, 0] and counter.value == 3
        worker_init(1, mp.get_context("spawn").Value("i", 0), "cpu")  # a CPU run: no GPU call
        assert chosen == [0, 1, 0]
    finally:
        torch.set_num_threads(threads)
