"""PM1 and PM2 end to end on duck-typed fake stores with planted (or absent) structure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.scripts import assert_clean_exit, load_script

from actspace.premortems.pm1 import run_pm1
from actspace.premortems.pm1 import summary_markdown as pm1_summary
from actspace.premortems.pm2 import run_pm2
from actspace.premortems.pm2 import summary_markdown as pm2_summary

TOP_LEVEL = {
    "premortem",
    "name",
    "metric",
    "value",
    "ci",
    "ci_level",
    "threshold",
    "verdict",
    "n",
    "duration_s",
    "date",
}


class FakeStore:
    """The attributes of ``ActivationStore`` that the pre-mortems read, backed by arrays."""

    def __init__(
        self,
        layers: list[np.ndarray],
        correct: np.ndarray | None = None,
        logliks: list[np.ndarray] | None = None,
        model: str = "fake",
    ) -> None:
        self._layers = layers
        self.n_layers = len(layers) - 1
        self.n_items = layers[0].shape[0]
        self.hidden_size = layers[0].shape[1]
        self._correct = correct
        self._logliks = logliks
        self.meta = {"model": model, "task": "synthetic", "n_items": self.n_items}

    def layer(self, k: int, pooling: str = "last") -> np.ndarray:
        if pooling != "last":
            raise ValueError(f"pooling {pooling!r} not in this store; available: ['last']")
        return self._layers[k].astype(np.float32)

    def correct(self) -> np.ndarray:
        assert self._correct is not None
        return self._correct

    def logliks(self) -> list[np.ndarray]:
        assert self._logliks is not None
        return self._logliks

    def scores(self) -> list[dict]:
        return [{"id": f"item{i}"} for i in range(self.n_items)]


def _model_stores(planted: bool, n: int = 240, seed: int = 0) -> dict[str, FakeStore]:
    """Two models; with ``planted`` both read a shared latent linearly (plus noise)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 8))
    stores = {}
    for name, (n_layers, d) in {"small": (4, 24), "large": (8, 40)}.items():
        layers = []
        for _ in range(n_layers + 1):
            source = latent if planted else rng.normal(size=(n, 8))
            layers.append(source @ rng.normal(size=(8, d)) + 0.3 * rng.normal(size=(n, d)))
        stores[name] = FakeStore(layers, model=name)
    return stores


def _probe_store(planted: bool, n: int = 300, seed: int = 0) -> FakeStore:
    """Correctness is a linear function of layer 2 (others are noise), or of nothing."""
    rng = np.random.default_rng(seed)
    layers = [rng.normal(size=(n, 12)) for _ in range(4)]
    weights = rng.normal(size=12)
    correct = layers[2] @ weights > 0.3 if planted else rng.random(n) < 0.6
    logliks = [rng.normal(size=4) for _ in range(n)]
    return FakeStore(layers, correct=correct, logliks=logliks)


#: Every keyword of the entry functions, spelled out (the schema's defaults, all items), so that
#: these known answers do not move when a default in the schema does.
PM1 = {
    "layer_depth": 0.5,
    "pooling": "last",
    "n_samples": None,
    "test_fraction": 0.3,
    "ridge_alpha": "auto",
    "n_permutations": 5,
    "n_bootstrap": 1000,
    "threshold": 0.3,
    "seed": 0,
}
PM2 = {
    "layer": "auto",
    "pooling": "last",
    "n_samples": None,
    "test_fraction": 0.3,
    "val_fraction": 0.2,
    "cv_folds": 5,
    "n_bootstrap": 1000,
    "threshold": 0.55,
    "seed": 0,
}
FAST = {**PM1, "n_bootstrap": 300}
FAST_PROBE = {**PM2, "n_bootstrap": 300, "cv_folds": 3, "Cs": 5}


def test_pm1_planted_linear_passes() -> None:
    results = run_pm1(_model_stores(planted=True), **{**FAST, "n_permutations": 2})
    assert set(results) >= TOP_LEVEL
    assert results["premortem"] == "pm1" and results["name"] == "cross_model"
    assert results["verdict"] == "PASS"
    assert results["value"] > 0.8 and results["ci"][0] > 0.3
    assert results["layers"] == {"small": 2, "large": 4}
    assert len(results["pairs"]) == 2  # both directions
    assert {(p["source"], p["target"]) for p in results["pairs"]} == {
        ("small", "large"),
        ("large", "small"),
    }
    assert abs(results["permutation_null"]["value"]) < 0.1
    assert results["cka_debiased"] > 0.5
    assert results["n"] == results["n_test"] == 72
    json.dumps(results)  # plain JSON types throughout
    text = pm1_summary(results)
    assert "**PASS**" in text and "Pre-mortem 1" in text and "small (L2)" in text


def test_pm1_random_fails_and_is_deterministic() -> None:
    stores = _model_stores(planted=False)
    results = run_pm1(stores, **{**FAST, "n_permutations": 2, "seed": 3})
    assert results["verdict"] == "FAIL"
    assert abs(results["value"]) < 0.1
    assert abs(results["cka_debiased"]) < 0.1
    again = run_pm1(stores, **{**FAST, "n_permutations": 2, "seed": 3})
    assert again["value"] == results["value"] and again["ci"] == results["ci"]


def test_pm1_subsamples_and_checks_input() -> None:
    stores = _model_stores(planted=True)
    results = run_pm1(stores, **{**FAST, "n_samples": 100, "n_permutations": 1})
    assert results["n_items"] == 100 and results["n_train"] + results["n_test"] == 100
    short = _model_stores(planted=True, n=120)
    with pytest.raises(ValueError, match="same items"):
        run_pm1({"small": stores["small"], "other": short["large"]}, **PM1)
    with pytest.raises(ValueError, match="pooling"):
        run_pm1(stores, **{**PM1, "pooling": "mean"})
    with pytest.raises(ValueError, match="ridge_alpha"):
        run_pm1(stores, **{**PM1, "ridge_alpha": "gcv"})


def test_pm1_on_one_model_has_no_value_and_says_why() -> None:
    stores = _model_stores(planted=True)
    results = run_pm1({"small": stores["small"]}, **PM1)
    assert results["value"] is None and results["ci"] == [None, None]
    assert results["verdict"] == "INCONCLUSIVE"
    assert "this study has one (small)" in results["reason"]
    assert "No value: PM1 compares" in pm1_summary(results)


def test_pm2_planted_passes_and_picks_the_layer() -> None:
    results = run_pm2(_probe_store(planted=True), **FAST_PROBE)
    assert set(results) >= TOP_LEVEL
    assert results["premortem"] == "pm2" and results["name"] == "error_prediction"
    assert results["verdict"] == "PASS"
    assert results["layer"] == 2 and results["layer_selection"] == "validation"
    assert len(results["validation"]) == 4
    assert results["value"] > 0.85 and results["auroc"] > 0.9
    assert results["baselines"]["majority"]["balanced_accuracy"] == 0.5
    assert results["baselines"]["confidence"]["auroc"] < 0.75  # logliks are noise here
    assert results["probe_minus_confidence"]["ci"][0] > 0
    balance = results["class_balance"]
    assert balance["n_correct"] + balance["n_incorrect"] == results["n_items"] == 300
    assert results["n"] == results["n_test"] == 90
    json.dumps(results)
    text = pm2_summary(results)
    assert "**PASS**" in text and "output confidence" in text and "majority class" in text


def test_pm2_noise_does_not_pass() -> None:
    results = run_pm2(_probe_store(planted=False), **{**FAST_PROBE, "layer": 1})
    assert results["verdict"] in {"FAIL", "INCONCLUSIVE"}
    assert results["layer"] == 1 and results["layer_selection"] == "configured"
    assert results["validation"] == []
    assert results["ci"][0] < 0.5 + 0.05 < results["ci"][1] + 0.1


def test_pm2_input_checks() -> None:
    store = _probe_store(planted=True)
    with pytest.raises(ValueError, match="layer must be 0..3"):
        run_pm2(store, **{**PM2, "layer": 9})
    with pytest.raises(ValueError, match="below 1"):
        run_pm2(store, **{**PM2, "test_fraction": 0.6, "val_fraction": 0.5})


def test_pm2_with_one_sided_answers_has_no_value_and_says_why() -> None:
    """A model right on (nearly) every item leaves nothing to predict: INCONCLUSIVE, no value,
    and the reason, which the gate, the abort report and the summary carry on."""
    store = _probe_store(planted=True)
    correct = np.ones(300, bool)
    correct[:5] = False  # five wrong answers: one short of the six the probe needs
    one_sided = FakeStore(store._layers, correct=correct, logliks=store.logliks())
    results = run_pm2(one_sided, **{**PM2, "layer": 1})
    assert results["value"] is None and results["ci"] == [None, None]
    assert results["verdict"] == "INCONCLUSIVE" and results["n"] == 0
    assert results["reason"] == (
        "PM2 needs at least 6 correct and 6 incorrect answers, got 295 correct and 5 incorrect "
        "of 300"
    )
    json.dumps(results)
    assert "No value: PM2 needs at least 6 correct" in pm2_summary(results)


# ---- the command-line scripts, on real store folders written in the contract's format ----


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
    stores = _model_stores(planted=True, n=80)
    probe = _probe_store(planted=True, n=80)
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
    assert results["verdict"] == "PASS" and results["models"] == ["small", "large"]
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
    assert results["layer"] == 2 and results["verdict"] in {"PASS", "INCONCLUSIVE"}
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
