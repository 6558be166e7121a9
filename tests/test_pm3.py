"""PM3: the statistics by hand, the known-answer tests of the controlled verdict, the script, and
the model reference the workflow passes.

Known answers:
- a run whose only flipping layers are the known-answer ones (1 and L-1) PASSes by the plan's rule
  (it picks layer 1) and FAILs the controlled rule (no interior layer flips);
- a run whose interior layers flip PASSes both;
- a tiny model whose block 0 mixes nothing across positions, on pairs whose subject sits after a
  prefix: patching layer 1 at the differing token IS swapping the input token, so that cell flips
  every pair; it is reported as a passing check while the verdict's layer is interior;
- pairs that share a group never lie on both sides of the split, and the cluster interval is wider
  than the pair-level one when a group's pairs agree.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
import yaml
from helpers.fake_stores import CONTRACT
from helpers.pairs import answered_pairs
from helpers.scripts import assert_clean_exit, load_script
from helpers.tiny import make_tokenizer
from helpers.workflow import copy_workflow, snakemake

from actspace.config import ConfigError, resolve_config
from actspace.core.io import to_json
from actspace.core.resampling import bootstrap_ci
from actspace.lm.models import ModelLoadError, load_model, residual_blocks
from actspace.methods.patching import LayerPatching, PromptPair
from actspace.premortems.pm3 import pm3_from_patching, run_pm3, summary_markdown

#: The statistics' keywords, spelled out (the schema's defaults), so that these known answers do
#: not move when a default in the schema does.
STATS = {
    "n_bootstrap": 200,
    "seed": 0,
    "threshold": 0.5,
    "selection_fraction": 0.5,
    "layer_band": (0.25, 0.75),
}
#: run_pm3's keywords: every layer at the differing token, every pair.
PM3 = {**STATS, "position": "diff", "layers": None, "n_pairs": 1000}


def _run(
    flipped: np.ndarray,
    *,
    position: str = "diff",
    clean: np.ndarray | None = None,
    corrupted: np.ndarray | None = None,
    groups: list[str] | None = None,
) -> LayerPatching:
    """A synthetic run: layers 0..L, logit difference +1 where a cell flips and -1 where not."""
    n, m = flipped.shape
    patched = np.where(flipped, 1.0, -1.0)
    clean = np.ones(n) if clean is None else clean
    corrupted = -np.ones(n) if corrupted is None else corrupted
    return LayerPatching(
        ids=[f"p{i:02d}" for i in range(n)],
        layers=list(range(m)),
        position=position,
        positions=np.zeros(n, dtype=int),
        clean_diff=clean,
        corrupted_diff=corrupted,
        patched_diff=patched,
        flipped=patched > 0,
        flipped_argmax=patched > 0,
        candidate_tokens=[1, 2],
        clean_argmax_correct=clean > 0,
        corrupted_argmax_correct=corrupted < 0,
        skipped={"length_mismatch": 1},
        n_multi_token_answers=0,
        groups=groups,
    )


def _flips(n: int, n_blocks: int, layers: list[int]) -> np.ndarray:
    flips = np.zeros((n, n_blocks + 1), dtype=bool)
    flips[:, layers] = True
    return flips


# --- the statistics by hand -------------------------------------------------------------------


def test_pm3_arithmetic_by_hand():
    # 6 pairs, layers 0..3 (3 blocks). Pair 5 is wrong on the clean prompt (unusable).
    clean = np.array([2.0, 4.0, 1.0, 3.0, 2.0, -1.0])
    corrupted = np.array([-2.0, -4.0, -1.0, -1.0, -2.0, -2.0])
    patched = np.array(
        [
            [2.0, 1.0, -1.0, -2.0],
            [4.0, 2.0, 0.0, -4.0],
            [1.0, -0.5, 0.5, -1.0],
            [3.0, 1.0, 2.0, -1.0],
            [2.0, -1.0, 1.0, -2.0],
            [-1.0, 0.0, 0.0, 0.0],
        ]
    )
    run = _run(patched > 0, clean=clean, corrupted=corrupted)
    run.patched_diff = patched
    res = pm3_from_patching(run, n_blocks=3, **STATS)
    assert list(res)[: len(CONTRACT)] == CONTRACT and "verdict" not in res
    assert res["baseline"]["n_usable"] == 5
    assert res["baseline"]["clean_accuracy"] == pytest.approx(5 / 6)
    by_layer = {row["layer"]: row for row in res["curves"]["diff"]}
    assert by_layer[0]["change_rate"] == 1.0 and by_layer[0]["recovery_mean"] == pytest.approx(1.0)
    assert by_layer[1]["change_rate"] == pytest.approx(3 / 5)
    # recovery at layer 1: (1+2)/4, (2+4)/8, (-0.5+1)/2, (1+1)/4, (-1+2)/4
    assert by_layer[1]["recovery_mean"] == pytest.approx(np.mean([0.75, 0.75, 0.25, 0.5, 0.25]))
    assert by_layer[3]["change_rate"] == 0.0
    assert res["selectable_layers"] == [1, 2]
    assert res["interior_layers"] == [2]  # band 1..2 of 3 blocks, without layer 1 (known answer)
    assert res["selection"]["n"] + res["n"] == 5
    held = [int(i[1:]) for i in res["heldout"]["ids"]]
    assert res["chosen_layer"] in (1, 2) and res["interior_layer"] == 2
    assert res["value"] == pytest.approx(float(np.mean(patched[held, res["chosen_layer"]] > 0)))
    assert res["controlled"]["value"] == pytest.approx(float(np.mean(patched[held, 2] > 0)))
    assert res["recovery"]["layer"] == 2
    assert res["ci"][0] <= res["plan"]["ci_exact"][0]  # widened to the exact interval
    # 2 or 3 held-out pairs can never PASS 0.5: the Clopper-Pearson lower bound for 3/3 is 0.29.
    assert res["plan_verdict"] in ("INCONCLUSIVE", "FAIL")
    assert sum(row["split"] == "heldout" for row in res["per_pair"]) == res["n"]
    assert res["per_pair"][5]["split"] is None


def test_only_the_known_answer_layers_flip_passes_the_plan_and_fails_controlled():
    """Layers 1 and L-1 flip every pair, no interior layer flips: today's rule picks layer 1 and
    PASSes; the controlled rule reads the interior band and FAILs, and layer 1 is the control."""
    n, n_blocks = 40, 8
    res = pm3_from_patching(_run(_flips(n, n_blocks, [0, 1, 7, 8])), n_blocks=n_blocks, **STATS)
    assert res["chosen_layer"] == 1 and res["value"] == 1.0 and res["n"] == 20
    assert res["ci"][0] == pytest.approx(0.025 ** (1 / 20))  # Clopper-Pearson for 20/20
    assert res["plan_verdict"] == "PASS"
    assert res["interior_layers"] == [2, 3, 4, 5, 6] and res["interior_layer"] in range(2, 7)
    assert res["controlled"]["value"] == 0.0 and res["controlled"]["passed"] is False
    assert res["controlled"]["bound"] == 0.5
    assert res["controlled_verdict"] == "FAIL"
    assert res["control"]["value"] == 1.0 and "layer 1" in res["control"]["description"]
    (diff_check, final_check) = res["known_answer_checks"]
    assert (diff_check["layer"], diff_check["passed"], diff_check["change_rate"]) == (1, True, 1.0)
    assert final_check["position"] == "final" and final_check["measured"] is False  # no final run
    text = summary_markdown(res)
    for word in ("Plan verdict: **PASS**", "Controlled verdict: **FAIL**", "Known-answer checks"):
        assert word in text
    assert "| 1 (P) |" in text and "(I, band)" in text


def test_an_interior_effect_passes_both_and_both_positions_are_kept():
    n, n_blocks = 40, 8
    diff = _run(_flips(n, n_blocks, [0, 1, 2, 3, 4]))
    final = _run(_flips(n, n_blocks, [5, 6, 7, 8]), position="final")
    runs = {"diff": diff, "final": final}
    res = pm3_from_patching(runs, position="diff", n_blocks=8, **STATS)
    assert (res["plan_verdict"], res["controlled_verdict"]) == ("PASS", "PASS")
    assert res["interior_layer"] == 2  # ties at 1.0 go to the lower layer
    assert res["recovery"]["value"] == 1.0
    assert [c["passed"] for c in res["known_answer_checks"]] == [True, True]
    curves = {p: [row["change_rate"] for row in res["curves"][p]] for p in ("diff", "final")}
    assert curves == {"diff": [1.0] * 5 + [0.0] * 4, "final": [0.0] * 5 + [1.0] * 4}
    # the same runs read at the final position: the interior band there is 2..6 without L-1
    at_final = pm3_from_patching(
        {"diff": diff, "final": final}, position="final", n_blocks=8, **STATS
    )
    assert at_final["interior_layer"] == 5 and at_final["controlled_verdict"] == "PASS"
    assert at_final["control"]["value"] == 1.0 and "layer 7" in at_final["control"]["description"]
    text = summary_markdown(res)
    assert "diff change" in text and "final change" in text


def test_groups_stay_on_one_side_and_widen_the_interval():
    """Groups of four pairs that all flip or all stay: no group is split, and resampling groups
    gives a wider interval than resampling pairs."""
    n_blocks, n_groups, size = 4, 20, 4
    n = n_groups * size
    groups = [f"g{i // size}" for i in range(n)]
    flips = np.zeros((n, n_blocks + 1), dtype=bool)
    flips[:, 0] = True
    flips[:, 2] = np.array([(i // size) % 2 == 0 for i in range(n)])  # half the groups flip
    res = pm3_from_patching(_run(flips, groups=groups), n_blocks=n_blocks, **STATS)
    sides = {}
    for row in res["per_pair"]:
        sides.setdefault(row["group"], set()).add(row["split"])
    assert all(len(side) == 1 for side in sides.values())
    assert res["selection"]["n_groups"] + res["heldout"]["n_groups"] == n_groups
    row = res["curves"]["diff"][2]
    pair_level = bootstrap_ci(np.mean, flips[:, 2].astype(float), n_resamples=200, seed=0)
    width = row["change_rate_ci"][1] - row["change_rate_ci"][0]
    assert width > 1.5 * (pair_level[1] - pair_level[0])


def test_too_few_usable_pairs_record_no_value():
    run = _run(_flips(3, 3, [0, 1]), corrupted=np.array([1.0, 1.0, -1.0]))  # one usable pair
    res = json.loads(to_json(pm3_from_patching(run, n_blocks=3, **STATS)))
    assert (res["plan_verdict"], res["controlled_verdict"]) == ("INCONCLUSIVE", "INCONCLUSIVE")
    assert res["value"] is None and res["control"] is None and res["controlled"] is None
    assert res["chosen_layer"] is None and res["n"] == 0
    assert res["reason"].startswith("only 1 pair(s) where the model is right on both prompts")
    one_group = _run(_flips(4, 3, [0, 1]), groups=["g"] * 4)
    res = pm3_from_patching(one_group, n_blocks=3, **STATS)
    assert res["plan_verdict"] == "INCONCLUSIVE" and "1 group(s)" in res["reason"]
    assert "No value" in summary_markdown(res)


def test_a_band_without_interior_layers_is_refused():
    run = _run(_flips(8, 4, [0]))
    with pytest.raises(ValueError, match=r"layer_band \[0.2, 0.3\] \(layers 1..1 of 4 blocks\)"):
        pm3_from_patching(run, n_blocks=4, **{**STATS, "layer_band": (0.2, 0.3)})


def _study(**pm3) -> dict:
    config = yaml.safe_load(Path("config/config.yaml").read_text(encoding="utf-8"))
    config["premortems"]["pm3"].update(pm3)
    return copy.deepcopy(config)


def test_config_refuses_a_bad_layer_band():
    """One line naming premortems.pm3.layer_band (the organisms have 4 blocks)."""
    assert resolve_config(_study())["premortems"]["pm3"]["layer_band"] == [0.25, 0.75]
    for band, message in (
        ([0.5, 0.5], "premortems.pm3.layer_band: low must be below high, got [0.5, 0.5]"),
        (
            [0.2, 0.3],
            "premortems.pm3.layer_band: [0.2, 0.3] spans layers 1..1 of model 'tiny_gpt2' "
            "(4 blocks), which hold no patched layer besides the known-answer cell at the diff "
            "position; widen the band",
        ),
    ):
        with pytest.raises(ConfigError) as error:
            resolve_config(_study(layer_band=band))
        assert str(error.value) == message
    assert resolve_config(_study(layer_band=[0.2, 0.3], position="final"))  # layer 1 is interior


# --- a tiny model: the known-answer cell is a check, the verdict's layer interior ----------------


@pytest.fixture(scope="module")
def local_block0():
    """A random 8-block GPT-2 whose block 0 attends to nothing (its attention output is zero), so
    that the residual stream after block 0 at a position depends on that position's token alone:
    patching layer 1 at the differing token is exactly swapping in the clean token."""
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=8, n_head=4, n_positions=256
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.h[0].attn.c_proj.weight.zero_()
        model.transformer.h[0].attn.c_proj.bias.zero_()
    return model, tokenizer


def test_the_layer_one_cell_is_a_check_and_the_verdict_layer_is_interior(
    local_block0, one_torch_thread
):
    model, tokenizer = local_block0
    pairs = answered_pairs(model, tokenizer, n=32)  # each swap sits after a prefix
    assert len(pairs) >= 24 and all(p.clean.split()[0] == p.corrupted.split()[0] for p in pairs)
    res = run_pm3(model, tokenizer, pairs, **{**PM3, "seed": 0})
    (diff_check, final_check) = res["known_answer_checks"]
    assert diff_check["layer"] == 1 and diff_check["change_rate"] == 1.0 and diff_check["passed"]
    assert diff_check["recovery_mean"] == pytest.approx(1.0, abs=1e-4)
    assert final_check["layer"] == 7 and final_check["measured"]
    # today's rule picks the known-answer cell and PASSes; the controlled rule reads the band
    assert res["chosen_layer"] == 1 and res["plan_verdict"] == "PASS"
    assert res["interior_layer"] in range(2, 7) and res["interior_layers"] == [2, 3, 4, 5, 6]
    assert res["controlled"]["value"] == res["interior"]["change_rate"] < 1.0
    assert res["controlled_verdict"] == "FAIL"
    assert res["curves"]["diff"][0]["change_rate"] == 1.0  # layer 0 at diff: the clean input
    assert res["curves"]["final"][-1]["change_rate"] == 1.0  # layer L at final: the read-out


# --- end to end on the tiny families -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_model_dir):
    return load_model(tiny_model_dir("gpt2"), dtype="float32", device="cpu")


def test_run_pm3_record(tiny_gpt2, one_torch_thread):
    model, tokenizer = tiny_gpt2
    pairs = answered_pairs(model, tokenizer, n=6)
    bad = PromptPair("bad", "The cat sat", "The cat sat on the", "a", "o", {})
    res = run_pm3(model, tokenizer, [*pairs, bad], **{**PM3, "n_bootstrap": 100, "seed": 1})
    assert list(res)[: len(CONTRACT)] == CONTRACT and "verdict" not in res
    assert (res["premortem"], res["name"], res["metric"]) == ("pm3", "patching", "change_rate")
    assert res["skipped"]["length_mismatch"] == 1
    assert res["baseline"]["n_usable"] == len(pairs)
    assert res["n_pairs_loaded"] == res["n_pairs_in_file"] == len(pairs) + 1
    assert res["positions"] == ["diff", "final"] and res["position"] == "diff"
    n_blocks = len(residual_blocks(model))
    assert res["curves"]["diff"][0]["change_rate"] == 1.0  # layer 0 at the differing token
    assert res["curves"]["diff"][0]["recovery_mean"] == pytest.approx(1.0, abs=1e-4)
    assert res["curves"]["final"][n_blocks]["recovery_mean"] == pytest.approx(1.0, abs=1e-4)
    # an explicit layer list is patched with the known-answer layers added
    some = run_pm3(model, tokenizer, pairs, **{**PM3, "n_bootstrap": 100, "layers": [0]})
    assert some["layers"] == [0, 1, 2] and some["interior_layers"] == [2]
    text = summary_markdown(res)
    for word in ("Plan verdict", "Controlled verdict", "Threshold", "Date", "Duration"):
        assert word in text


def test_n_pairs_draws_at_random(tiny_gpt2, one_torch_thread):
    model, tokenizer = tiny_gpt2
    pairs = answered_pairs(model, tokenizer, n=12)
    res = run_pm3(model, tokenizer, pairs, **{**PM3, "n_bootstrap": 100, "n_pairs": 6})
    drawn = [row["id"] for row in res["per_pair"]]
    assert len(drawn) == 6 and drawn != [p.id for p in pairs[:6]]
    again = run_pm3(model, tokenizer, pairs, **{**PM3, "n_bootstrap": 100, "n_pairs": 6})
    assert [row["id"] for row in again["per_pair"]] == drawn


def test_script_end_to_end(tmp_path, tiny_model_dir, one_torch_thread):
    pm3_patching = load_script("pm3_patching")
    folder = tiny_model_dir("gpt2")
    model, tokenizer = load_model(folder, dtype="float32", device="cpu")
    pairs = answered_pairs(model, tokenizer, n=6)
    pairs_path = tmp_path / "pairs.jsonl"
    pairs_path.write_text(
        "".join(json.dumps({**p.__dict__}) + "\n" for p in pairs), encoding="utf-8"
    )
    out = tmp_path / "pm3"
    section = {**PM3, "model": "tiny", "pairs": None, "n_pairs": 50, "n_bootstrap": 100}
    params = ["--params", json.dumps({**section, "dtype": "auto", "device": "cpu"})]
    args = ["--model", str(folder), "--pairs", str(pairs_path), "--output-dir", str(out)]
    pm3_patching.main([*params, *args, "--layers", "0,1,2,3"])
    results = json.loads((out / "results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert results["premortem"] == "pm3" and results["model"] == str(folder)
    assert "per_pair" not in results and set(results["curves"]) == {"diff", "final"}
    rows = [json.loads(line) for line in (out / "per_pair.jsonl").read_text().splitlines()]
    assert len(rows) == len(pairs) and set(rows[0]["patched_logit_diff"]) == {"diff", "final"}
    assert config["position"] == "diff" and "provenance" in config
    assert config["pairs"] == str(pairs_path) and config["layers"] == [0, 1, 2, 3]
    assert "Controlled verdict" in (out / "summary.md").read_text()
    pm3_patching.main([*params, *args, "--n-samples", "4"])
    assert json.loads((out / "results.json").read_text())["n_pairs_loaded"] == 4
    main = pm3_patching.main
    assert_clean_exit(main, [*params, *args, "--layers", "0,9"], "layers must lie in 0..3")
    missing = ["--pairs", str(tmp_path / "missing.jsonl"), "--output-dir", str(out)]
    with_model = [*params, "--model", str(folder), *missing]
    assert_clean_exit(main, with_model, "prompt pairs file not found")
    assert_clean_exit(main, [*params, *missing], "missing parameter(s) model_ref")


# --- the model reference the workflow passes ------------------------------------------------------

HUB = {"source": "hub", "id": "org/model", "revision": "abc"}
REFERENCE = {"name": "hub", "path": "org/model", "revision": "abc"}
SECTION = {
    "model": "hub",
    "pairs": None,
    "position": "diff",
    "layers": None,
    "n_pairs": 50,
    "layer_band": [0.25, 0.75],
    "selection_fraction": 0.5,
    "n_bootstrap": 1000,
    "threshold": 0.5,
    "seed": 0,
    "dtype": "float32",
    "device": "cpu",
}


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    row = {
        "id": "p0",
        "clean": "The cat sat on roof mat",
        "corrupted": "The cat sat on A mat",
        "clean_answer": "roof",
        "corrupted_answer": "A",
        "metadata": {},
    }
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return path


def _recording_loader(calls: list[dict]):
    """A load_model that records its arguments and stops the script there."""

    def load(source, **kwargs):
        calls.append({"source": str(source), **kwargs})
        raise ModelLoadError("stopped after load_model")

    return load


def test_script_loads_the_revision_of_the_model_reference(monkeypatch, tmp_path, pairs_file):
    script = load_script("pm3_patching")
    calls: list[dict] = []
    monkeypatch.setattr(script, "load_model", _recording_loader(calls))
    params = json.dumps({**SECTION, "model_ref": REFERENCE})
    argv = ["--params", params, "--pairs", str(pairs_file), "--output-dir", str(tmp_path / "out")]
    assert_clean_exit(script.main, argv, "stopped after load_model")
    assert calls == [
        {"source": "org/model", "revision": "abc", "dtype": "float32", "device": "cpu"}
    ]
    # by hand, --model and --revision replace the reference
    hand = [*argv, "--model", "other/model", "--revision", "v2"]
    assert_clean_exit(script.main, hand, "stopped after load_model")
    assert calls[-1]["source"] == "other/model" and calls[-1]["revision"] == "v2"


def _params_of(output: str, script: str) -> list[dict]:
    """The --params JSON of every scheduled shell command that runs ``script``."""
    found = []
    for line in output.splitlines():
        if f"scripts/{script}.py" not in line or "--params" not in line:
            continue
        words = shlex.split(re.sub(r"^.*?(python )", r"\1", line).split(">")[0])
        found.append(json.loads(words[words.index("--params") + 1]))
    return found


def test_workflow_passes_pm3_the_revision_extraction_used(tmp_path):
    """With a hub model pinned to a revision, PM3 and the extraction of that model get the same
    model reference, revision included (PM3 used to load the hub's default revision)."""
    workdir = copy_workflow(tmp_path / "study")
    models = json.dumps({"hub": HUB})
    premortems = json.dumps({"pm2": {"model": "hub"}, "pm3": {"model": "hub"}})
    result = snakemake(
        workdir,
        "-n",
        "-p",
        "--cores",
        "1",
        "--config",
        f"models={models}",
        f"premortems={premortems}",
    )
    output = result.stdout + result.stderr
    (pm3,) = _params_of(output, "pm3_patching")
    assert pm3["model_ref"] == {**REFERENCE, "source": "hub"}
    extracted = [p["model_ref"] for p in _params_of(output, "extract")]
    assert {**REFERENCE, "source": "hub"} in extracted
