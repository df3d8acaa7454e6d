"""Shared timing loop for the widget-latency benchmarks: median of uncached updates, with the machine's load.

from widget_timing import time_updates   # benchmarks/ is on sys.path when a script in it runs
result = time_updates(lambda setting: update(*setting), settings, threads=2)
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


def time_updates(update: Callable[[Any], Any], settings: Sequence[Any], **extra: Any) -> dict[str, Any]:
    """Call ``update(setting)`` once per setting (after one untimed warm-up call) and summarise the seconds.

    The 1-minute load average before and after is part of the result, because these machines are shared;
    ``extra`` (threads, samples, steps, …) is copied into the result.
    """
    update(settings[0])  # warm-up: allocator, thread pool, lazy imports
    load_start = os.getloadavg()[0]
    seconds = []
    for setting in settings:
        start = time.perf_counter()
        update(setting)
        seconds.append(time.perf_counter() - start)
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "updates": len(settings),
        **extra,
        "loadavg_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
