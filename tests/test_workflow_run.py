"""The default study end to end (slow): a real run, its decision, re-running only what changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workflow_helpers import dry_run, force_args

from actspace.gate import branches_for

pytestmark = pytest.mark.slow

PMS = ("pm1", "pm2", "pm3")
PM_FOLDERS = {
    "pm1": "pm1_cross_model",
    "pm2": "pm2_error_prediction",
    "pm3": "pm3_patching",
}
UPSTREAM = {"make_world", "train_organism", "prepare_task", "extract"}


@pytest.fixture(scope="module")
def study(default_study: Path) -> Path:
    """The default study (run once per session by conftest's ``default_study``)."""
    return default_study


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_decision_agrees_with_the_three_premortems(study):
    decision = _read(study / "results" / "gate" / "decision.json")
    verdicts = {}
    for pm in PMS:
        folder = study / "results" / "pre_mortems" / PM_FOLDERS[pm]
        for name in ("results.json", "config.json", "summary.md"):
            assert (folder / name).is_file(), f"{pm}: {name} missing"
        result = _read(folder / "results.json")
        info = decision["premortems"][pm]
        assert info["verdict"] == result["verdict"] and not info["forced"]
        assert info["value"] == pytest.approx(result["value"])
        assert info["ci"] == pytest.approx(result["ci"])
        assert info["threshold"] == result["threshold"]
        low, high = result["ci"]
        assert low <= result["value"] <= high
        expected = (
            "PASS"
            if low > result["threshold"]
            else "FAIL"
            if high < result["threshold"]
            else "INCONCLUSIVE"
        )
        assert result["verdict"] == expected
        verdicts[pm] = result["verdict"]
    assert decision["branches"] == branches_for(verdicts)
    assert decision["forced"] == []
    abort_report = study / "results" / "negative_results.md"
    assert abort_report.exists() == (decision["branches"] == ["X"])


def test_the_activation_stores_and_the_organisms_exist(study):
    for model in ("tiny_gpt2", "tiny_neox"):
        assert (study / "results" / "models" / model / "config.json").is_file()
        meta = _read(study / "results" / "activations" / model / "facts" / "meta.json")
        assert meta["n_items"] > 0
    for name in ("make_world.log", "gate.log", "decision.log"):
        assert (study / "results" / "logs" / name).is_file()


def test_a_second_call_has_nothing_to_do(study):
    assert dry_run(study) == {}


def test_changing_a_pm2_key_reruns_pm2_the_gate_and_what_follows_only(study):
    jobs = dry_run(study, "--config", 'premortems={"pm2": {"n_bootstrap": 500}}')
    assert {"pm2_error_prediction", "gate", "decision"} <= set(jobs)
    assert not (set(jobs) & (UPSTREAM | {"pm1_cross_model", "pm3_patching"}))


def test_changing_the_force_reruns_neither_premortems_nor_the_checkpoint(study):
    jobs = dry_run(study, *force_args("FAIL", "FAIL", "FAIL"))
    assert "decision" in jobs and "abort_report" in jobs
    assert not (
        set(jobs) & (UPSTREAM | {"pm1_cross_model", "pm2_error_prediction", "pm3_patching", "gate"})
    )
