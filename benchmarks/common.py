"""Helpers shared by the benchmark scripts: devices, AMP, paired timing, peak memory, key=value output."""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch

__all__ = [
    "add_device_args",
    "setup_device",
    "autocast_factory",
    "sync",
    "timed",
    "paired_rounds",
    "emit",
    "reset_peak_memory",
    "peak_memory_mb",
    "run_probe",
]


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--amp``, ``--channels-last``, ``--threads``."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for the forward (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d model and input")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def setup_device(args: argparse.Namespace) -> torch.device:
    """Set the thread count and return the device (fails clearly when CUDA is asked for and absent)."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available on this machine")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def autocast_factory(device: torch.device, amp: bool) -> Callable:
    """A context-manager factory: bf16 autocast on CUDA when ``amp``, otherwise a no-op."""
    if amp and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call of ``fn`` (synchronised on CUDA)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def paired_rounds(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Time every function once per round, ``repeats`` rounds after ``warmup`` rounds.

    The order rotates from round to round, so that slow phases of a shared machine hit every method;
    ratios should be computed round by round (:func:`statistics.median` of the per-round ratios).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(timed(fns[name], device))
    return times


def median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median of the round-by-round ratios ``num[r] / den[r]``."""
    return statistics.median(a / b for a, b in zip(num, den))


def emit(key: str, value: object) -> None:
    """Print one machine-readable ``key=value`` line (floats with 6 significant digits)."""
    if isinstance(value, float):
        value = f"{value:.6g}"
    print(f"{key}={value}", flush=True)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory(device: torch.device) -> float:
    """Start a peak-memory measurement; returns the baseline in MB.

    CUDA: ``torch.cuda`` allocator statistics. CPU: the process's resident set (Linux
    ``/proc/self/status``; the high-water mark ``VmHWM`` is reset through ``/proc/self/clear_refs``).
    Run CPU probes in a fresh process with ``MALLOC_MMAP_THRESHOLD_`` set (see :func:`run_probe`) so
    that freed tensors go back to the OS and the resident set tracks live memory.
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    rss = _status_kb("VmRSS")
    return (rss or 0) / 1024


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory (MB) since :func:`reset_peak_memory` (CPU: ``VmHWM``, else ``ru_maxrss``)."""
    if device.type == "cuda":
        sync(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _status_kb("VmHWM")
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return hwm / 1024


def run_probe(script: str, args: Sequence[str], timeout: float = 1800) -> dict[str, str]:
    """Run ``script`` with ``args`` in a fresh Python process; parse its ``key=value`` lines."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # large blocks are mmapped: RSS ~ live memory
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "0")
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"probe {script} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    out = {}
    for line in proc.stdout.splitlines():
        if "=" in line and not line.startswith(" "):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out
