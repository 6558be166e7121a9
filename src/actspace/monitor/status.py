"""Where a study stands: every job of the current configuration as done, running, failed,
outdated or pending, with progress and ETA for the long steps. ``scripts/status.py`` prints it.

Three sources, read without running or locking anything: Snakemake's summary and dry run
(:mod:`actspace.monitor.dry_run`), and the working directory: Snakemake's incomplete markers and
locks and the progress files the long steps write (:mod:`actspace.monitor.workdir`).
:mod:`actspace.monitor.jobs` decides each job's state from them; :mod:`actspace.monitor.table`
prints the table.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from actspace.monitor.dry_run import (
    PlannedJob,
    SummaryRow,
    parse_dry_run,
    parse_summary,
    query_snakemake,
)
from actspace.monitor.jobs import classify
from actspace.monitor.table import counts_line, format_table
from actspace.monitor.workdir import run_in_progress


def study_status(
    workdir: str | os.PathLike[str] = ".",
    extra: Sequence[str] = (),
    *,
    now: float | None = None,
) -> str:
    """The whole report: a header line, the table and notes."""
    root = Path(workdir)
    summary_text, dry_text = query_snakemake(root, extra)
    now = time.time() if now is None else now
    return render(parse_summary(summary_text), parse_dry_run(dry_text), dry_text, root, now)


def render(
    summary: Sequence[SummaryRow],
    planned: Sequence[PlannedJob],
    dry_text: str,
    workdir: Path,
    now: float,
) -> str:
    """Header, table and notes for the parsed Snakemake output and the files in ``workdir``."""
    locked, stale = run_in_progress(workdir)
    jobs = classify(summary, planned, workdir=workdir, locked=locked, now=now)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    if stale:
        state = "; no Snakemake run in progress, but a lock is left (snakemake --unlock)"
    else:
        state = "" if locked else "; no Snakemake run in progress"
    lines = [
        f"study in {workdir.resolve()} at {stamp}: {counts_line(jobs)}{state}",
        "",
        format_table(jobs, now=now) if jobs else "(no jobs)",
    ]
    if "<TBD>" in dry_text:
        lines += ["", "jobs after the gate checkpoint are listed once it has run"]
    return "\n".join(lines)


def watch(
    render_once: Callable[[], str],
    every_s: float,
    *,
    iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    out: TextIO | None = None,
    clear: bool | None = None,
) -> int:
    """Print ``render_once()`` every ``every_s`` seconds, ``iterations`` times (None: until
    Ctrl-C); clears the terminal between refreshes when ``out`` is one. Returns 0."""
    out = sys.stdout if out is None else out
    clear = out.isatty() if clear is None else clear
    done = 0
    try:
        while iterations is None or done < iterations:
            text = render_once()
            if clear:
                out.write("\033[2J\033[H")
            out.write(text.rstrip("\n") + "\n")
            if clear:
                out.write(f"\n(refreshing every {every_s:g} s; Ctrl-C to stop)\n")
            out.flush()
            done += 1
            if iterations is None or done < iterations:
                sleep(every_s)
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
    return 0
