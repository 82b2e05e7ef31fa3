"""How many CPU threads a torch loop should use right now (every CPU-heavy stage uses this)."""

from __future__ import annotations

import math
import time

import torch


def _probe_seconds(n_threads: int) -> float:
    torch.set_num_threads(n_threads)
    x = torch.rand(1, 3, 128, 128)
    w = torch.rand(3, 1, 1, 11)
    y = torch.rand(200_000)
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(5):
            torch.nn.functional.conv2d(x, w, padding=(0, 5), groups=3)
            (y.exp() * y).sum()
        best = min(best, time.perf_counter() - t)
    return best


def _others_busy_cores(window: float = 0.3) -> float:
    """Cores kept busy by other processes right now, from /proc/stat over ``window`` seconds,
    minus this process's own CPU time (its thread pools may still be spinning after the
    previous stage); inf where /proc is not available. The load average would not do: it
    lags a minute and counts this process's own earlier stages."""
    import os

    def busy() -> int:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait

    def own() -> int:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime of all threads (fields 14 and 15)

    try:
        b0, s0 = busy(), own()
        time.sleep(window)
        b1, s1 = busy(), own()
        return max(0.0, ((b1 - b0) - (s1 - s0)) / os.sysconf("SC_CLK_TCK") / window)
    except (OSError, ValueError, AttributeError, IndexError):
        return math.inf


class cpu_threads:
    """Context manager: run the CPU loop with the faster of torch's thread count and one thread.

    On a CPU shared with other busy processes, torch's intra-op threads wait for each other
    at every op (measured here: 6 training steps 0.3 s on 1 thread, 9 s on 2); on an idle
    machine 2 threads are faster (the default 4-view job: 110 s instead of 175 s). When /proc/stat
    shows nothing else running, all threads are used; otherwise a 5-50 ms probe
    of the kind of ops the loop runs decides.
    ``threads`` forces a count (None = decide, only on CPU). The old count is restored on exit.
    """

    def __init__(self, device, threads: int | None = None):
        self.device = torch.device(device)
        self.threads = threads
        self.chosen = None

    def __enter__(self) -> "cpu_threads":
        self.old = torch.get_num_threads()
        if self.device.type != "cpu":
            return self
        if self.threads is not None:
            self.chosen = self.threads
        elif self.old > 1 and _others_busy_cores() <= 0.5:
            self.chosen = self.old  # nothing else is running: every core helps
        elif self.old > 1:
            multi, single = _probe_seconds(self.old), _probe_seconds(1)
            self.chosen = self.old if multi < 0.8 * single else 1
        else:
            self.chosen = 1
        torch.set_num_threads(self.chosen)
        return self

    def __exit__(self, *exc) -> bool:
        torch.set_num_threads(self.old)
        return False
