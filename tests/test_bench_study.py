"""benchmarks/bench_study.py reads a Snakemake run's log and benchmark files into a timeline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_study.py"

# The shape of a Snakemake 9 run log: make_world, then two trainings side by side, then a job
# that needs both.
LOG = """\
Building DAG of jobs...
Execute 1 jobs...
[Mon Dec  7 20:21:11 2026]
localrule make_world:
    log: results/logs/make_world.log
    jobid: 6
    benchmark: results/benchmarks/make_world.tsv
    resources: tmpdir=/tmp
[Mon Dec  7 20:21:14 2026]
Finished jobid: 6 (Rule: make_world)
Execute 2 jobs...
[Mon Dec  7 20:21:14 2026]
localrule train_organism:
    jobid: 5
    benchmark: results/benchmarks/train_organism/tiny_gpt2.tsv
    wildcards: model=tiny_gpt2
[Mon Dec  7 20:21:14 2026]
localrule train_organism:
    jobid: 9
    benchmark: results/benchmarks/train_organism/tiny_neox.tsv
    wildcards: model=tiny_neox
[Mon Dec  7 20:22:30 2026]
Finished jobid: 9 (Rule: train_organism)
[Mon Dec  7 20:22:50 2026]
Finished jobid: 5 (Rule: train_organism)
Execute 1 jobs...
[Mon Dec  7 20:22:50 2026]
localrule extract:
    jobid: 4
    benchmark: results/benchmarks/extract/tiny_gpt2.tsv
[Mon Dec  7 20:23:00 2026]
Finished jobid: 4 (Rule: extract)
"""


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """benchmarks/bench_study.py as a module (benchmarks are not a package)."""
    spec = importlib.util.spec_from_file_location("bench_study", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_log_gives_each_job_its_start_end_and_benchmark(bench: ModuleType, tmp_path: Path) -> None:
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG, encoding="utf-8")
    jobs = {job.jobid: job for job in bench.parse_log(log)}
    assert set(jobs) == {4, 5, 6, 9}
    assert (jobs[6].rule, jobs[6].start, jobs[6].end) == ("make_world", 0.0, 3.0)
    assert (jobs[5].wildcards, jobs[5].start, jobs[5].end) == ("model=tiny_gpt2", 3.0, 99.0)
    assert (jobs[9].start, jobs[9].end) == (3.0, 79.0)
    assert jobs[9].benchmark == "results/benchmarks/train_organism/tiny_neox.tsv"
    assert (jobs[4].rule, jobs[4].start, jobs[4].end) == ("extract", 99.0, 109.0)


def test_critical_path_follows_what_each_job_waited_for(bench: ModuleType, tmp_path: Path) -> None:
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG, encoding="utf-8")
    chain = bench.critical_path(bench.parse_log(log))
    # extract waited for the slower training (gpt2), which waited for make_world.
    assert [job.jobid for job in chain] == [6, 5, 4]


def test_benchmark_file_gives_the_wall_seconds(bench: ModuleType, tmp_path: Path) -> None:
    tsv = tmp_path / "make_world.tsv"
    tsv.write_text("s\th:m:s\tmax_rss\tcpu_time\n3.01\t0:00:03\t265.95\t2.52\n", encoding="utf-8")
    assert bench.read_benchmark(tsv) == 3.01
    assert bench.read_benchmark(tsv, "cpu_time") == 2.52
    assert bench.read_benchmark(tmp_path / "missing.tsv") is None
