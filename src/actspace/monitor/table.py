"""The status table: one line per job with its state, progress, ETA and log or outputs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from actspace.monitor.jobs import JobStatus, format_duration

#: The order of the summary line at the top of the table.
STATES = ("done", "running", "failed", "outdated", "pending")


def _memory(record: dict[str, Any]) -> str:
    gpu, rss = record.get("peak_gpu_mb"), record.get("peak_rss_mb")
    parts = []
    if isinstance(rss, int | float):
        parts.append(f"{rss / 1024:.1f} GB" if rss >= 1024 else f"{rss:.0f} MB")
    if isinstance(gpu, int | float):
        parts.append(f"GPU {gpu / 1024:.1f} GB" if gpu >= 1024 else f"GPU {gpu:.0f} MB")
    return "peak " + ", ".join(parts) if parts else ""


def _counts(record: dict[str, Any]) -> str:
    done, total = record.get("items_done"), record.get("total")
    if not isinstance(done, int):
        return ""
    if isinstance(total, int) and total > 0:
        return f"{done}/{total} ({100 * done / total:.0f}%)"
    return str(done)


def progress_text(job: JobStatus, now: float) -> str:
    """The progress column."""
    record = job.progress or {}
    if job.state == "running":
        if record.get("state") != "running":  # none yet, or an earlier run's
            since = f"started {format_duration(now - job.started)} ago" if job.started else ""
            return ", ".join(p for p in (since, job.note) if p)
        rate = record.get("rate_per_s")
        parts = [
            _counts(record),
            f"{rate:.3g}/s" if isinstance(rate, int | float) else "",
            _memory(record),
            str(record.get("last_checkpoint") or ""),
            job.note,
        ]
        return ", ".join(p for p in parts if p)
    if job.state == "failed":
        at = _counts(record) if record else ""
        return ", ".join(p for p in (f"at {at}" if at else "", job.note) if p)
    if job.state == "done" and record.get("state") == "done" and not job.note:
        elapsed = record.get("elapsed_s")
        took = f"in {format_duration(elapsed)}" if isinstance(elapsed, int | float) else ""
        return " ".join(p for p in (_counts(record), took) if p)
    return job.note


def eta_text(job: JobStatus, now: float) -> str:
    """The ETA column: the progress file's estimate, less the time since it was written."""
    record = job.progress or {}
    if job.state != "running" or not isinstance(record.get("eta_s"), int | float):
        return ""
    updated = record.get("updated")
    since = now - updated if isinstance(updated, int | float) else 0.0
    return format_duration(max(0.0, record["eta_s"] - max(0.0, since)))


def where_text(job: JobStatus) -> str:
    """The log/outputs column: the log of a running or failed job, else its outputs."""
    if job.state in ("running", "failed") and job.log:
        return job.log
    if not job.outputs:
        return ""
    more = f" (+{len(job.outputs) - 1} more)" if len(job.outputs) > 1 else ""
    return job.outputs[0] + more


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(jobs: Sequence[JobStatus], *, now: float | None = None, width: int = 72) -> str:
    """A plain aligned table: step, state, progress, ETA, log/outputs (progress clipped)."""
    now = time.time() if now is None else now
    header = ("step", "state", "progress", "ETA", "log / outputs")
    rows = [
        (
            job.step or job.rule,
            job.state,
            _clip(progress_text(job, now), width),
            eta_text(job, now),
            where_text(job),
        )
        for job in jobs
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, tuple("-" * w for w in widths), *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def counts_line(jobs: Sequence[JobStatus]) -> str:
    counts = {state: sum(job.state == state for job in jobs) for state in STATES}
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n or state != "outdated")
