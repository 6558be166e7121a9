"""scripts/status.py: Snakemake's summary and dry run, incomplete markers and progress files
combined into one state per job; the watch loop; and one real ``--summary`` on a fresh copy."""

from __future__ import annotations

import base64
import io
import json
import os
import platform
from pathlib import Path

import pytest
from helpers.scripts import load_script

from actspace.monitor.dry_run import parse_dry_run, parse_summary
from actspace.monitor.jobs import classify, format_duration, step_name
from actspace.monitor.status import render, watch
from actspace.monitor.table import eta_text, format_table, progress_text, where_text
from actspace.monitor.workdir import (
    incomplete_outputs,
    progress_path_for,
    run_in_progress,
    snakemake_locked,
    snakemake_process_running,
)

NOW = 1_795_250_000.0
DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: no such process

# What `snakemake --summary` prints (Snakemake 9.27), tab-separated: make_world and
# train_organism tiny_gpt2 done; train_organism tiny_neox ran and lost its output (failed);
# extract tiny_gpt2/facts running; extract tiny_neox/facts never ran; pm3 outdated.
SUMMARY = "\n".join(
    "\t".join(row)
    for row in [
        ("output_file", "date", "rule", "log-file(s)", "status", "plan"),
        ("results/world/world.json", "Sat Nov 21 08:19:43 2026", "make_world",
         "results/logs/make_world.log", "ok", "no update"),
        ("results/world/corpus.txt", "Sat Nov 21 08:19:43 2026", "make_world",
         "results/logs/make_world.log", "ok", "no update"),
        ("results/models/tiny_gpt2", "Sat Nov 21 08:21:00 2026", "train_organism",
         "results/logs/train_organism/tiny_gpt2.log", "ok", "no update"),
        ("results/models/tiny_neox", "-", "train_organism",
         "results/logs/train_organism/tiny_neox.log", "missing", "update pending"),
        ("results/activations/tiny_gpt2/facts/pooled.safetensors", "-", "extract", "-",
         "missing", "update pending"),
        ("results/activations/tiny_gpt2/facts/meta.json", "-", "extract", "-", "missing",
         "update pending"),
        ("results/activations/tiny_neox/facts/pooled.safetensors", "-", "extract", "-",
         "missing", "update pending"),
        ("results/activations/tiny_neox/facts/meta.json", "-", "extract", "-", "missing",
         "update pending"),
        ("results/pre_mortems/pm3_patching/results.json", "Sat Nov 21 08:22:00 2026",
         "pm3_patching", "results/logs/pm3_patching.log", "params changed", "update pending"),
    ]
)  # fmt: skip

# What `snakemake -n --rerun-incomplete` prints for the same state (listed out of order, as
# Snakemake does).
DRY_RUN = """\
Building DAG of jobs...
Job stats:
job               count
--------------  -------
extract               2
gate                  1
pm3_patching          1
train_organism        1
all                   1
total                 6

[Sat Nov 21 08:23:16 2026]
rule extract:
    input: scripts/extract.py, results/models/tiny_neox, results/tasks/facts.jsonl
    output: {neox}/pooled.safetensors, {neox}/meta.json
    log: results/logs/extract/tiny_neox/facts.log
    jobid: 4
    benchmark: results/benchmarks/extract/tiny_neox/facts.tsv
    reason: Missing output files: results/activations/tiny_neox/facts/meta.json
    wildcards: model=tiny_neox, task=facts
    threads: 2
    resources: tmpdir=/tmp, runs_model=1

[Sat Nov 21 08:23:16 2026]
rule train_organism:
    input: scripts/train_organism.py, results/world/corpus.txt
    output: results/models/tiny_neox
    log: results/logs/train_organism/tiny_neox.log
    jobid: 5
    reason: Missing output files: results/models/tiny_neox
    wildcards: model=tiny_neox
    resources: tmpdir=/tmp, runs_model=1

[Sat Nov 21 08:23:16 2026]
rule extract:
    input: scripts/extract.py, results/models/tiny_gpt2, results/tasks/facts.jsonl
    output: {gpt2}/pooled.safetensors, {gpt2}/meta.json
    log: results/logs/extract/tiny_gpt2/facts.log
    jobid: 2
    reason: Forced execution
    wildcards: model=tiny_gpt2, task=facts
    resources: tmpdir=/tmp, runs_model=1

[Sat Nov 21 08:23:16 2026]
rule pm3_patching:
    input: scripts/pm3_patching.py, results/models/tiny_gpt2, results/world/prompt_pairs.jsonl
    output: results/pre_mortems/pm3_patching/results.json
    log: results/logs/pm3_patching.log
    jobid: 7
    reason: Params have changed since last execution
    resources: tmpdir=/tmp, runs_model=1

[Sat Nov 21 08:23:16 2026]
checkpoint gate:
    input: results/pre_mortems/pm3_patching/results.json
    output: results/gate/verdicts.json
    log: results/logs/gate.log
    jobid: 8
    reason: Missing output files: results/gate/verdicts.json
    resources: tmpdir=/tmp
Downstream jobs will be updated after checkpoint evaluation is completed.

[Sat Nov 21 08:23:16 2026]
localrule all:
    input: results/gate/verdicts.json, <TBD>
    jobid: 0
    reason: Input files updated by another job: results/gate/verdicts.json
    resources: tmpdir=/tmp
Job stats:
job               count
--------------  -------
total                 6

This was a dry-run (flag -n). The order of jobs does not reflect the order of execution.
""".format(neox="results/activations/tiny_neox/facts", gpt2="results/activations/tiny_gpt2/facts")


def _touch(root: Path, relative: str, text: str = "x") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _marker(root: Path, output: str) -> None:
    """Snakemake's incomplete marker for ``output`` (file persistence backend)."""
    name = base64.urlsafe_b64encode(output.encode()).decode()
    _touch(root, f".snakemake/incomplete/{name}", '{"external_jobid": null}')


def _progress(root: Path, log: str, **fields) -> None:
    record = {
        "step": "s",
        "state": "running",
        "items_done": 40,
        "total": 100,
        "rate_per_s": 2.5,
        "eta_s": 100.0,
        "updated": NOW - 5,
        "last_checkpoint": "shard 2/5",
        "peak_rss_mb": 812.0,
        "peak_gpu_mb": None,
        "pid": os.getpid(),
        "host": platform.node(),
    }
    _touch(root, progress_path_for(log), json.dumps({**record, **fields}))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A working directory in the state SUMMARY and DRY_RUN describe, with a run going."""
    for output in ("results/world/world.json", "results/world/corpus.txt"):
        _touch(tmp_path, output)
    (tmp_path / "results/models/tiny_gpt2").mkdir(parents=True)
    made = ("results/world/world.json", "results/world/corpus.txt", "results/models/tiny_gpt2")
    for k, output in enumerate(made):
        os.utime(tmp_path / output, (NOW - 600 + k, NOW - 600 + k))  # made in this order
    _touch(tmp_path, "results/pre_mortems/pm3_patching/results.json")
    _touch(tmp_path, "results/logs/train_organism/tiny_neox.log", "Traceback ... Error\n")
    _marker(tmp_path, "results/activations/tiny_gpt2/facts/pooled.safetensors")
    _marker(tmp_path, "results/activations/tiny_gpt2/facts/meta.json")
    _progress(tmp_path, "results/logs/extract/tiny_gpt2/facts.log")
    _touch(tmp_path, ".snakemake/locks/0.output.lock", "results/x\n")
    return tmp_path


def _by_step(jobs) -> dict:
    return {job.step: job for job in jobs}


def _states(jobs) -> dict[str, str]:
    return {job.step: job.state for job in jobs}


def test_summary_rows_in_both_formats():
    rows = parse_summary("Building DAG of jobs...\n" + SUMMARY)
    assert len(rows) == 9
    world, neox, pm3 = rows[0], rows[3], rows[8]
    assert (world.rule, world.exists, world.update_pending) == ("make_world", True, False)
    assert world.logs == ("results/logs/make_world.log",)
    assert (neox.exists, neox.status, neox.update_pending) == (False, "missing", True)
    assert rows[4].logs == ()
    assert pm3.status == "params changed"
    detailed = (
        "output_file\tdate\trule\tlog-file(s)\tinput-file(s)\tshellcmd\tstatus\tplan\n"
        "out/a.txt\tSat Nov 21 08:19:43 2026\tmake\tlogs/a.log,logs/a2.log\tin.txt\t"
        "echo a > out/a.txt\tok\tno update\n"
    )
    (row,) = parse_summary(detailed)
    assert row.logs == ("logs/a.log", "logs/a2.log") and row.plan == "no update"


def test_dry_run_jobs_come_dependencies_first():
    jobs = parse_dry_run(DRY_RUN)
    assert [(j.rule, j.wildcards.get("model")) for j in jobs] == [
        ("train_organism", "tiny_neox"),
        ("extract", "tiny_gpt2"),
        ("pm3_patching", None),
        ("extract", "tiny_neox"),
        ("gate", None),
    ]  # by depth: tiny_neox's extraction waits for its training, the gate for pm3; no "all"
    gate = jobs[-1]
    assert gate.checkpoint and gate.logs == ("results/logs/gate.log",)
    assert jobs[3].outputs == (
        "results/activations/tiny_neox/facts/pooled.safetensors",
        "results/activations/tiny_neox/facts/meta.json",
    )
    assert jobs[3].wildcards == {"model": "tiny_neox", "task": "facts"}


def test_progress_files_mirror_log_files_and_steps_are_named_from_them():
    assert (
        progress_path_for("results/logs/extract/tiny_gpt2/facts.log")
        == "results/progress/extract/tiny_gpt2/facts.json"
    )
    pm3 = progress_path_for("results/logs/pm3_patching.log")
    assert pm3 == "results/progress/pm3_patching.json"
    assert (
        progress_path_for("results/logs/behavior_edit/seed42.log")
        == "results/progress/behavior_edit/seed42.json"
    )
    assert step_name("extract", ["results/logs/extract/m/t.log"]) == "extract m/t"
    assert step_name("pm3_patching", ["results/logs/pm3_patching.log"]) == "pm3_patching"
    assert step_name("make", ["logs/x.log"], {"a": "1", "b": "2"}) == "make 1/2"


def test_incomplete_markers_are_decoded_including_split_long_names(tmp_path):
    _marker(tmp_path, "out/c.txt")
    long = "results/" + "x" * 300 + ".txt"
    encoded = base64.urlsafe_b64encode(long.encode()).decode()
    parts = [encoded[i : i + 254] for i in range(0, len(encoded), 254)]
    nested = "/".join(["@" + p for p in parts[:-1]] + [parts[-1]])
    _touch(tmp_path, f".snakemake/incomplete/{nested}")
    _touch(tmp_path, ".snakemake/incomplete/migration_underway")
    assert set(incomplete_outputs(tmp_path)) == {"out/c.txt", long}
    assert incomplete_outputs(tmp_path / "nowhere") == {}
    assert not snakemake_locked(tmp_path)


def test_each_job_gets_its_state(study):
    jobs = classify(
        parse_summary(SUMMARY), parse_dry_run(DRY_RUN), workdir=study, locked=True, now=NOW
    )
    assert _states(jobs) == {
        "make_world": "done",
        "train_organism tiny_gpt2": "done",
        "extract tiny_gpt2/facts": "running",
        "train_organism tiny_neox": "failed",
        "extract tiny_neox/facts": "pending",
        "pm3_patching": "outdated",
        "gate": "pending",
    }
    # done (oldest first), running, failed, then the rest dependencies first
    assert [job.step for job in jobs] == [
        "make_world",
        "train_organism tiny_gpt2",
        "extract tiny_gpt2/facts",
        "train_organism tiny_neox",
        "pm3_patching",
        "extract tiny_neox/facts",
        "gate",
    ]
    by_step = {job.step: job for job in jobs}
    running = by_step["extract tiny_gpt2/facts"]
    assert progress_text(running, NOW).startswith("40/100 (40%), 2.5/s, peak 812 MB, shard 2/5")
    assert eta_text(running, NOW) == "1m35s"  # 100 s from a record written 5 s ago
    assert where_text(running) == "results/logs/extract/tiny_gpt2/facts.log"
    failed = by_step["train_organism tiny_neox"]
    assert where_text(failed) == "results/logs/train_organism/tiny_neox.log"
    assert "outputs missing" in progress_text(failed, NOW)
    assert progress_text(by_step["pm3_patching"], NOW) == "params changed"
    assert where_text(by_step["make_world"]) == "results/world/world.json (+1 more)"
    table = format_table(jobs, now=NOW)
    header, rule, *rows = table.splitlines()
    assert header.split() == ["step", "state", "progress", "ETA", "log", "/", "outputs"]
    assert len(rows) == 7 and set(rule.replace(" ", "")) == {"-"}
    assert any("1m35s" in row and "running" in row for row in rows)


def test_failed_progress_file_and_interrupted_runs(study):
    summary, planned = parse_summary(SUMMARY), parse_dry_run(DRY_RUN)
    _progress(
        study, "results/logs/extract/tiny_neox/facts.log", state="failed", error="ValueError: x"
    )
    (study / ".snakemake/locks/0.output.lock").unlink()  # the run is gone, markers are left
    _progress(study, "results/logs/extract/tiny_gpt2/facts.log", pid=DEAD_PID)
    jobs = _by_step(classify(summary, planned, workdir=study, now=NOW))
    assert jobs["extract tiny_neox/facts"].state == "failed"
    assert "ValueError: x" in progress_text(jobs["extract tiny_neox/facts"], NOW)
    interrupted = jobs["extract tiny_gpt2/facts"]
    assert interrupted.state == "failed" and "interrupted" in interrupted.note


def test_running_without_a_progress_file_and_a_stalled_one(study):
    summary, planned = parse_summary(SUMMARY), parse_dry_run(DRY_RUN)
    (study / progress_path_for("results/logs/extract/tiny_gpt2/facts.log")).unlink()
    jobs = _by_step(classify(summary, planned, workdir=study, locked=True, now=NOW))
    job = jobs["extract tiny_gpt2/facts"]
    assert job.state == "running" and progress_text(job, NOW).startswith("started ")
    assert eta_text(job, NOW) == ""
    _progress(study, "results/logs/extract/tiny_gpt2/facts.log", updated=NOW - 3600)
    jobs = _by_step(classify(summary, planned, workdir=study, locked=True, now=NOW))
    assert "no progress for 1h00m; stalled?" in progress_text(jobs["extract tiny_gpt2/facts"], NOW)


def test_a_progress_file_whose_process_died_is_failed(study):
    summary, planned = parse_summary(SUMMARY), parse_dry_run(DRY_RUN)
    _progress(study, "results/logs/extract/tiny_neox/facts.log", pid=DEAD_PID)
    jobs = _by_step(classify(summary, planned, workdir=study, locked=True, now=NOW))
    assert jobs["extract tiny_neox/facts"].state == "failed"


def test_render_has_a_header_the_table_and_the_gate_note(study, monkeypatch):
    monkeypatch.setattr("actspace.monitor.workdir.snakemake_process_running", lambda workdir: True)
    text = render(parse_summary(SUMMARY), parse_dry_run(DRY_RUN), DRY_RUN, study, NOW)
    first = text.splitlines()[0]
    assert first.endswith("2 done, 1 running, 1 failed, 1 outdated, 2 pending")
    assert "jobs after the gate checkpoint" in text


def test_locks_without_a_snakemake_process_are_stale(study):
    """No Snakemake works in the fixture's folder: its lock is what a killed run left."""
    assert snakemake_locked(study) and snakemake_process_running(study) is False
    assert run_in_progress(study) == (False, True)
    text = render(parse_summary(SUMMARY), parse_dry_run(DRY_RUN), DRY_RUN, study, NOW)
    assert "a lock is left (snakemake --unlock)" in text.splitlines()[0]
    jobs = _by_step(classify(parse_summary(SUMMARY), parse_dry_run(DRY_RUN), workdir=study))
    assert jobs["extract tiny_gpt2/facts"].state == "running"  # its progress file's process lives


def test_durations():
    assert [format_duration(s) for s in (None, 0, 59.6, 75, 4000, 90000)] == [
        "",
        "0s",
        "1m00s",
        "1m15s",
        "1h06m",
        "1d01h",
    ]


def test_watch_runs_n_times_with_an_injected_sleep_and_stops_on_ctrl_c():
    renders, sleeps, out = [], [], io.StringIO()

    def render_once() -> str:
        renders.append(1)
        return f"table {len(renders)}"

    assert watch(render_once, 10, iterations=3, sleep=sleeps.append, out=out) == 0
    assert len(renders) == 3 and sleeps == [10, 10]
    assert out.getvalue().splitlines() == ["table 1", "table 2", "table 3"]

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    out = io.StringIO()
    assert watch(render_once, 5, sleep=interrupt, out=out, clear=True) == 0
    assert "\033[2J" in out.getvalue() and "Ctrl-C" in out.getvalue()


def _script():
    return load_script("status")


def test_script_passes_config_and_refuses_bad_flags(tmp_path, monkeypatch, capsys):
    script = _script()
    (tmp_path / "Snakefile").write_text("")
    calls = []
    monkeypatch.setattr(script, "study_status", lambda d, extra: calls.append(extra) or "TABLE")
    monkeypatch.setattr("actspace.monitor.status.time.sleep", lambda s: None)
    args = ["-d", str(tmp_path), "--config", "seed=1", "--configfile", "c.yaml"]
    assert script.main(args) == 0
    assert calls == [["--configfile", "c.yaml", "--config", "seed=1"]]
    assert script.main([*args, "--watch", "0.5", "--count", "2"]) == 0
    assert len(calls) == 3 and capsys.readouterr().out.count("TABLE") == 3
    with pytest.raises(SystemExit):
        script.main(["--watch", "0"])
    with pytest.raises(SystemExit, match="no Snakefile"):
        script.main(["-d", str(tmp_path / "nowhere")])


def test_status_of_a_fresh_copy_of_the_workflow(tmp_path, capsys):
    """The real thing: ``snakemake --summary`` and ``-n`` on a fresh copy (no job runs)."""
    from helpers.workflow import copy_workflow

    workdir = copy_workflow(tmp_path / "wf")
    assert _script().main(["-d", str(workdir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "0 done, 0 running, 0 failed" in lines[0]
    steps = [line.split()[0] for line in lines[4:] if line.strip()]
    assert steps[0] == "make_world"
    assert "extract" in steps and "gate" in steps
    assert all(" pending " in line for line in lines[4:] if line.startswith(("make_world", "gate")))
    assert "jobs after the gate checkpoint" in out
    assert not (workdir / "results").exists()  # nothing ran


def test_a_missing_output_nothing_needs_is_not_pending(tmp_path):
    """Snakemake re-makes a missing intermediate only for a job that must run (a model folder
    removed after its activations were extracted is not re-trained)."""
    summary = parse_summary(
        "output_file\tdate\trule\tlog-file(s)\tstatus\tplan\n"
        "results/models/m\t-\ttrain_organism\tresults/logs/train_organism/m.log\tmissing\t"
        "no update\n"
    )
    (job,) = classify(summary, [], workdir=tmp_path, locked=False, now=NOW)
    assert job.state == "done" and "not needed" in progress_text(job, NOW)
    _progress(tmp_path, "results/logs/train_organism/m.log", state="failed", error="OSError: x")
    (job,) = classify(summary, [], workdir=tmp_path, locked=False, now=NOW)
    assert job.state == "failed" and job.note == "OSError: x; not needed now"
