"""PM1 and PM2 through their scripts, and their entry functions' keywords."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers.fake_stores import PM1, PM2, model_stores, probe_store
from helpers.scripts import assert_clean_exit, load_script

from actspace.premortems.pm1 import run_pm1
from actspace.premortems.pm2 import run_pm2


def _write_store(folder: Path, layers: list[np.ndarray], correct: np.ndarray, model: str) -> Path:
    import torch
    from safetensors.torch import save_file

    from actspace.core.io import atomic_write_json, write_jsonl

    folder.mkdir(parents=True)
    pooled = torch.tensor(np.stack(layers, axis=1), dtype=torch.float32)
    n, depth, d = pooled.shape
    save_file({"last": pooled, "mean": pooled.clone()}, str(folder / "pooled.safetensors"))
    save_file(
        {
            "choice_end": torch.zeros((n, 2, depth, d)),
            "choice_mask": torch.ones((n, 2), dtype=torch.uint8),
        },
        str(folder / "choice_end.safetensors"),
    )
    rows = [
        {
            "index": i,
            "id": f"item{i}",
            "label": 0,
            "logliks": [-1.0, -1.5 - 0.01 * (i % 7)],
            "pred": 0,
            "correct": bool(correct[i]),
        }
        for i in range(n)
    ]
    write_jsonl(folder / "scores.jsonl", rows)
    atomic_write_json(
        folder / "meta.json",
        {
            "model": model,
            "task": "synthetic",
            "n_items": n,
            "n_layers": depth - 1,
            "hidden_size": d,
            "poolings": ["last", "mean"],
        },
    )
    return folder


def test_scripts_write_experiment_folders(tmp_path: Path, capsys) -> None:
    stores = model_stores(planted=True, n=80)
    probe = probe_store(planted=True, n=80)
    paths = []
    for name, store in stores.items():
        correct = probe.correct()
        paths.append(_write_store(tmp_path / name / "synthetic", store._layers, correct, name))
    probe_path = _write_store(tmp_path / "probe" / "synthetic", probe._layers, probe.correct(), "p")

    pm1 = load_script("pm1_cross_model")
    out1 = tmp_path / "pm1_cross_model"
    section = {**PM1, "models": None, "task": "synthetic", "n_permutations": 1, "n_bootstrap": 200}
    stores_arg = ["--stores", ",".join(map(str, paths))]
    params = ["--params", json.dumps({**section, "ridge_alpha": 1})]
    pm1.main([*params, *stores_arg, "--output-dir", str(out1)])
    results = json.loads((out1 / "results.json").read_text())
    assert results["plan_verdict"] == "PASS" and results["models"] == ["small", "large"]
    assert {p["ridge_alpha"] for p in results["pairs"]} == {1.0}
    config = json.loads((out1 / "config.json").read_text())
    assert config["ridge_alpha"] == 1 and "provenance" in config
    assert (out1 / "summary.md").read_text().startswith("# Pre-mortem 1")
    # premortems.pm1.models names the stores (the workflow passes them in that order)
    named = ["--params", json.dumps({**section, "models": ["a", "b"]})]
    pm1.main([*named, *stores_arg, "--output-dir", str(tmp_path / "named")])
    named_results = json.loads((tmp_path / "named" / "results.json").read_text())
    assert named_results["models"] == ["a", "b"]

    pm2 = load_script("pm2_error_prediction")
    out2 = tmp_path / "pm2_error_prediction"
    section2 = {**PM2, "model": "p", "task": "synthetic", "n_bootstrap": 200, "cv_folds": 3}
    params2 = ["--params", json.dumps(section2)]
    pm2.main([*params2, "--layers", "2", "--store", str(probe_path), "--output-dir", str(out2)])
    results = json.loads((out2 / "results.json").read_text())
    assert results["layer"] == 2 and results["plan_verdict"] in {"PASS", "INCONCLUSIVE"}
    assert results["layer_selection"] == "configured"
    assert "pm2 heldout_balanced_accuracy" in capsys.readouterr().out

    missing = ["--store", str(tmp_path / "missing"), "--output-dir", str(out2)]
    assert_clean_exit(pm2.main, [*params2, *missing], "not found")
    assert_clean_exit(pm2.main, missing, "not found")
    assert_clean_exit(
        pm1.main,
        [*params, *stores_arg, "--model-names", "a", "--output-dir", str(out1)],
        "--model-names has 1 names for 2 stores",
    )


# ---- each parameter declared once: the entry functions take the schema's keys ----


def test_entry_functions_take_the_schema_keys() -> None:
    """Every keyword without a default is a key of premortems.<pm> (or the study's seed), and
    every key of the section is either such a keyword or what the script reads itself."""
    from actspace.core.cli import required_keywords
    from actspace.core.schema import load_schema
    from actspace.premortems.pm3 import run_pm3

    sections = load_schema()["properties"]["premortems"]["properties"]
    read_by_script = {
        "pm1": {"models", "task"},
        "pm2": {"model", "task"},
        "pm3": {"model", "pairs"},
    }
    for pm, function in {"pm1": run_pm1, "pm2": run_pm2, "pm3": run_pm3}.items():
        keys = set(sections[pm]["properties"])
        required = set(required_keywords(function))
        assert required - {"seed"} == keys - read_by_script[pm], pm
        assert "seed" in required
