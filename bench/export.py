"""``python -m bench.export``: ``ssmd export`` throughput (frames/s) and peak memory, against DuckDB
converting the same raw archive to Parquet with no derivation, measured in the same run.

The archive is synthetic (:mod:`bench.archive_gen`: the simulator's model, framed and archived;
it crosses midnight, so two date partitions). Each run is its own process, so peak RSS is the
run's own (an export in several jobs: the sum of every process's peak). ``ssmd export`` is
measured as it runs by default (one job per core, as DuckDB uses every core) and with
``--jobs 1`` — beside DuckDB on one thread, for the comparison per core. The baseline is
``COPY (SELECT * FROM read_json(...)) TO ... (FORMAT parquet)`` — the raw lines, typed by
DuckDB's inference, nothing derived. A run whose output does not hold
exactly the archive's line count fails instead of printing a figure. Shared, noisy machine: the
medians and ranges of ``--repeat`` runs are reported, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ssmd_connector.process import peak_rss_mb

from .archive_gen import write_archive
from .clients import RunInvalid


def _peak_mb() -> float:
    """This process's peak RSS since its ``exec`` (``ru_maxrss`` where the kernel does not say)."""
    return peak_rss_mb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


KINDS = ("duckdb", "export", "duckdb-1", "export-1")
"""The baseline; ``ssmd export`` as it runs by default (one job per core); and both on one core
(DuckDB with ``threads=1``, ``--jobs 1``): how far apart they are per core, and what a second core
gives each."""
PAIRS = (("export", "duckdb"), ("export-1", "duckdb"), ("export-1", "duckdb-1"))
"""The ratios reported (the first is the issue's: both as they run by default)."""


def _child(kind: str, archive: Path, out: Path) -> dict[str, Any]:
    began = time.perf_counter()
    if kind.startswith("duckdb"):
        import duckdb  # noqa: PLC0415

        con = duckdb.connect()
        if kind == "duckdb-1":
            con.execute("SET threads = 1")
        target = out / "raw.parquet"
        con.execute(
            f"COPY (SELECT * FROM read_json('{archive}/*/*.jsonl', format='newline_delimited')) "
            f"TO '{target}' (FORMAT parquet)"
        )
        seconds = time.perf_counter() - began
        row = con.execute(f"SELECT count(*) FROM '{target}'").fetchone()
        frames = int(row[0]) if row else 0
    else:
        from ssmd_connector.archive.reading import archive_files  # noqa: PLC0415
        from ssmd_connector.export.jobs import default_jobs, export  # noqa: PLC0415
        from ssmd_connector.export.run import Options  # noqa: PLC0415

        summary = export(archive, out, Options(), 1 if kind == "export-1" else default_jobs(archive_files(archive)))
        seconds = time.perf_counter() - began
        frames = summary.frames
        jobs_mb = sum(summary.peak_rss_mb)  # (several jobs: each one's peak, added — never hidden)
    peak_mb = _peak_mb() + (0.0 if kind.startswith("duckdb") else jobs_mb)
    return {"kind": kind, "frames": frames, "seconds": seconds, "peak_mb": peak_mb}


def _run(kind: str, archive: Path, expected: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ssmd-export-bench-") as out:
        cmd = [sys.executable, "-m", "bench.export", "--child", kind, "--archive", str(archive), "--out", out]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise RunInvalid(f"{kind} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if result["frames"] != expected:
        raise RunInvalid(f"{kind} saw {result['frames']} frames, the archive holds {expected}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export")
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=KINDS)
    parser.add_argument("--archive", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.archive, args.out)))
        return 0
    with tempfile.TemporaryDirectory(prefix="ssmd-export-archive-") as tmp:
        archive = Path(tmp)
        expected = write_archive(archive, args.frames).frames
        size_mb = sum(p.stat().st_size for p in archive.rglob("*.jsonl")) / 1e6
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for _ in range(args.repeat):  # interleaved: both see the same machine load
            for kind, results in runs.items():
                results.append(_run(kind, archive, expected))
    report: dict[str, Any] = {"frames": expected, "archive_mb": round(size_mb, 1), "repeat": args.repeat}
    print(f"archive: {expected:,} frames, {size_mb:,.0f} MB plain JSON lines; {args.repeat} runs each")
    for kind, results in runs.items():
        rates = [r["frames"] / r["seconds"] for r in results]
        peaks = [r["peak_mb"] for r in results]
        report[kind] = {
            "frames_per_s_median": statistics.median(rates),
            "frames_per_s_range": [min(rates), max(rates)],
            "peak_rss_mb_median": statistics.median(peaks),
            "peak_rss_mb_range": [min(peaks), max(peaks)],
        }
        print(
            f"{kind:>8}: {statistics.median(rates):>10,.0f} frames/s (range {min(rates):,.0f}-{max(rates):,.0f}), "
            f"peak RSS {statistics.median(peaks):,.0f} MB (range {min(peaks):,.0f}-{max(peaks):,.0f})"
        )
    report["ratios"] = {}
    for kind, base in PAIRS:
        ratios = [
            e["frames"] / e["seconds"] / (d["frames"] / d["seconds"])
            for e, d in zip(runs[kind], runs[base], strict=True)
        ]
        ratio = report[kind]["frames_per_s_median"] / report[base]["frames_per_s_median"]
        report["ratios"][f"{kind}/{base}"] = {"median": ratio, "range": [min(ratios), max(ratios)]}
        print(f"{kind} / {base}: {ratio:.2f} (medians; per run {min(ratios):.2f}-{max(ratios):.2f})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
