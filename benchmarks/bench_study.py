"""Benchmark the default study end to end: each job's wall time and the whole run's.

Runs by hand (not in CI)::

    python benchmarks/bench_study.py                 # snakemake --cores all in a scratch copy
    python benchmarks/bench_study.py --cores 2 --keep /tmp/study

Copies the workflow (Snakefile, workflow/, config/, scripts/, envs/; not results/) into a scratch
folder, runs ``snakemake --cores N`` there with this checkout's ``src/`` first on ``PYTHONPATH``,
and prints:

- each job's wall time from Snakemake's benchmark files (``results/benchmarks/**.tsv``, column
  ``s``), with its start and end in the run from Snakemake's log;
- the critical path read off that timeline: from the last job to finish, back through the job that
  finished last before each one started (what it waited for), with the CPU time of its jobs
  (column ``cpu_time``): on a loaded machine, what the path would take with its cores to itself;
- the run's wall time, measured around the ``snakemake`` call, and the goal: at most 2 minutes on
  an idle 2-core machine. The load average before and after is printed because other work on the
  machine slows every job.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What a run needs from the project; the package comes from ``src/`` on PYTHONPATH.
WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "scripts", "envs")
GOAL_SECONDS = 120.0

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")


@dataclass
class Job:
    """One job of the run: its rule, benchmark file and timeline (seconds from the first start)."""

    jobid: int
    rule: str
    benchmark: str | None = None
    wildcards: str = ""
    start: float | None = None
    end: float | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None


def copy_workflow(target: Path) -> None:
    """Copy the workflow files (not results) into ``target``, as a fresh clone has them."""
    target.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy2(source, target / part)


def run_study(workdir: Path, cores: str) -> float:
    """Run ``snakemake --cores`` in ``workdir``; its wall time in seconds. Raises on failure."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    done = subprocess.run(
        ["snakemake", "--cores", cores], cwd=workdir, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"snakemake failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return wall


def parse_log(log: Path) -> list[Job]:
    """The jobs of a Snakemake run log with their start and end (1 s resolution)."""
    jobs: dict[int, Job] = {}
    stamp: datetime | None = None
    current: Job | None = None
    for raw in log.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if match := _STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
            current = None
        elif (match := _RULE.match(line)) and stamp is not None:
            current = Job(jobid=-1, rule=match.group(1), start=stamp.timestamp())
        elif current is not None and line.startswith("jobid:"):
            current.jobid = int(line.split(":", 1)[1])
            jobs[current.jobid] = current
        elif current is not None and line.startswith("benchmark:"):
            current.benchmark = line.split(":", 1)[1].strip()
        elif current is not None and line.startswith("wildcards:"):
            current.wildcards = line.split(":", 1)[1].strip()
        elif (match := _FINISHED.match(line)) and stamp is not None:
            job = jobs.get(int(match.group(1)))
            if job is not None:
                job.end = stamp.timestamp()
    if not jobs:
        return []
    origin = min(job.start for job in jobs.values() if job.start is not None)
    for job in jobs.values():
        job.start = job.start - origin if job.start is not None else None
        job.end = job.end - origin if job.end is not None else None
    return sorted(jobs.values(), key=lambda job: (job.start or 0.0, job.jobid))


def read_benchmark(path: Path, column: str = "s") -> float | None:
    """A column of a Snakemake benchmark file (``s``: wall seconds, ``cpu_time``: CPU seconds);
    the last row if repeated."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    value = rows[-1].get(column) if rows else None
    return None if value in (None, "", "NA", "-") else float(value)


def critical_path(jobs: list[Job]) -> list[Job]:
    """From the last job to finish, back through the job that finished last before it started."""
    timed = [job for job in jobs if job.start is not None and job.end is not None]
    if not timed:
        return []
    chain = [max(timed, key=lambda job: job.end)]
    while True:
        before = [job for job in timed if job.end <= chain[-1].start and job is not chain[-1]]
        if not before:
            return chain[::-1]
        chain.append(max(before, key=lambda job: (job.end, job.seconds or 0.0)))


def report(jobs: list[Job], wall: float, cores: str, loads: tuple[str, str]) -> None:
    """Print the timeline, critical path, totals and the goal."""
    print(f"snakemake --cores {cores}; load average before: {loads[0]}; after: {loads[1]}")
    print(f"{'job':<44} {'wall s':>7} {'cpu s':>7} {'start':>6} {'end':>6}")
    for job in jobs:
        name = job.rule + (f" ({job.wildcards})" if job.wildcards else "")
        seconds = "-" if job.seconds is None else f"{job.seconds:.1f}"
        cpu = "-" if job.cpu_seconds is None else f"{job.cpu_seconds:.1f}"
        print(f"{name:<44} {seconds:>7} {cpu:>7} {job.start or 0:>6.0f} {job.end or 0:>6.0f}")
    busy = sum(job.seconds or 0.0 for job in jobs)
    chain = critical_path(jobs)
    chain_seconds = sum(job.seconds or 0.0 for job in chain)
    span = max((job.end or 0.0) for job in jobs) if jobs else 0.0
    print(f"sum of job wall times: {busy:.1f} s; first job start to last job end: {span:.0f} s")
    chain_cpu = sum(job.cpu_seconds or 0.0 for job in chain)
    print(
        f"critical path ({chain_seconds:.1f} s of jobs, {chain_cpu:.1f} s of their CPU time): "
        + " -> ".join(f"{job.rule} {job.seconds or 0:.0f}s" for job in chain)
    )
    verdict = "goal met" if wall <= GOAL_SECONDS else "goal NOT met"
    print(
        f"study wall time: {wall:.1f} s (goal <= {GOAL_SECONDS:.0f} s on an idle 2-core machine: "
        f"{verdict})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default="all", help="snakemake --cores (default: all)")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (must not exist)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_study-") as tmp:
        workdir = args.keep if args.keep is not None else Path(tmp) / "study"
        if workdir.exists():
            raise SystemExit(f"{workdir} exists; name a new folder")
        copy_workflow(workdir)
        before = " ".join(f"{x:.2f}" for x in os.getloadavg())
        wall = run_study(workdir, args.cores)
        after = " ".join(f"{x:.2f}" for x in os.getloadavg())
        logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
        jobs = parse_log(logs[-1])
        for job in jobs:
            if job.benchmark:
                job.seconds = read_benchmark(workdir / job.benchmark)
                job.cpu_seconds = read_benchmark(workdir / job.benchmark, "cpu_time")
        report(jobs, wall, args.cores, (before, after))


if __name__ == "__main__":
    main()
