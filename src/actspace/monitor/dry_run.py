"""What Snakemake reports about a workflow, asked without running or locking anything.

* ``snakemake -n --summary``: every output file of the DAG with its rule, the log recorded when
  it was made, its status (``ok``, ``missing``, ``params changed``, ...) and plan (``no update``
  or ``update pending``): :func:`parse_summary`.
* ``snakemake -n --rerun-incomplete``: the jobs that would run, with their inputs, outputs, log
  file and wildcards (the summary knows a job's log only once it has run): :func:`parse_dry_run`.

:func:`query_snakemake` runs both side by side.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


class StatusError(RuntimeError):
    """Snakemake could not report on the workflow (bad configuration, no Snakefile, ...)."""


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
