"""Wall time, memory of this process, and facts about the machine and the code (to say what was measured where)."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import ROOT


def _synchronize() -> None:
    """--device cuda: wait for the kernels, not just their launch (nothing on the CPU)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timeit(fn, runs: int, warmup: int, before=None) -> dict:
    """Median / min / max wall time of ``fn()`` in ms; ``before()`` runs untimed before each call."""
    for _ in range(warmup):
        if before:
            before()
        fn()
    times = []
    for _ in range(runs):
        if before:
            before()
        t = time.perf_counter()
        fn()
        _synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "runs": runs,
            "warmup": warmup}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set of this process: VmHWM (per address space, reset by exec). ``ru_maxrss`` is not used for
    the children because Linux carries it over from the forking parent, so a child would report the parent's peak."""
    status = proc_status()
    if "VmHWM" in status:
        return status["VmHWM"]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def proc_status() -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process in MB (empty off Linux)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile") and val.strip().endswith("kB"):
                out[key] = int(val.split()[0]) / 1024
    except OSError:
        pass
    return out


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sam_lite"], capture_output=True, text=True,
                               cwd=ROOT, timeout=10).stdout.strip()
        return rev + (" (sam_lite/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_flags() -> list[str]:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni") if f in flags]


class OtherLoad:
    """CPU seconds used by processes other than this one and its children, from /proc (to say if cores were busy)."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start_wall, self.start = time.time(), self._sample()
        self.excluded: set[int] = {os.getpid()}

    def _sample(self) -> dict[int, float]:
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                    out[int(d.name)] = (int(f[11]) + int(f[12])) / self.tick  # utime + stime
                except (OSError, IndexError, ValueError):
                    pass
        return out

    def cores_used(self) -> float:
        now, wall = self._sample(), time.time() - self.start_wall
        used = sum(v - self.start.get(pid, 0.0) for pid, v in now.items() if pid not in self.excluded)
        return max(0.0, used / max(wall, 1e-9))
