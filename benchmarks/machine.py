"""What every benchmark records beside its timings: the machine (CPU model, vector flags, torch's CPU capability,
threads, load) and the fp32 matmul rate of the same process (machines of this project differ about 3x in it).
Importing it also puts the repository root on ``sys.path``, so a benchmark script can import ``workflow_scripts``."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "fma")


def time_matmul(n: int, repeats: int) -> list[float]:
    """Seconds of ``repeats`` fp32 ``n x n @ n x n`` products (after one warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - start)
    return times


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Median GFLOP/s of an fp32 ``n``-square matmul with the current torch threads."""
    return 2 * n**3 / statistics.median(time_matmul(n, repeats)) / 1e9


def describe_machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": platform.processor() or "unknown", "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    info["cpu"] = value.strip()
                elif key.strip() == "flags":
                    info["flags"] = [f for f in VECTOR_FLAGS if f in value.split()]
                    break
    except OSError:
        pass
    info.update(
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        torch_threads=torch.get_num_threads(),
        cores=os.cpu_count(),
        load_average=os.getloadavg(),
        torch=torch.__version__,
    )
    return info


def warn_if_busy(max_load: float = 0.5) -> None:
    load = os.getloadavg()[0]
    if load > max_load:
        print(
            f"WARNING: 1-minute load average {load:.2f}: other processes compete for the cores (the kernel's "
            "autogroup scheduling shares the CPU between sessions even under nice); numbers will be noisy"
        )
