"""Helpers shared by the benchmarks: summaries of samples, /proc readings, the machine."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th quantile (0..1) by linear interpolation between the closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples: Sequence[float], unit: str, digits: int = 2) -> dict[str, Any]:
    """`{"n", "median_<unit>", "p95_<unit>", "max_<unit>", "min_<unit>"}` of the samples."""
    return {
        "n": len(samples),
        f"median_{unit}": round(statistics.median(samples), digits),
        f"p95_{unit}": round(percentile(samples, 0.95), digits),
        f"max_{unit}": round(max(samples), digits),
        f"min_{unit}": round(min(samples), digits),
    }


def proc_status(pid: int | str) -> dict[str, str] | None:
    """The fields of /proc/<pid>/status, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def kib_field_to_mib(value: str | None) -> float | None:
    """'123456 kB' -> MiB."""
    if not value:
        return None
    return round(int(value.split()[0]) / 1024, 1)


def memory_mib(pid: int | str) -> dict[str, float | None]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    status = proc_status(pid) or {}
    return {
        "rss_mib": kib_field_to_mib(status.get("VmRSS")),
        "peak_rss_mib": kib_field_to_mib(status.get("VmHWM")),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (its threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """Share of one CPU a process uses over `seconds` of wall time."""
    before, start = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    used = cpu_seconds(pid) - before
    return round(100 * used / (time.perf_counter() - start), 2)


def is_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] not in "ZXx"


def children_of(pid: int) -> list[int]:
    """Direct children of a process (scans /proc: works without CONFIG_PROC_CHILDREN)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    total_mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total_mem = round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        nproc = os.cpu_count() or 0
    return {
        "nproc": nproc,
        "cpu_model": cpu_model(),
        "memory_total_mib": total_mem,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "kernel": platform.release(),
        "load_average_at_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }


def emit(result: dict[str, Any], output: str | None) -> None:
    """Print a benchmark's JSON, and write it to `output` too when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        Path(output).write_text(text + "\n")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
