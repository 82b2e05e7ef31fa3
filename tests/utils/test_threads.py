"""The CPU thread-count rule of the training/render loops (vision3d.utils.threads.cpu_threads)."""

import torch

from vision3d.utils import threads


def test_all_threads_when_nothing_else_runs_probe_otherwise(monkeypatch):
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(threads, "_others_busy_cores", lambda: 0.0)
        monkeypatch.setattr(threads, "_probe_seconds", lambda n: 1 / 0)  # must not be needed
        with threads.cpu_threads("cpu") as th:
            assert th.chosen == 2 and torch.get_num_threads() == 2
        # a busy machine: the probe decides; here it finds one thread much faster
        monkeypatch.setattr(threads, "_others_busy_cores", lambda: 1.5)
        monkeypatch.setattr(threads, "_probe_seconds", lambda n: 10.0 if n > 1 else 0.3)
        with threads.cpu_threads("cpu") as th:
            assert th.chosen == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # restored on exit
        with threads.cpu_threads("cpu", threads=1) as th:  # an explicit count always wins
            assert th.chosen == 1
    finally:
        torch.set_num_threads(old)


def test_busy_cores_reads_proc_stat():
    busy = threads._others_busy_cores(0.05)
    assert busy >= 0.0


def test_busy_cores_does_not_count_this_process():
    import threading
    import time

    baseline = threads._others_busy_cores(0.3)  # whatever else runs on this machine
    stop = time.monotonic() + 1.0

    def spin():  # a thread of ours keeping a core busy, as a thread pool spinning after a stage does
        while time.monotonic() < stop:
            pass

    t = threading.Thread(target=spin)
    t.start()
    try:
        others = threads._others_busy_cores(0.3)
    finally:
        t.join()
    assert others < baseline + 0.5  # counted, our own spinning thread would add ~1 core
