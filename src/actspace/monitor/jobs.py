"""Where each job of a study stands: done, running, failed, outdated or pending.

A job is one entry of the dry run (:mod:`actspace.monitor.dry_run`) or a group of the summary's
outputs made by one rule with one log; its state comes from the summary, the dry run and the
working directory (:mod:`actspace.monitor.workdir`).

How a job's state is decided, first match wins:

1. *running*: an output carries an incomplete marker while a Snakemake run holds the directory
   (its locks exist and, where ``/proc`` tells, a Snakemake process works there), or its progress
   file says running and its process is alive. Without a run, a job with incomplete outputs was
   interrupted: *failed*.
2. *done*: every output exists and nothing would update it.
3. *outdated*: the outputs exist but would be made again (the summary's status says why).
4. *failed*: the progress file says failed, or says running but its process is gone, or the job
   ran (Snakemake recorded its log) and its outputs are missing (Snakemake deletes the outputs of
   a failed job).
5. *done*, noted "outputs removed": outputs are missing but nothing that will run needs them
   (Snakemake does not re-make such an intermediate).
6. *pending*: not run yet.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actspace.monitor.dry_run import PlannedJob, SummaryRow
from actspace.monitor.workdir import (
    LOG_DIR,
    incomplete_outputs,
    process_alive,
    progress_path_for,
    read_progress,
    run_in_progress,
)

#: A running job whose progress file has not changed for this long is flagged as stalled.
STALE_AFTER_S = 600.0


@dataclasses.dataclass
class JobStatus:
    """A job of the study and where it stands."""

    rule: str
    outputs: list[str]
    logs: list[str]
    state: str = "pending"
    step: str = ""
    note: str = ""
    progress: dict[str, Any] | None = None
    finished: float | None = None  # newest output's modification time (done jobs)
    started: float | None = None  # incomplete marker's time (running jobs)
    reason: str = ""  # why the dry run would run it
    planned: bool = False  # the dry run lists it
    order: int = 0

    @property
    def log(self) -> str | None:
        return self.logs[0] if self.logs else None


def step_name(rule: str, logs: Sequence[str], wildcards: dict[str, str] | None = None) -> str:
    """``extract tiny_gpt2/facts``: the rule and what its log path adds to it (the workflow names
    logs ``results/logs/{rule}/{wildcards}.log``), else the rule and its wildcard values."""
    for log in logs:
        relative = Path(log.removeprefix(LOG_DIR.rstrip("/") + "/"))
        if relative.parts and relative.parts[0] == rule and len(relative.parts) > 1:
            return f"{rule} {relative.with_suffix('').relative_to(rule).as_posix()}"
        if relative.with_suffix("").as_posix() == rule:
            return rule
    if wildcards:
        return f"{rule} {'/'.join(wildcards.values())}"
    return rule


def _group_jobs(summary: Sequence[SummaryRow], planned: Sequence[PlannedJob]) -> list[JobStatus]:
    """One JobStatus per job: the dry run's jobs, then the summary's other outputs grouped by
    rule and recorded log (a job's outputs share the log it was run with)."""
    jobs: list[JobStatus] = []
    owner: dict[str, JobStatus] = {}
    for plan in planned:
        job = JobStatus(
            rule=plan.rule,
            outputs=list(plan.outputs),
            logs=list(plan.logs),
            step=step_name(plan.rule, plan.logs, plan.wildcards),
            reason=plan.reason,
            planned=True,
        )
        jobs.append(job)
        for output in plan.outputs:
            owner[output] = job
    grouped: dict[tuple[str, tuple[str, ...]], JobStatus] = {}
    for row in summary:
        if row.output in owner:
            continue
        key = (row.rule, row.logs) if row.logs else (row.rule, (row.output,))
        job = grouped.get(key)
        if job is None:
            job = grouped[key] = JobStatus(
                rule=row.rule, outputs=[], logs=list(row.logs), step=step_name(row.rule, row.logs)
            )
            jobs.append(job)
        job.outputs.append(row.output)
        owner[row.output] = job
    for job in jobs:
        if not job.logs:  # a job the dry run lists without a log may have one recorded
            recorded = [r.logs for r in summary if r.output in job.outputs and r.logs]
            job.logs = list(recorded[0]) if recorded else []
    return jobs


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def classify(
    summary: Sequence[SummaryRow],
    planned: Sequence[PlannedJob],
    *,
    workdir: str | os.PathLike[str] = ".",
    incomplete: dict[str, float] | None = None,
    locked: bool | None = None,
    now: float | None = None,
    stale_after_s: float = STALE_AFTER_S,
) -> list[JobStatus]:
    """Every job with its state, in display order: done (oldest first), running, failed,
    then outdated and pending in the dry run's order.

    ``incomplete`` and ``locked`` (a Snakemake run holds the directory) default to what
    :func:`incomplete_outputs` and :func:`run_in_progress` find in ``workdir``; progress files are
    read from ``workdir``.
    """
    root = Path(workdir)
    incomplete = incomplete_outputs(root) if incomplete is None else incomplete
    locked = run_in_progress(root)[0] if locked is None else locked
    now = time.time() if now is None else now
    rows = {row.output: row for row in summary}
    jobs = _group_jobs(summary, planned)
    for index, job in enumerate(jobs):
        job.order = index
        job.progress = read_progress(root / progress_path_for(job.log)) if job.log else None
        _decide(job, rows, incomplete, locked, now, stale_after_s, root)
    rank = {"done": 0, "running": 1, "failed": 2, "outdated": 3, "pending": 3}
    return sorted(
        jobs,
        key=lambda j: (rank[j.state], (j.finished or 0.0) if j.state == "done" else 0.0, j.order),
    )


def _decide(
    job: JobStatus,
    rows: dict[str, SummaryRow],
    incomplete: dict[str, float],
    locked: bool,
    now: float,
    stale_after_s: float,
    root: Path,
) -> None:
    mine = [rows[o] for o in job.outputs if o in rows]
    record = job.progress or {}
    recorded = record.get("state")
    alive = process_alive(record) if recorded == "running" else None
    markers = [incomplete[o] for o in job.outputs if o in incomplete]
    job.started = min(markers) if markers else None
    if (recorded == "running" and alive) or (
        markers and locked and recorded != "failed" and alive is not False
    ):
        job.state = "running"
        updated = record.get("updated")
        fresh = not isinstance(updated, int | float) or now - updated <= stale_after_s
        if recorded == "running" and not fresh:
            job.note = f"no progress for {format_duration(now - updated)}; stalled?"
        return
    if markers:
        job.state = "failed"
        job.note = (
            str(record.get("error") or "failed")
            if recorded == "failed"
            else "interrupted (rerun with --rerun-incomplete)"
        )
        return
    # outputs the summary does not list are looked up directly (it lists all; belt and braces)
    exists = [row.exists for row in mine] or [(root / o).exists() for o in job.outputs]
    if all(exists) and not any(row.update_pending for row in mine):
        job.state = "done"
        job.finished = max((t for o in job.outputs if (t := _mtime(root / o))), default=None)
        return
    if all(exists):
        job.state = "outdated"
        reasons = sorted({row.status for row in mine if row.status not in ("ok", "missing")})
        why = job.reason.split(";")[0].split(":")[0].strip().lower()
        job.note = ", ".join(reasons) or why or "will run again"
        return
    # Snakemake re-makes a missing output only when something downstream needs to run
    needed = job.planned or any(row.update_pending for row in mine)
    unneeded = "" if needed else "; not needed now"
    if recorded == "failed":
        job.state = "failed"
        job.note = str(record.get("error") or "failed") + unneeded
        return
    if recorded == "running" and alive is False:
        job.state = "failed"
        job.note = "interrupted: its process is gone" + unneeded
        return
    ran_before = any(row.logs and not row.exists for row in mine)
    if needed and ran_before and job.log and (root / job.log).exists():
        job.state = "failed"
        job.note = "ran, outputs missing: see the log"
        return
    if not needed:
        job.state = "done"
        job.note = "outputs removed, not needed now"
        return
    job.state = "pending"
    if any(exists):
        job.note = "some outputs missing"


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``; None -> ``""``."""
    if seconds is None:
        return ""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
