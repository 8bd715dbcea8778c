"""Describe the machine a benchmark ran on (for docs/benchmarks.md)."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """One line: CPU model, cores, memory, Python, OS."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    py = platform.python_version()
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {py}, {platform.system()}{load}"
