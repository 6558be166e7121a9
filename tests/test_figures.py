"""Phase 3 figures: files, manifest, errors and the plotted numbers, on small real-shaped inputs.

Inputs are made by the experiments' own functions wherever that is cheap (the gate's decision,
cross_model_extended on in-memory stores, error prediction and abstention on synthetic stores,
the patching summary on hand-built sweeps, steering's shift summaries) and by hand, in the exact
shape the scripts write, where it is not (activation transfer needs a model).
"""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers.scripts import assert_clean_exit, load_script
from helpers.stores import synthetic_store

from actspace import plan
from actspace.analysis.figures import (
    FIGURES,
    INPUTS,
    PREMORTEM_METRICS,
    Drawn,
    MissingKey,
    Style,
    cross_model_heatmap,
    draw_all,
    error_prediction_roc,
    patching_effect_by_layer,
    premortem_verdicts,
    risk_coverage,
    steering_effect,
    transfer_gain,
)
from actspace.branches.cross_model.activation_transfer import paired_gain
from actspace.branches.cross_model.cross_model_extended import run_cross_model_extended
from actspace.branches.error_prediction.abstention import run_abstention
from actspace.branches.error_prediction.error_prediction_extended import (
    figure_data as error_figure_data,
)
from actspace.branches.error_prediction.error_prediction_extended import (
    run_error_prediction_extended,
)
from actspace.branches.patching.behavior_edit import choose_best, mean_with_ci, shift_summary
from actspace.branches.patching.patching_layers import PairSweep, summarise_sweeps
from actspace.branches.patching.patching_layers import figure_data as patching_figure_data
from actspace.core.io import atomic_write_json, to_json
from actspace.core.resampling import mean_ci
from actspace.core.schema import load_schema
from actspace.core.store import open_stores
from actspace.gate.decision import decide, measured_verdicts

BOOT = {"n_boot": 100, "seed": 0}


def plain(obj):
    """``obj`` as the experiment's JSON file holds it (NaN -> null, numpy -> lists)."""
    return json.loads(to_json(obj))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def line(drawn: Drawn, gid: str):
    """The one Line2D with ``gid`` in any axes of the figure."""
    found = [ln for ax in drawn.figure.get_axes() for ln in ax.get_lines() if ln.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} lines"
    return found[0]


def collection(drawn: Drawn, gid: str):
    found = [c for ax in drawn.figure.get_axes() for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} collections"
    return found[0]


def segments(drawn: Drawn, gid: str) -> list[tuple[float, float]]:
    """(low, high) of each vertical interval drawn with ``gid``."""
    return [(float(s[0, 1]), float(s[1, 1])) for s in collection(drawn, gid).get_segments()]


# -- inputs with the real structures ------------------------------------------------------------


def decision_json() -> dict:
    from helpers.premortem_records import record

    results = {
        # PM1 clears its threshold but not its control: plan PASS, controlled FAIL
        "pm1": record("pm1", 0.42, [0.35, 0.50], 0.3, n=60,
                      control=(0.40, [0.33, 0.47]), comparison=(0.02, [-0.01, 0.05], 0.0)),
        "pm2": record("pm2", 0.58, [0.52, 0.64], 0.6, n=90),
        "pm3": record("pm3", 0.10, [0.02, 0.25], 0.5, n=20),
    }  # fmt: skip
    return plain(decide(measured_verdicts(results), {"pm3": "PASS"}, "plan"))


class FakeStore:
    """An in-memory activation store: ``acts`` is [items, layers+1, d]."""

    def __init__(self, acts: np.ndarray) -> None:
        self.acts = np.asarray(acts, dtype=np.float32)
        self.n_items, depth, self.hidden_size = self.acts.shape
        self.n_layers = depth - 1
        self.meta = {"model": "fake"}

    def layer(self, k: int, pooling: str = "last") -> np.ndarray:
        return self.acts[:, k].copy()

    def scores(self) -> list[dict]:
        return [{"id": f"item-{i}", "correct": True} for i in range(self.n_items)]


def cross_model_json() -> tuple[dict, dict]:
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(60, 6))
    a = np.stack([latent @ rng.normal(size=(6, 8)) for _ in range(3)], axis=1)
    stores = {
        "a": FakeStore(a),
        "b": FakeStore(2.0 * a + 1.0),
        "c": FakeStore(rng.normal(size=(60, 2, 8))),
    }
    results, data = run_cross_model_extended(
        stores,
        pooling="last",
        n_samples=None,
        test_fraction=0.3,
        ridge_alpha="auto",
        k=5,
        n_permutations=1,
        n_outlier_dims=1,
        layer_depth=0.5,
        full_grid=True,
        n_bootstrap=50,
        seed=1,
    )
    return plain(results), plain(data)


def _accuracy(correct: np.ndarray) -> dict:
    values = correct.astype(float)
    return {"value": float(values.mean()), "ci": list(mean_ci(values, n_resamples=100)), "n": 50}


def transfer_json(seed: int) -> dict:
    """activation_transfer's results.json, with the fields figures read computed from items."""
    rng = np.random.default_rng(seed)
    base = rng.random(50) < 0.5
    arms = {
        "source": rng.random(50) < 0.7,
        "target": base,
        "target_with_transfer": base | (rng.random(50) < 0.2),
        "shuffled_control": base & (rng.random(50) < 0.9),
        "target_to_target_control": base.copy(),
    }
    gains = {
        "transfer": paired_gain(arms["target_with_transfer"], base, n_bootstrap=100),
        "shuffled_control": paired_gain(arms["shuffled_control"], base, n_bootstrap=100),
        "target_to_target_control": paired_gain(arms["target_to_target_control"], base),
    }
    return plain(
        {
            "experiment": "activation_transfer",
            "metric": "transfer_gain_points",
            "value": gains["transfer"]["gain_points"],
            "ci": gains["transfer"]["ci"],
            "threshold": 2.0,
            "n": 50,
            "n_test": 50,
            "source": "big",
            "target": "small",
            "source_layer": 2,
            "target_layer": 1,
            "accuracy_metric": "acc",
            "seed": seed,
            "accuracy": {key: _accuracy(value) for key, value in arms.items()},
            "gain": gains,
        }
    )


@pytest.fixture(scope="module")
def synthetic_stores(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = tmp_path_factory.mktemp("stores")
    a = synthetic_store(root / "m" / "taskA", n=100, d=8, n_layers=2, signal_layer=1, seed=1)
    b = synthetic_store(root / "m" / "taskB", n=100, d=8, n_layers=2, signal_layer=2, seed=2)
    return open_stores([str(a), str(b)])


FAST = {"n_bootstrap": 100, "cv_folds": 3, "Cs": 3}
#: What every store-reading experiment is given: all items, last-token pooling, 30% held out.
STORES = {"pooling": "last", "n_samples": None, "test_fraction": 0.3}


def error_json(stores, seed: int) -> tuple[dict, dict]:
    results = run_error_prediction_extended(
        stores, layers=None, n_bins=10, group_key="bucket", seed=seed, **STORES, **FAST
    )
    return plain(results), plain(error_figure_data(results))


def abstention_json(stores, seed: int) -> tuple[dict, dict]:
    results, data = run_abstention(
        stores, threshold=0.5, layer=None, seed=seed, n_random=20, **STORES, **FAST
    )
    return plain(results), plain(data)


def _sweep(pid, n_tokens, diff, denoised, noised, clean=2.0, corrupted=-2.0) -> PairSweep:
    return PairSweep(
        pid,
        n_tokens,
        diff,
        clean,
        corrupted,
        np.asarray(denoised, float),
        np.asarray(noised, float),
    )


def patching_json() -> tuple[dict, dict]:
    """The sweeps of test_patching_layers, whose summary is known exactly."""
    a = _sweep("a", 2, 0, [[2, -2], [2, -2], [-2, 2]], [[-2, 2], [2, 2], [2, -2]])
    b = _sweep(
        "b", 3, 1, [[-2, 2, -2], [-2, 0, 2], [-2, -2, 2]], [[2, -2, 2], [2, 2, -2], [2, 2, -2]]
    )
    wrong = _sweep("c", 2, 0, [[9, 9]] * 3, [[9, 9]] * 3, clean=-1.0, corrupted=1.0)
    out = summarise_sweeps([a, b, wrong], [0, 1, 2], n_blocks=2, n_bootstrap=100)
    return plain({"experiment": "patching_layers", **out}), plain(patching_figure_data(out))


LAYERS, COEFFICIENTS = (1, 2), (2.0, 4.0, 8.0)


def steering_json(seed: int) -> tuple[dict, dict]:
    """behavior_edit's and patching_vs_prompting's results.json, from synthetic prompt scores."""
    rng = np.random.default_rng(seed)
    base = rng.random(12) * 0.1
    selection, report = list(range(6)), list(range(6, 12))
    attributes, compared = {}, {}
    for a_index, attribute in enumerate(("toxicity", "formality")):
        grid = []
        for layer in LAYERS:
            for coefficient in COEFFICIENTS:
                lift = 0.01 * coefficient * layer * (a_index + 1)
                scores = base + lift + rng.normal(scale=0.01, size=12)
                grid.append(
                    {
                        "layer": layer,
                        "coefficient": coefficient,
                        "report": shift_summary(base, scores, report, **BOOT),
                        "selection": shift_summary(base, scores, selection, **BOOT),
                        "perplexity": {"ratio": 1.0 + 0.01 * coefficient, "ratio_ci": [1, 1.2]},
                        "budget_perplexity": {"ratio": 1.0, "ratio_ci": [1, 1 + coefficient / 100]},
                    }
                )
        attributes[attribute] = {
            "scorer": {"attribute": attribute, "kind": "lexicon"},
            "baseline": {"report": mean_with_ci(base[report], **BOOT)},
            "grid": grid,
            "best": choose_best(grid, 1.05),
        }
        prompted = base + 0.05 + rng.normal(scale=0.01, size=12)
        compared[attribute] = {
            "attribute": attribute,
            "n": 12,
            "methods": {
                "unsteered": {"score": mean_with_ci(base, **BOOT)},
                "prompting": shift_summary(base, prompted, list(range(12)), **BOOT),
            },
        }
    edit = {
        "experiment": "behavior_edit",
        "seed": seed,
        "attributes": attributes,
        "layers": list(LAYERS),
        "coefficients": list(COEFFICIENTS),
        "n_prompts": 12,
        "n_selection": 6,
        "n_report": 6,
        "samples_per_prompt": 2,
    }
    pvp = {"experiment": "patching_vs_prompting", "seed": seed, "attributes": compared}
    return plain(edit), plain(pvp)


@pytest.fixture(scope="module")
def inputs(synthetic_stores) -> dict:
    cm_results, cm_data = cross_model_json()
    ep = {seed: error_json(synthetic_stores, seed) for seed in (0, 1)}
    ab = {seed: abstention_json(synthetic_stores, seed) for seed in (0,)}
    pl_results, pl_data = patching_json()
    steer = {seed: steering_json(seed) for seed in (0, 1)}
    return {
        "gate/decision.json": decision_json(),
        "experiments/cross_model_extended/results.json": cm_results,
        "experiments/cross_model_extended/figure_data.json": cm_data,
        **{
            f"experiments/activation_transfer/seed{s}/results.json": transfer_json(s)
            for s in (0, 1)
        },
        **{
            f"experiments/error_prediction_extended/seed{s}/results.json": r
            for s, (r, _) in ep.items()
        },
        **{
            f"experiments/error_prediction_extended/seed{s}/figure_data.json": d
            for s, (_, d) in ep.items()
        },
        **{f"experiments/abstention/seed{s}/results.json": r for s, (r, _) in ab.items()},
        **{f"experiments/abstention/seed{s}/figure_data.json": d for s, (_, d) in ab.items()},
        "experiments/patching_layers/results.json": pl_results,
        "experiments/patching_layers/figure_data.json": pl_data,
        **{f"experiments/behavior_edit/seed{s}/results.json": e for s, (e, _) in steer.items()},
        **{
            f"experiments/patching_vs_prompting/seed{s}/results.json": p
            for s, (_, p) in steer.items()
        },
    }


def write_tree(root: Path, files: dict, only: tuple[str, ...] | None = None) -> Path:
    for rel, data in files.items():
        if only is None or any(rel.startswith(prefix) for prefix in only):
            atomic_write_json(root / rel, data)
    return root


# -- files and manifest ---------------------------------------------------------------------------


def test_draw_all_writes_every_figure_and_the_manifest(inputs, tmp_path):
    results = write_tree(tmp_path / "results", inputs)
    # a seed folder without its figure data is not a run; an unrelated folder is ignored
    (results / "experiments" / "abstention" / "seed7").mkdir()
    (results / "experiments" / "abstention" / "notes").mkdir()
    out = tmp_path / "figs"
    manifest = draw_all(results, out, Style())
    assert [m["name"] for m in manifest] == list(FIGURES)
    assert json.loads((out / "figures.json").read_text()) == manifest
    for entry in manifest:
        assert entry["png"] == f"{entry['name']}.png" and entry["pdf"] == f"{entry['name']}.pdf"
        for fmt in ("png", "pdf"):
            assert (out / entry[fmt]).stat().st_size > 1000, entry[fmt]
        assert (out / entry["pdf"]).read_bytes().startswith(b"%PDF")
        width, height = png_size(out / entry["png"])
        assert abs(width - 6.75 * 200) <= 2 and height > 300, (entry["name"], width, height)
        assert entry["caption"].endswith(".") and "n = " in entry["caption"], entry["caption"]
        assert entry["sources"] and all((results / s).is_file() for s in entry["sources"])
    by_name = {m["name"]: m for m in manifest}
    assert by_name["premortem_verdicts"]["sources"] == ["gate/decision.json"]
    assert by_name["transfer_gain"]["sources"] == [
        "experiments/activation_transfer/seed0/results.json",
        "experiments/activation_transfer/seed1/results.json",
    ]
    assert sorted(by_name["risk_coverage"]["sources"]) == [
        "experiments/abstention/seed0/figure_data.json",
        "experiments/abstention/seed0/results.json",
    ]
    assert len(by_name["steering_effect"]["sources"]) == 4
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


def test_manifest_lists_exactly_the_figures_whose_inputs_exist(inputs, tmp_path):
    out = tmp_path / "figs"
    draw_all(write_tree(tmp_path / "full", inputs), out, Style(dpi=60))
    partial = write_tree(
        tmp_path / "partial", inputs, only=("gate/", "experiments/patching_layers/figure_data")
    )
    manifest = draw_all(partial, out, Style(dpi=60))
    assert [m["name"] for m in manifest] == ["premortem_verdicts", "patching_effect_by_layer"]
    assert manifest[1]["sources"] == ["experiments/patching_layers/figure_data.json"]
    assert "number of pairs unknown" in manifest[1]["caption"]
    # the figures of branches that did not run this time are gone from the folder
    assert sorted(p.name for p in out.iterdir()) == [
        "figures.json",
        "patching_effect_by_layer.pdf",
        "patching_effect_by_layer.png",
        "premortem_verdicts.pdf",
        "premortem_verdicts.png",
    ]
    assert draw_all(tmp_path / "nothing", tmp_path / "empty", Style()) == []
    assert json.loads((tmp_path / "empty" / "figures.json").read_text()) == []


def test_malformed_input_names_the_file_and_the_key_and_writes_nothing(inputs, tmp_path):
    broken = dict(inputs)
    decision = json.loads(json.dumps(inputs["gate/decision.json"]))
    del decision["premortems"]["pm2"]["forced"]
    broken["gate/decision.json"] = decision
    results = write_tree(tmp_path / "results", broken)
    out = tmp_path / "figs"
    with pytest.raises(
        ValueError, match=r"gate/decision\.json: missing key 'premortems\.pm2\.forced'"
    ):
        draw_all(results, out, Style())
    assert not out.exists() or not list(out.iterdir())

    data = json.loads(
        json.dumps(inputs["experiments/error_prediction_extended/seed1/figure_data.json"])
    )
    del data["curves"][1]["auroc"]
    results = write_tree(
        tmp_path / "results2",
        {**inputs, "experiments/error_prediction_extended/seed1/figure_data.json": data},
    )
    with pytest.raises(
        ValueError, match=r"seed1/figure_data\.json: missing key 'curves\[1\]\.auroc'"
    ):
        draw_all(results, out, Style())

    bad = tmp_path / "results3" / "experiments" / "patching_layers" / "figure_data.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"patching_layers/figure_data\.json: not valid JSON"):
        draw_all(tmp_path / "results3", out, Style())
    with pytest.raises(MissingKey, match="^patching_layers/figure_data.json: missing key 'layers'"):
        patching_effect_by_layer({}, Style())


def test_style_overrides_and_formats(inputs, tmp_path):
    results = write_tree(tmp_path / "results", inputs, only=("gate/",))
    manifest = draw_all(results, tmp_path / "a", Style(dpi=100, width_in=3.5, formats=["png"]))
    assert manifest[0]["png"] == "premortem_verdicts.png" and manifest[0]["pdf"] is None
    assert png_size(tmp_path / "a" / "premortem_verdicts.png")[0] == 350
    assert not (tmp_path / "a" / "premortem_verdicts.pdf").exists()
    assert Style.from_overrides({"dpi": 300}).dpi == 300
    with pytest.raises(ValueError, match="unknown style key 'colour'; allowed: dpi, font_size"):
        Style.from_overrides({"colour": "red"})
    with pytest.raises(ValueError, match="formats"):
        Style(formats=("png", "jpeg"))
    with pytest.raises(ValueError, match="dpi"):
        Style(dpi=0)


# -- the plotted numbers are the data's ------------------------------------------------------------


def test_premortem_verdicts_plot_values_cis_thresholds_and_forced_marks(inputs):
    drawn = premortem_verdicts(inputs["gate/decision.json"], Style())
    pm1, pm2, pm3 = drawn.figure.get_axes()
    value = [ln for ln in pm1.get_lines() if ln.get_gid() == "value"][0]
    assert list(value.get_ydata()) == [0.42]
    threshold = [ln for ln in pm1.get_lines() if ln.get_gid() == "threshold"][0]
    assert list(threshold.get_ydata()) == [0.3, 0.3]
    # balanced accuracy and change rate are drawn in percent
    assert [ln for ln in pm2.get_lines() if ln.get_gid() == "value"][0].get_ydata()[
        0
    ] == pytest.approx(58.0)
    ci = [c for c in pm2.collections if c.get_gid() == "ci"][0].get_segments()[0]
    np.testing.assert_allclose(ci[:, 1], [52.0, 64.0])
    forced = [ln for ln in pm3.get_lines() if ln.get_gid() == "value"][0]
    assert forced.get_markerfacecolor() == "white"  # hollow: forced
    assert pm3.get_xlabel() == "PASS (forced)\nmeasured: FAIL\nplan FAIL, controlled FAIL\nn = 20"
    assert pm2.get_ylabel() == "balanced accuracy (%)"
    assert "forced verdicts (PM3)" in drawn.caption and "PM1 n = 60" in drawn.caption
    # the control beside the metric, in the metric's unit; both verdicts under the one used
    control = [ln for ln in pm1.get_lines() if ln.get_gid() == "control"][0]
    assert list(control.get_ydata()) == [0.40] and control.get_xdata()[0] > value.get_xdata()[0]
    control_ci = [c for c in pm1.collections if c.get_gid() == "control_ci"][0].get_segments()[0]
    np.testing.assert_allclose(control_ci[:, 1], [0.33, 0.47])
    pm2_control = [ln for ln in pm2.get_lines() if ln.get_gid() == "control"][0]
    assert pm2_control.get_ydata()[0] == pytest.approx(48.0)  # 0.58 - 0.1, in percent
    assert pm1.get_xlabel() == "PASS\nplan PASS, controlled FAIL\nn = 60"  # criterion: plan
    assert "under the plan criterion" in drawn.caption and "controls (grey)" in drawn.caption


def test_cross_model_heatmap_draws_the_matrices_and_every_layer_grid(inputs):
    data = inputs["experiments/cross_model_extended/figure_data.json"]
    results = inputs["experiments/cross_model_extended/results.json"]
    drawn = cross_model_heatmap(data, Style(), results=results)
    images = {im.get_gid(): im for ax in drawn.figure.get_axes() for im in ax.images}
    matrix = np.array(
        data["model_pair_heatmap"]["at_layer_depth"]["standardised"]["correlation"], dtype=float
    )
    shown = images["pair_matrix"].get_array()
    assert shown.mask[0, 0] and not shown.mask[0, 1]  # the diagonal (null) is left blank
    np.testing.assert_allclose(shown.filled(np.nan), matrix)
    assert matrix[0, 1] > 0.99  # b is a linear function of a
    grid = next(g for g in data["layer_grids"] if g["source"] == "a" and g["target"] == "c")
    mesh = collection(drawn, "grid:a->c")
    np.testing.assert_allclose(
        mesh.get_array().reshape(3, 2), np.array(grid["standardised"]["correlation"], dtype=float)
    )
    assert sum(c.get_gid().startswith("grid:") for ax in drawn.figure.get_axes()
               for c in ax.collections if c.get_gid()) == 6  # fmt: skip
    labels = [ax.get_ylabel() for ax in drawn.figure.get_axes()]
    assert "held-out Pearson r" in labels
    assert "n = 18 held-out items" in drawn.caption and "3 models" in drawn.caption


def test_transfer_gain_bars_are_the_mean_over_seeds_and_points_each_seed(inputs):
    runs = {s: inputs[f"experiments/activation_transfer/seed{s}/results.json"] for s in (0, 1)}
    drawn = transfer_gain(runs, Style())
    left = drawn.figure.get_axes()[0]
    heights = {p.get_gid(): p.get_height() for p in left.patches}
    for key in ("source", "target", "target_with_transfer"):
        expected = 100 * np.mean([r["accuracy"][key]["value"] for r in runs.values()])
        assert heights[f"bar:{key}"] == pytest.approx(expected)
    seed1 = line(drawn, "acc:seed1").get_ydata()
    assert seed1[2] == pytest.approx(100 * runs[1]["accuracy"]["target_with_transfer"]["value"])
    gains = line(drawn, "gain:seed0").get_ydata()
    assert gains[0] == pytest.approx(runs[0]["gain"]["transfer"]["gain_points"])
    assert segments(drawn, "gain_ci:seed0")[0] == pytest.approx(
        tuple(runs[0]["gain"]["transfer"]["ci"])
    )
    assert list(line(drawn, "threshold").get_ydata()) == [2.0, 2.0]
    assert "2 seeds" in drawn.caption and "n = 50" in drawn.caption


def test_error_prediction_curves_with_bands_and_baselines(inputs):
    data = {
        s: inputs[f"experiments/error_prediction_extended/seed{s}/figure_data.json"] for s in (0, 1)
    }
    results = {
        s: inputs[f"experiments/error_prediction_extended/seed{s}/results.json"] for s in (0, 1)
    }
    drawn = error_prediction_roc(data, Style(), results=results)
    assert len(drawn.figure.get_axes()) == 3  # ROC, AUROC by layer, balanced accuracy by layer
    curve = data[1]["curves"][0]
    tag = f"{curve['model']}/{curve['task']}:seed1"
    roc = line(drawn, f"roc_probe:{tag}")
    assert list(roc.get_xdata()) == pytest.approx(curve["roc"]["probe"]["fpr"])
    assert list(roc.get_ydata()) == pytest.approx(curve["roc"]["probe"]["tpr"])
    without_roc = {
        s: {**d, "curves": [{k: v for k, v in c.items() if k != "roc"} for c in d["curves"]]}
        for s, d in data.items()
    }
    assert len(error_prediction_roc(without_roc, Style()).figure.get_axes()) == 2
    assert list(line(drawn, f"auroc:{tag}").get_ydata()) == pytest.approx(curve["auroc"])
    ba = line(drawn, f"balanced_accuracy:{tag}").get_ydata()
    assert list(ba) == pytest.approx([100 * v for v in curve["balanced_accuracy"]])
    conf = line(drawn, f"confidence_auroc:{tag}").get_ydata()
    assert conf[0] == pytest.approx(curve["confidence_auroc"])
    band = collection(drawn, f"balanced_accuracy_ci:{tag}").get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(100 * min(ci[0] for ci in curve["ci"]))
    assert "2 model/task store(s)" in drawn.caption and "ROC at the selected layer" in drawn.caption

    # with ROC points (the field error_prediction would need to write), the ROC panel is drawn
    with_roc = json.loads(json.dumps(data[0]))
    with_roc["curves"][0]["roc"] = {
        "probe": {"fpr": [0, 0.1, 1], "tpr": [0, 0.7, 1]},
        "confidence": {"fpr": [0, 0.4, 1], "tpr": [0, 0.6, 1]},
    }
    drawn = error_prediction_roc({0: with_roc}, Style())
    assert len(drawn.figure.get_axes()) == 3 and "ROC at the selected layer" in drawn.caption
    tag = f"{curve['model']}/{curve['task']}:seed0"
    assert list(line(drawn, f"roc_probe:{tag}").get_ydata()) == [0, 0.7, 1]


def test_risk_coverage_curves_and_the_operating_point(inputs):
    data = {0: inputs["experiments/abstention/seed0/figure_data.json"]}
    results = {0: inputs["experiments/abstention/seed0/results.json"]}
    drawn = risk_coverage(data, Style(), results=results)
    curve = data[0]["curves"][0]
    tag = f"{curve['model']}/{curve['task']}:seed0"
    probe = line(drawn, f"risk_probe:{tag}")
    assert list(probe.get_xdata()) == pytest.approx([100 * c for c in curve["coverage"]])
    assert list(probe.get_ydata()) == pytest.approx([100 * r for r in curve["risk_probe"]])
    random = line(drawn, f"risk_random:{tag}").get_ydata()
    assert random[0] == pytest.approx(100 * results[0]["stores"][0]["aurc"]["random_expected"])
    point = line(drawn, f"operating_point:{tag}")
    record = results[0]["stores"][0]
    assert point.get_xdata()[0] == pytest.approx(100 * record["probe"]["coverage"])
    assert point.get_ydata()[0] == pytest.approx(100 * (1 - record["probe"]["effective_accuracy"]))
    assert "threshold 0.5" in drawn.caption and "n = 30" in drawn.caption


def test_patching_curves_and_heatmap_are_the_summary(inputs):
    data = inputs["experiments/patching_layers/figure_data.json"]
    drawn = patching_effect_by_layer(
        data, Style(), results=inputs["experiments/patching_layers/results.json"]
    )
    # test_patching_layers' known answers: denoising at the differing token 1, 0.75, 0
    assert list(line(drawn, "denoising:diff").get_ydata()) == [1.0, 0.75, 0.0]
    assert list(line(drawn, "noising:diff").get_ydata()) == [1.0, 0.0, 0.0]
    assert list(line(drawn, "denoising:final").get_xdata()) == [0, 1, 2]
    heat = collection(drawn, "denoising_heatmap").get_array()
    expected = [[0.0, 1.0, 0.0], [0.0, 0.75, 0.5], [0.0, 0.0, 1.0]]
    np.testing.assert_allclose(heat.reshape(3, 3), expected)
    gap = json.loads(json.dumps(data))
    gap["heatmaps"]["denoising"]["effect"][2][0] = None  # a cell no pair reaches
    heat = collection(patching_effect_by_layer(gap, Style()), "denoising_heatmap").get_array()
    assert heat.mask.reshape(3, 3)[2, 0] and heat.mask.sum() == 1
    assert "n = 2 pairs" in drawn.caption
    axes = drawn.figure.get_axes()
    assert axes[0].get_xlabel() == "layer (0 = embeddings)"
    assert axes[1].get_xlabel() == "token offset from final token"


def test_no_usable_pair_draws_a_note_not_data():
    wrong = _sweep("c", 2, 0, [[9, 9]] * 3, [[9, 9]] * 3, clean=-1.0, corrupted=1.0)
    out = summarise_sweeps([wrong], [0, 1, 2], n_blocks=2)
    drawn = patching_effect_by_layer(plain(patching_figure_data(out)), Style())
    texts = [t.get_text() for ax in drawn.figure.get_axes() for t in ax.texts]
    assert "no usable pair: nothing to plot" in texts


def test_steering_lines_per_layer_with_cis_and_the_prompting_band(inputs):
    edits = {s: inputs[f"experiments/behavior_edit/seed{s}/results.json"] for s in (0, 1)}
    prompts = {s: inputs[f"experiments/patching_vs_prompting/seed{s}/results.json"] for s in (0, 1)}
    drawn = steering_effect(edits, Style(), prompting=prompts)
    axes = drawn.figure.get_axes()
    assert [ax.get_title() for ax in axes] == ["toxicity", "formality"]
    assert axes[0].get_ylabel() == "toxicity score shift\n(share of words in lexicon)"
    for layer in LAYERS:
        shifts = [
            [
                g["report"]["shift"]
                for g in e["attributes"]["formality"]["grid"]
                if g["layer"] == layer
            ]
            for e in edits.values()
        ]
        mean = line(drawn, f"line:formality:L{layer}").get_ydata()
        np.testing.assert_allclose(mean, np.mean(shifts, axis=0))
        seed1 = line(drawn, f"points:formality:L{layer}:seed1").get_ydata()
        np.testing.assert_allclose(seed1, shifts[1])
    grid = edits[0]["attributes"]["toxicity"]["grid"][0]
    assert segments(drawn, "ci:toxicity:L1:seed0")[0] == pytest.approx(
        tuple(grid["report"]["shift_ci"])
    )
    prompting = prompts[1]["attributes"]["toxicity"]["methods"]["prompting"]
    assert line(drawn, "prompting:toxicity:seed1").get_ydata()[0] == pytest.approx(
        prompting["shift"]
    )
    best = edits[0]["attributes"]["formality"]["best"]
    assert line(drawn, "best:formality:seed0").get_ydata()[0] == pytest.approx(
        best["report"]["shift"]
    )
    assert "2 seeds" in drawn.caption and "n = 6 report prompts" in drawn.caption
    alone = steering_effect({0: edits[0]}, Style())
    assert "prompting" not in alone.caption


# -- the script ---------------------------------------------------------------------------------


def test_script_draws_prints_and_refuses_unknown_style_keys(inputs, tmp_path, capsys):
    script = load_script("make_figures")
    results = write_tree(
        tmp_path / "results", inputs, only=("gate/", "experiments/patching_layers")
    )
    out = tmp_path / "figs"
    script.main(
        ["--results-dir", str(results), "--output-dir", str(out),
         "--params", '{"dpi": 50, "width_in": 4, "formats": ["png"]}']
    )  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and printed[0].startswith("premortem_verdicts: ")
    assert png_size(out / "patching_effect_by_layer.png")[0] == 200
    # the flag the workflow passed before --params still works
    script.main(
        ["--results-dir", str(results), "--output-dir", str(out),
         "--style-json", '{"dpi": 40, "width_in": 4, "formats": ["png"]}']
    )  # fmt: skip
    assert png_size(out / "patching_effect_by_layer.png")[0] == 160
    assert_clean_exit(
        script.main,
        ["--results-dir", str(results), "--output-dir", str(out), "--params", '{"colour": 1}'],
        "error: unknown style key 'colour'; allowed: dpi, font_size, width_in, formats",
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--results-dir", str(results), "--output-dir", str(out), "--params", "[1]"])
    assert exit_info.value.code == 2
    assert "--params: expected a JSON object" in capsys.readouterr().err
    (results / "gate" / "decision.json").write_text("{}")
    assert_clean_exit(
        script.main,
        ["--results-dir", str(results), "--output-dir", str(out)],
        "decision.json: missing key 'premortems'",
    )


def test_an_experiment_with_nothing_to_draw_gets_no_figure(tmp_path):
    wrong = PairSweep("c", 2, 0, -1.0, 1.0, np.zeros((3, 2)), np.zeros((3, 2)))
    empty = summarise_sweeps([wrong], [0, 1, 2], n_blocks=2)
    folder = tmp_path / "results" / "experiments" / "patching_layers"
    atomic_write_json(folder / "figure_data.json", patching_figure_data(empty))
    atomic_write_json(folder / "results.json", empty)
    assert draw_all(tmp_path / "results", tmp_path / "figures") == []


# -- the figures follow the plan ------------------------------------------------------------------


def test_the_figures_are_the_plans():
    assert FIGURES == plan.FIGURES
    assert set(INPUTS) == set(plan.FIGURES)  # every figure of the plan can find its inputs
    assert set(PREMORTEM_METRICS) == {pm.metric for pm in plan.PREMORTEMS}
    figured = [e for e in plan.EXPERIMENTS if e.figure]
    assert [e.figure for e in figured] == list(FIGURES[1:])


def test_each_figure_reads_the_folder_of_its_experiment_in_the_plan(inputs, tmp_path):
    results = write_tree(tmp_path / "results", inputs)
    manifest = {m["name"]: m for m in draw_all(results, tmp_path / "figs", Style(formats="png"))}
    assert manifest["premortem_verdicts"]["sources"] == ["gate/decision.json"]
    for experiment in plan.EXPERIMENTS:
        if experiment.figure:
            sources = manifest[experiment.figure]["sources"]
            assert sources and all(
                s.startswith(f"experiments/{experiment.name}/")
                for s in sources
                if "patching_vs_prompting" not in s
            ), (experiment.figure, sources)


def test_the_default_style_is_the_schemas():
    section = load_schema()["properties"]["analysis"]["properties"]["figures"]["properties"]
    default = Style()
    for key, spec in section.items():
        assert getattr(default, key) == spec["default"], key


def test_steering_with_no_setting_within_budget_draws_no_chosen_point_nor_prompting(inputs):
    """behavior_edit chose nothing (no setting within the perplexity budget) and
    patching_vs_prompting had nothing to compare: the grid is drawn, no star, no prompting line."""
    edit = copy.deepcopy(inputs["experiments/behavior_edit/seed0/results.json"])
    edit["attributes"]["toxicity"]["best"] = None
    nothing = {"attribute": "toxicity", "n": 0, "best_setting": None, "note": "no setting"}
    pvp = copy.deepcopy(inputs["experiments/patching_vs_prompting/seed0/results.json"])
    pvp["attributes"]["toxicity"] = nothing
    drawn = steering_effect({0: edit}, Style(), prompting={0: pvp})
    gids = {artist.get_gid() for ax in drawn.figure.get_axes() for artist in ax.get_children()}
    assert "line:toxicity:L1" in gids and "best:formality:seed0" in gids
    assert "best:toxicity:seed0" not in gids and "prompting:toxicity:seed0" not in gids
    assert "prompting:formality:seed0" in gids
