"""Nothing a user writes loses a result (slow): on a finished default study, every bad change
that a check before any job can catch is refused, and no file under results/ changes.

The default study runs once per session (conftest's ``default_study``). Each case runs ``snakemake
--cores 2`` (a real run, not a dry run) in its own copy of the finished study (mtimes and
Snakemake's metadata kept), with the study's configuration changed as the case says and given as
``--configfile``, and asserts that the run was refused (non-zero exit, no job started, a message
naming the key) and that the sha256 of every file under results/ (except logs/) is what it was.

Cases (the change -> what the refusal names):

- ``premortems: {pm2: {n_samples: 1000.0}}`` -> ``premortems.pm2.n_samples`` (an integer);
- ``extract: {poolings: [last]}`` with ``premortems: {pm2: {pooling: mean}}`` -> the pooling PM2
  reads is not extracted;
- ``seeds: [42.0, 43.0]`` -> ``seeds`` (integers);
- ``premortems: {pm3: {pairs: data/no_such_pairs.jsonl}}`` (a missing pairs file) ->
  ``premortems.pm3.pairs``;
- ``experiments: {error_prediction_extended: {layers: [99]}}`` (2B) and
  ``experiments: {activation_transfer: {source_layer: 99}}`` (2A) -> the key, deeper than the
  models; PM3's ``layers: [99]`` likewise;
- a task ``{type: jsonl, path: data/no_such_task.jsonl}`` (a missing task file) -> ``path``;
- a hub task with a ``path`` but no ``source: local`` -> ``source``;
- a local model whose folder does not exist -> ``path``;
- ``subjects`` on a task that is not MMLU -> ``subjects``;
- results/gate/verdicts.json not JSON, or with an unknown verdict -> one line naming the file and
  the verdicts allowed (no InputFunctionException).
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

#: Files under results/ that a refused run may write (Snakemake's own logs of a step are not
#: results; a refused run starts no step, but the folder is excluded as the issue says).
EXCLUDED = ("logs",)
#: What a configuration refusal says (workflow/rules/common.smk).
REFUSED = "refused before any job ran"
#: What a run that got past the checks would print: jobs started, or a multi-line exception.
NOT_REFUSED = (
    "Traceback (most recent call last)",
    "InputFunctionException",
    "MissingInputException",
    "rule extract:",
    "Finished jobid",
)
#: At most this long per case: a case that is not refused may start the whole study again.
CASE_TIMEOUT = 900


def _deep_update(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _hashes(workdir: Path) -> dict[str, str]:
    """sha256 of every file under results/ but logs/, by path relative to results/."""
    results = workdir / "results"
    out = {}
    for path in sorted(results.rglob("*")):
        relative = path.relative_to(results)
        if relative.parts[0] in EXCLUDED or not path.is_file():
            continue
        out[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``snakemake --cores 2 ...`` in ``workdir``; on timeout the whole process group is ended,
    so that no job it started goes on using the shared cores."""
    process = subprocess.Popen(
        ["snakemake", "--cores", "2", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=CASE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate()
        pytest.fail(f"not refused: still running after {CASE_TIMEOUT} s\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def finished_study(
    default_study: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """A copy of the finished default study (conftest's, run once per session) and its results'
    checksums."""
    workdir = tmp_path_factory.mktemp("finished") / "study"
    shutil.copytree(default_study, workdir, symlinks=True)
    return workdir, _hashes(workdir)


@pytest.fixture
def study_copy(finished_study, tmp_path: Path) -> Path:
    """A copy of the finished study for one case (mtimes and .snakemake kept)."""
    workdir, _ = finished_study
    target = tmp_path / "study"
    shutil.copytree(workdir, target, symlinks=True)
    return target


def _assert_nothing_lost(workdir: Path, before: dict[str, str], skip: tuple[str, ...] = ()):
    after = _hashes(workdir)
    assert sorted(set(before) - set(after)) == [], "results deleted"
    assert sorted(set(after) - set(before)) == [], "results added"
    changed = [path for path in before if path not in skip and before[path] != after[path]]
    assert changed == [], "results changed"


def _assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"not refused:\n{output[-3000:]}"
    for marker in NOT_REFUSED:
        assert marker not in output, f"{marker!r} in the output:\n{output[-3000:]}"
    for word in words:
        assert word in output, f"{word!r} not in the output:\n{output[-3000:]}"
    return output


def test_an_unchanged_study_has_nothing_to_do_and_keeps_every_file(finished_study, study_copy):
    """The control: the copy is a finished study (otherwise no case below proves anything)."""
    _, before = finished_study
    result = _run(study_copy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr
    _assert_nothing_lost(study_copy, before)


#: (case id, change to the study's configuration, words the refusal must contain)
BAD_CHANGES = [
    ("pm2_n_samples_float", {"premortems": {"pm2": {"n_samples": 1000.0}}}, ("n_samples",)),
    (
        "pm2_pooling_not_extracted",
        {"extract": {"poolings": ["last"]}, "premortems": {"pm2": {"pooling": "mean"}}},
        ("pooling",),
    ),
    ("seeds_float", {"seeds": [42.0, 43.0]}, ("seeds",)),
    (
        "pm3_pairs_missing",
        {"premortems": {"pm3": {"pairs": "data/no_such_pairs.jsonl"}}},
        ("pairs", "data/no_such_pairs.jsonl"),
    ),
    (
        "2B_layers_too_deep",
        {"experiments": {"error_prediction_extended": {"layers": [99]}}},
        ("layers", "99"),
    ),
    (
        "2A_source_layer_too_deep",
        {"experiments": {"activation_transfer": {"source_layer": 99}}},
        ("source_layer", "99"),
    ),
    ("pm3_layers_too_deep", {"premortems": {"pm3": {"layers": [99]}}}, ("layers", "99")),
    (
        "task_file_missing",
        {"tasks": {"mine": {"type": "jsonl", "path": "data/no_such_task.jsonl"}}},
        ("data/no_such_task.jsonl",),
    ),
    (
        "hub_task_with_path",
        {"tasks": {"hs": {"type": "hellaswag", "path": "data/hs.jsonl"}}},
        ("source",),
    ),
    (
        "local_model_missing",
        {"models": {"mine": {"source": "local", "path": "no_such_model_folder"}}},
        ("no_such_model_folder",),
    ),
    ("subjects_not_mmlu", {"tasks": {"facts": {"subjects": ["astronomy"]}}}, ("subjects",)),
]


@pytest.mark.parametrize(
    ("change", "words"), [case[1:] for case in BAD_CHANGES], ids=[case[0] for case in BAD_CHANGES]
)
def test_a_bad_change_is_refused_and_loses_nothing(finished_study, study_copy, change, words):
    _, before = finished_study
    study = yaml.safe_load((study_copy / "config" / "config.yaml").read_text(encoding="utf-8"))
    bad = study_copy / "bad.yaml"
    bad.write_text(yaml.safe_dump(_deep_update(study, change)), encoding="utf-8")
    result = _run(study_copy, "--configfile", "bad.yaml")
    _assert_refused(result, REFUSED, *words)
    _assert_nothing_lost(study_copy, before)


VERDICTS = "results/gate/verdicts.json"
BAD_VERDICTS = [
    ("not_json", b'{"pm1": {"verdict": "PASS"', "not valid JSON"),
    (
        "unknown_verdict",
        b'{"pm1": {"plan_verdict": "PASS", "controlled_verdict": "PASS"}, '
        b'"pm2": {"plan_verdict": "MAYBE", "controlled_verdict": "FAIL"}, '
        b'"pm3": {"plan_verdict": "FAIL", "controlled_verdict": "FAIL"}}',
        "pm2.plan_verdict 'MAYBE' is unknown",
    ),
]


@pytest.mark.parametrize(
    ("content", "what"), [case[1:] for case in BAD_VERDICTS], ids=[case[0] for case in BAD_VERDICTS]
)
def test_an_invalid_verdicts_file_is_one_line_and_loses_nothing(
    finished_study, study_copy, content, what
):
    _, before = finished_study
    path = study_copy / VERDICTS
    stat = path.stat()
    path.write_bytes(content)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = _run(study_copy)
    output = _assert_refused(result, f"error: {VERDICTS}: {what}")
    line = next(line for line in output.splitlines() if line.startswith(f"error: {VERDICTS}"))
    assert "PASS, INCONCLUSIVE or FAIL" in line  # what is allowed, on the same line
    _assert_nothing_lost(study_copy, before, skip=("gate/verdicts.json",))
    assert path.read_bytes() == content  # the file is the user's to fix: left as it was
