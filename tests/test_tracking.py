"""Optional W&B tracking: logged in offline mode; never imported unless configured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.workflow import copy_workflow, dry_run

from actspace.analysis.tracking import entry_metrics
from actspace.core.io import atomic_write_json

STATISTICS = {
    "premortems": {
        "pm1": {"value": 0.4567, "ci": [0.35, 0.55], "threshold": 0.3, "verdict": "PASS", "n": 64}
    },
    "comparisons": [
        {"id": "behavior_edit:toxicity", "experiment": "behavior_edit", "branch": "2C",
         "label": "toxicity", "value": 0.25, "ci": [0.1, 0.4], "n": 20, "success": True,
         "p_value": 0.002, "p_holm": 0.004, "effect_size": {"name": "hedges_g_z", "value": 1.5},
         "source": "results/experiments/behavior_edit/seed42/results.json"},
    ],
}  # fmt: skip


def test_entry_metrics_keep_finite_numbers_only():
    metrics = entry_metrics(STATISTICS["comparisons"][0])
    assert metrics == {
        "value": 0.25, "n": 20.0, "p_value": 0.002, "p_holm": 0.004, "success": 1.0,
        "ci_low": 0.1, "ci_high": 0.4, "effect_hedges_g_z": 1.5,
    }  # fmt: skip
    assert entry_metrics({"value": float("nan"), "ci": [None, None]}) == {}


def test_runs_are_logged_offline_with_metrics_and_figures(tmp_path, monkeypatch):
    pytest.importorskip(
        "wandb", reason="the optional 'tracking' extra (pip install -e '.[tracking]')"
    )
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from actspace.analysis.tracking import track_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    experiment = tmp_path / "results" / "experiments" / "behavior_edit" / "seed42"
    atomic_write_json(experiment / "config.json", {"layers": [1, 2], "seed": 42})
    figures = tmp_path / "figures"
    figures.mkdir()
    Figure().savefig(figures / "steering_effect.png")
    manifest = [{"name": "steering_effect", "png": "steering_effect.png",
                 "sources": ["experiments/behavior_edit/seed42/results.json"]}]  # fmt: skip
    logged = track_study(
        STATISTICS, manifest, figures, project="actspace-test", entity=None, group=None,
        mode="offline", seed=42, run_dir=tmp_path / "runs", study_config={"seed": 42},
    )  # fmt: skip
    by_name = {run["name"]: run for run in logged}
    assert set(by_name) == {"pm1", "behavior_edit/seed42"}
    assert by_name["behavior_edit/seed42"]["metrics"]["behavior_edit/toxicity/value"] == 0.25
    assert by_name["behavior_edit/seed42"]["figures"] == ["figures/steering_effect"]
    assert by_name["pm1"]["metrics"]["pm1/value"] == 0.4567
    run_files = sorted((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 2
    data = b"".join(path.read_bytes() for path in run_files)
    for key in ("pm1/value", "behavior_edit/toxicity/p_holm", "hedges_g_z"):
        assert key.encode() in data
    assert list((tmp_path / "runs" / "wandb").glob("offline-run-*/files/media/images/figures/*"))


def test_without_the_key_wandb_is_never_imported_nor_scheduled(tmp_path):
    package = Path(__file__).parents[1] / "src" / "actspace"
    modules = sorted(
        ".".join(("actspace", *path.relative_to(package).with_suffix("").parts))
        for path in package.rglob("*.py")
        if path.stem != "__init__"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {[m for m in modules if m != 'actspace.analysis.tracking']!r}:\n"
        "    importlib.import_module(name)\n"
        "print('wandb' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    workdir = copy_workflow(tmp_path / "wf")
    force = 'gate={"force": {"pm1": "PASS", "pm2": "FAIL", "pm3": "FAIL"}}'
    assert "track" not in dry_run(workdir, "--config", force)
    wandb_key = 'tracking={"wandb": {"project": "p", "mode": "offline"}}'
    assert dry_run(workdir, "--config", force, wandb_key)["track"] == 1
