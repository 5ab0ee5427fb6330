"""An export shared by several processes (``--jobs N``), committed as one.

Why processes: the export is Python work per message (books, rows) and a process runs one core;
markets are independent of each other (a book needs only its own market's messages), so each job
reads the whole archive and keeps every N-th market (:class:`~.run.Job`). What every job repeats
is reading, decoding and passing over every line — about a third of one job's work — so two jobs
take about two thirds of the time of one, when they do not slow each other down: side by side on
a shared machine's two cores they contend for its caches (what the export's small blocks and
batches are for).

The process that starts the export takes the output's lock and commits every job's files at once
when all have succeeded (:meth:`~.writer.Output.adopt`); if one fails — an error it raises, or the
process dying — the others are stopped and nothing is replaced, exactly as for one job.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from ..archive.layout import compression_of
from ..process import peak_rss_mb
from .run import Export, Job, Options, Summary
from .writer import Output, Written


class JobFailed(RuntimeError):
    """A job's process ended without a result (killed, out of memory)."""


JOB_BYTES = 128 << 20
"""Archive (as JSON lines) per job, at least: a job's process costs about 0.4 s to start, and
every job reads every line, so a small archive is fastest in one (measured on 2 cores: 50,000
frames, 18 MB, 232k frames/s in one job, 69k in two)."""
COMPRESSION_RATIO = 8
"""A compressed archive file counts as this many times its size (zstd at the recorder's level
keeps about a tenth)."""


def default_jobs(files: Sequence[Path] = ()) -> int:
    """One job per :data:`JOB_BYTES` of ``files`` (none given: no limit), and at most one per core
    this process may run on, at most 8 (past that, every job's reading of the whole archive costs
    more than the cores add)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # (not Linux)
        cores = os.cpu_count() or 1
    jobs = max(1, min(cores, 8))
    if files:
        size = 0
        for path in files:
            with contextlib.suppress(OSError):  # (gone since it was listed: the export will say)
                plain = compression_of(path) in ("none", None)  # (a file of another name is read as plain)
                size += path.stat().st_size * (1 if plain else COMPRESSION_RATIO)
        jobs = max(1, min(jobs, size // JOB_BYTES))
    return jobs


def export(archive: Path, out: Path, options: Options, jobs: int = 1) -> Summary:
    """Run the export in ``jobs`` processes (1: in this one) and commit it."""
    if jobs <= 1:
        return Export(archive, out, options).run()
    began = time.perf_counter()
    output = Output(out, options.key(archive))
    output.start()
    try:
        results = _run_jobs(archive, out, options, jobs)
        for _, written in results:
            output.adopt(written)
        files = output.commit()
    except BaseException:
        output.discard()
        raise
    summary = _merged([s for s, _ in results])
    summary.files = files
    summary.seconds = time.perf_counter() - began
    return summary


@dataclass
class _Running:
    job: Job
    process: multiprocessing.process.BaseProcess
    conn: Connection


def _run_jobs(archive: Path, out: Path, options: Options, jobs: int) -> list[tuple[Summary, Written]]:
    ctx = multiprocessing.get_context("spawn")  # (a fresh interpreter: pyarrow has started threads here)
    running: list[_Running] = []
    results: dict[int, tuple[Summary, Written]] = {}
    try:
        for index in range(jobs):
            receive, send = ctx.Pipe(duplex=False)
            job = Job(index, jobs)
            process = ctx.Process(
                target=_job, args=(archive, out, options, job, send, os.getpid()), name=f"ssmd-export-{index}"
            )
            process.start()
            send.close()
            running.append(_Running(job, process, receive))
        waiting = {r.conn: r for r in running}
        while waiting:
            for conn in wait(list(waiting)):
                assert isinstance(conn, Connection)
                r = waiting.pop(conn)
                try:
                    ok, value = conn.recv()
                except EOFError:
                    r.process.join()
                    raise JobFailed(
                        f"export job {r.job.index + 1} of {jobs} ended without a result "
                        f"(exit code {r.process.exitcode}; killed, or out of memory?)"
                    ) from None
                except Exception as exc:  # its result or error could not be read back
                    raise JobFailed(
                        f"export job {r.job.index + 1} of {jobs}: its result is unreadable ({exc})"
                    ) from None
                if not ok:
                    raise value
                results[r.job.index] = value
    finally:
        for r in running:
            if r.process.is_alive() and r.job.index not in results:
                r.process.kill()
            r.process.join()
            r.conn.close()
    return [results[i] for i in range(jobs)]


def _job(archive: Path, out: Path, options: Options, job: Job, send: Connection, parent: int) -> None:
    """A job's process: its share of the export, and the result (or the error) sent back."""
    _die_with(parent)
    try:
        summary, written = Export(archive, out, options, job=job).run_job()
        mb = peak_rss_mb()
        summary.peak_rss_mb = [] if mb is None else [mb]  # (not known: left out, never a 0)
        send.send((True, (summary, written)))
    except BaseException as exc:  # (all of it goes back: the starting process decides what it means)
        exc.add_note(f"in export job {job.index + 1} of {job.of}:\n{traceback.format_exc()}")
        send.send((False, exc if _travels(exc) else JobFailed(f"{type(exc).__name__}: {exc}")))
    finally:
        send.close()


def _travels(exc: BaseException) -> bool:
    """Whether an exception comes back whole through the pipe (one whose constructor takes other
    arguments than it keeps would fail to be rebuilt in the starting process)."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 (its own bytes, made on the line above)
    except Exception:
        return False
    return True


def _die_with(parent: int) -> None:
    """Make this job end when the process that started it does (killed with ``kill -9``, out of
    memory): otherwise it would read the whole archive for nobody, into files nobody commits.
    Linux: the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); the parent may
    have died before that was asked, so it is checked once after."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # (not Linux: the parent's own clean-up has to do)
        return
    if os.getppid() != parent:
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _merged(summaries: list[Summary]) -> Summary:
    """Jobs' summaries as one: every job read every line (the line count is one job's)."""
    out = Summary(frames=summaries[0].frames)
    for s in summaries:
        for table, n in s.rows.items():
            out.rows[table] = out.rows.get(table, 0) + n
        out.problems += s.problems
        out.malformed += s.malformed
        out.unknown_deltas += s.unknown_deltas
        out.negative_levels += s.negative_levels
        out.peak_rss_mb += s.peak_rss_mb
    return out
