"""What a process has used, as the kernel counts it — for the export's jobs and the benchmarks,
which report memory as a user's ``top`` or a cgroup limit would see it."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb(pid: int | None = None) -> float | None:
    """Peak resident memory of ``pid`` (this process when ``None``) in MB since its ``exec``
    (Linux: ``VmHWM``; ``ru_maxrss`` would include a parent's memory at the ``fork``). ``None``
    where the kernel does not say (not Linux, or the process is gone)."""
    try:
        status = Path(f"/proc/{pid or 'self'}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None
