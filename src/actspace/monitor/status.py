"""Where a study stands: every job of the current configuration as done, running, failed,
outdated or pending, with progress and ETA for the long steps. ``scripts/status.py`` prints it.

Three sources, read without running or locking anything:

* ``snakemake -n --summary``: every output file of the DAG with its rule, the log recorded when
  it was made, its status (``ok``, ``missing``, ``params changed``, ...) and plan (``no update``
  or ``update pending``).
* ``snakemake -n --rerun-incomplete``: the jobs that would run, with their inputs, outputs, log
  file and wildcards (the summary knows a job's log only once it has run).
* The working directory: Snakemake's incomplete markers (``.snakemake/incomplete/``, one per
  output of a job that started and has not finished), its locks (``.snakemake/locks/``, held
  while a run is going), and the progress files the long steps write (:mod:`actspace.core.progress`).

A job's progress file mirrors its log file: ``results/logs/{rule}/{wildcards}.log`` has
``results/progress/{rule}/{wildcards}.json``.

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

import base64
import binascii
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

#: The order of the summary line at the top of the table.
STATES = ("done", "running", "failed", "outdated", "pending")
#: Where the long steps write their progress files (relative to the working directory).
PROGRESS_DIR = "results/progress"
LOG_DIR = "results/logs"
#: A running job whose progress file has not changed for this long is flagged as stalled.
STALE_AFTER_S = 600.0


class StatusError(RuntimeError):
    """Snakemake could not report on the workflow (bad configuration, no Snakefile, ...)."""


# ------------------------------------------------------------------------------------ parsing
@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One line of ``snakemake --summary`` (or ``--detailed-summary``)."""

    output: str
    date: str | None
    rule: str
    logs: tuple[str, ...]
    status: str
    plan: str

    @property
    def exists(self) -> bool:
        return self.date is not None

    @property
    def update_pending(self) -> bool:
        return self.plan == "update pending"


def parse_summary(text: str) -> list[SummaryRow]:
    """Rows of a ``--summary`` table: tab-separated, with a header line.

    Reads both formats by their header (``--detailed-summary`` adds input files and the shell
    command); other lines (Snakemake's log messages) are skipped.
    """
    rows: list[SummaryRow] = []
    columns: list[str] | None = None
    for line in text.splitlines():
        cells = line.split("\t")
        if cells[0] == "output_file":
            columns = cells
            continue
        if columns is None or len(cells) != len(columns):
            continue
        cell = dict(zip(columns, cells, strict=True))
        logs = cell.get("log-file(s)", "-")
        rows.append(
            SummaryRow(
                output=cell["output_file"],
                date=None if cell["date"] == "-" else cell["date"],
                rule=cell["rule"],
                logs=() if logs in ("-", "") else tuple(logs.split(",")),
                status=cell["status"],
                plan=cell["plan"],
            )
        )
    return rows


@dataclasses.dataclass(frozen=True)
class PlannedJob:
    """One job of a dry run."""

    rule: str
    outputs: tuple[str, ...]
    logs: tuple[str, ...]
    wildcards: dict[str, str]
    reason: str
    checkpoint: bool = False
    inputs: tuple[str, ...] = ()


_JOB_HEADER = re.compile(r"^(?:local)?(rule|checkpoint) (\S+):$")
_JOB_FIELD = re.compile(r"^\s+(\w+): (.*)$")


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(", ") if part.strip())


def _wildcards(value: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in value.split(", ") if "=" in part)
    return {key.strip(): item.strip() for key, item in pairs}


def parse_dry_run(text: str) -> list[PlannedJob]:
    """The jobs a ``snakemake -n`` listing shows, dependencies first (jobs without outputs
    skipped); Snakemake's own listing order is not the order of execution."""
    jobs: list[PlannedJob] = []
    current: tuple[str, bool, dict[str, str]] | None = None

    def close() -> None:
        if current is None:
            return
        rule, checkpoint, fields = current
        outputs = _split_list(fields.get("output", ""))
        if outputs:
            jobs.append(
                PlannedJob(
                    rule=rule,
                    outputs=outputs,
                    logs=_split_list(fields.get("log", "")),
                    wildcards=_wildcards(fields.get("wildcards", "")),
                    reason=fields.get("reason", ""),
                    checkpoint=checkpoint,
                    inputs=_split_list(fields.get("input", "")),
                )
            )

    for line in text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            close()
            current = (header.group(2), header.group(1) == "checkpoint", {})
            continue
        field = _JOB_FIELD.match(line) if current is not None else None
        if field:
            current[2][field.group(1)] = field.group(2).strip()
        elif current is not None:
            close()
            current = None
    close()
    return execution_order(jobs)


def execution_order(jobs: Sequence[PlannedJob]) -> list[PlannedJob]:
    """``jobs`` by depth in the DAG (a job after every job whose outputs it reads), ties in
    listing order."""
    producer = {output: index for index, job in enumerate(jobs) for output in job.outputs}
    needs = [{producer[i] for i in job.inputs if i in producer} for job in jobs]
    depth: dict[int, int] = {}

    def depth_of(index: int, seen: frozenset[int] = frozenset()) -> int:
        if index not in depth:
            parents = [p for p in needs[index] if p not in seen and p != index]
            depth[index] = 1 + max((depth_of(p, seen | {index}) for p in parents), default=-1)
        return depth[index]

    return [jobs[i] for i in sorted(range(len(jobs)), key=lambda i: (depth_of(i), i))]


def incomplete_outputs(workdir: str | os.PathLike[str]) -> dict[str, float]:
    """Outputs that Snakemake has marked incomplete -> when the marker was made (Unix time).

    Reads the file persistence backend (Snakemake's default): one file per output under
    ``.snakemake/incomplete/``, named by the URL-safe base64 of the output path and split into
    ``@``-prefixed folders where the name is too long for the file system.
    """
    root = Path(workdir) / ".snakemake" / "incomplete"
    found: dict[str, float] = {}
    if not root.is_dir():
        return found
    for dirpath, _, files in os.walk(root):
        for name in files:
            marker = Path(dirpath) / name
            parts = marker.relative_to(root).parts
            encoded = "".join(part.removeprefix("@") for part in parts)
            try:
                path = base64.urlsafe_b64decode(encoded.encode()).decode()
                found[path] = marker.stat().st_mtime
            except (binascii.Error, UnicodeDecodeError, ValueError, OSError):
                continue  # "migration_underway" and other non-markers
    return found


def snakemake_locked(workdir: str | os.PathLike[str]) -> bool:
    """Whether a Snakemake run holds the directory (its lock files exist).

    A run killed with SIGKILL leaves its locks behind (``snakemake --unlock`` removes them), so
    this can say yes after such a kill.
    """
    locks = Path(workdir) / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.glob("*.lock"))


def snakemake_process_running(workdir: str | os.PathLike[str]) -> bool | None:
    """Whether a Snakemake process works in ``workdir`` (Linux ``/proc``; None elsewhere).

    Tells a live run's locks from those a killed run left behind. Snakemake changes into its
    working directory, so its ``cwd`` is the workflow folder; processes started with
    ``--nolock`` (``status.py``'s own queries) do not count.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    target = Path(workdir).resolve()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            if not any(b"snakemake" in part for part in command) or b"--nolock" in command:
                continue
            if Path(os.readlink(entry / "cwd")).resolve() == target:
                return True
        except OSError:  # gone, or another user's
            continue
    return False


def run_in_progress(workdir: str | os.PathLike[str]) -> tuple[bool, bool]:
    """``(running, stale_lock)``: a Snakemake run holds ``workdir``; locks without a run."""
    locked = snakemake_locked(workdir)
    if not locked:
        return False, False
    alive = snakemake_process_running(workdir)
    return alive is not False, alive is False


def progress_path_for(log: str, *, log_dir: str = LOG_DIR, progress_dir: str = PROGRESS_DIR) -> str:
    """``results/logs/extract/m/t.log`` -> ``results/progress/extract/m/t.json``."""
    relative = log.removeprefix(log_dir.rstrip("/") + "/") if log.startswith(log_dir) else log
    return f"{progress_dir.rstrip('/')}/{Path(relative).with_suffix('.json').as_posix()}"


def read_progress(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A progress file's record, or None when it is missing or unreadable (being replaced)."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _process_alive(record: dict[str, Any]) -> bool | None:
    """Whether the process that writes ``record`` lives; None when it runs on another host."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != platform.node():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


# ------------------------------------------------------------------------------------ jobs
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
    alive = _process_alive(record) if recorded == "running" else None
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


# ------------------------------------------------------------------------------------ output
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


# ------------------------------------------------------------------------------------ running
def snakemake_command() -> list[str]:
    """Snakemake of this Python environment."""
    return [sys.executable, "-m", "snakemake"]


def _start(args: list[str], workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def query_snakemake(
    workdir: str | os.PathLike[str],
    extra: Sequence[str] = (),
    *,
    timeout: float = 300.0,
) -> tuple[str, str]:
    """``(--summary output, dry-run output)`` of the workflow in ``workdir``, run side by side.

    Neither takes the directory's lock (``--nolock``), so both work while a run is going;
    ``--rerun-incomplete`` makes the dry run list the jobs that are running (their outputs are
    marked incomplete) instead of refusing. The summary runs with ``-n`` too: the same table,
    and no log file in ``.snakemake/log/`` per call (``--watch`` would leave thousands).
    ``extra`` (``--config ...``, ``--configfile ...``) goes to both.
    """
    root = Path(workdir)
    base = [*snakemake_command(), "--nocolor", "--nolock", *extra]
    summary = _start([*base, "-n", "--summary"], root)
    dry = _start([*base, "-n", "--rerun-incomplete", "--cores", "1"], root)
    outputs = []
    for name, process in (("--summary", summary), ("-n", dry)):
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise StatusError(f"snakemake {name} took longer than {timeout:.0f} s") from None
        if process.returncode != 0:
            tail = "\n".join((err + out).strip().splitlines()[-15:])
            raise StatusError(f"snakemake {name} failed in {root} ({process.returncode}):\n{tail}")
        outputs.append(out + "\n" + err)
    return outputs[0], outputs[1]


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
