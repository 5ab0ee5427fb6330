"""The export's job processes, seen from outside (Linux ``/proc``): for tests that kill them."""

from __future__ import annotations

from pathlib import Path


def job_pids(parent: int) -> list[int]:
    """The live child processes of ``parent`` that are export jobs — forked (their command line is
    the export's) or spawned — not multiprocessing's resource tracker."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == parent and stat[0] != "Z" and b"resource_tracker" not in (p / "cmdline").read_bytes():
                pids.append(int(p.name))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(pids)


def state(pid: int) -> str:
    """A process's state letter (``Z`` also for one that is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
