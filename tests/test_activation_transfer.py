"""Known answers for activation transfer (experiment 2A): injection, the map, the statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.scripts import assert_clean_exit, load_script

from actspace.branches.cross_model.activation_transfer import (
    _item_variation,
    derangement,
    paired_gain,
    run_activation_transfer,
    split_transfer_items,
    transfer_comparison,
    transfer_criteria,
)
from actspace.branches.cross_model.transfer_report import likely_reasons, summary_markdown
from actspace.core import criteria
from actspace.core.io import to_json, write_jsonl
from actspace.core.schema import validate_schema
from actspace.core.store import ActivationStore
from actspace.lm.extraction import extract_store
from actspace.lm.hooks import patch_residual
from actspace.lm.models import load_model, residual_blocks
from actspace.lm.tasks import Item, items_to_rows
from actspace.methods.injection import encode_items, score_items
from actspace.methods.ridge import AffineMap

#: The schema's defaults: the ``extract:`` settings and the ``activation_transfer`` section.
DEFAULTS = validate_schema({})
#: float32 storage: the store must equal a re-run to 1e-5 (16-bit storage rounds to 2**-11).
EXTRACT = {key: DEFAULTS["extract"][key] for key in ("poolings", "shard_size")}
EXTRACT["storage_dtype"] = "float32"


def schema_defaults() -> dict:
    """The defaults of ``experiments.activation_transfer``, with model names and seed 0."""
    section = DEFAULTS["experiments"]["activation_transfer"]
    return section | {"source": "source", "target": "target", "task": "task", "seed": 0}


def run(source_store, target_store, model, tokenizer, items, **overrides):
    """``run_activation_transfer`` with the schema's defaults and ``overrides``."""
    params = schema_defaults() | overrides
    params.pop("task")
    return run_activation_transfer(source_store, target_store, model, tokenizer, items, **params)


WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "cat", "sat", "on", "mat",
    "man", "roof", "bird", "window", "Paris",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and oversubscribed cores slow them 20-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _items(n: int, seed: int = 0) -> list[Item]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        context = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 8))))
        choices = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)))) for _ in range(3)]
        items.append(Item(f"item-{i}", context, choices, int(rng.integers(3)), {}))
    return items


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    return {
        family: load_model(tiny_model_dir(family), device="cpu", dtype="float32")
        for family in ("gpt2", "gpt_neox")
    }


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(
        abs(x - y)
        for row_a, row_b in zip(a, b, strict=True)
        for x, y in zip(row_a, row_b, strict=True)
    )


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_injecting_the_targets_own_activation_leaves_scores_unchanged(models, family):
    model, tokenizer = models[family]
    encoded = encode_items(model, tokenizer, _items(12))
    plain, own = score_items(model, encoded, capture_layer=2, batch_size=5)
    for coefficient in (1.0, 0.5):
        patched, _ = score_items(
            model, encoded, layer=2, vectors=own, coefficient=coefficient, batch_size=3
        )
        assert _max_diff(plain, patched) < 1e-5
    # a different vector does change the scores, so the patch reaches the scored tokens
    zeros, _ = score_items(model, encoded, layer=2, vectors=np.zeros_like(own))
    assert _max_diff(plain, zeros) > 1e-3


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_capture_is_the_last_context_token_and_patch_matches_a_manual_run(models, family):
    model, tokenizer = models[family]
    items = _items(4, seed=1)
    encoded = encode_items(model, tokenizer, items)
    _, own = score_items(model, encoded, capture_layer=1)
    vector = torch.linspace(-1.0, 1.0, own.shape[1])
    patched, _ = score_items(
        model, encoded, layer=1, vectors=np.tile(vector.numpy(), (len(items), 1))
    )
    block = residual_blocks(model)[0]
    for i, enc in enumerate(encoded):
        context = enc.inputs[0][: enc.positions[0] + 1]
        with torch.no_grad():
            hidden = model(torch.tensor([context]), output_hidden_states=True).hidden_states
        np.testing.assert_allclose(own[i], hidden[1][0, -1].numpy(), atol=1e-5)
        for j, (inp, cont, pos) in enumerate(
            zip(enc.inputs, enc.continuations, enc.positions, strict=True)
        ):

            def put(h: torch.Tensor, pos: int = pos) -> torch.Tensor:
                h = h.clone()
                h[0, pos] = vector
                return h

            with torch.no_grad(), patch_residual(block, put):
                logits = model(torch.tensor([inp])).logits[0]
            logprobs = torch.log_softmax(logits[pos : pos + len(cont)], dim=-1)
            expected = float(logprobs.gather(1, torch.tensor(cont)[:, None]).sum())
            assert patched[i][j] == pytest.approx(expected, abs=1e-4)


def test_affine_map_recovers_an_exact_linear_function():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12))
    y = x @ rng.normal(size=(12, 8)) + 4.0
    fitted = AffineMap().fit(x[:150], y[:150])
    np.testing.assert_allclose(fitted.predict(x[150:]), y[150:], atol=1e-2)
    score = fitted.score(x[150:], y[150:])
    assert score["correlation"] > 0.9999 and score["r2"] > 0.9999


def test_paired_gain_known_answers():
    base = np.array([True] * 10 + [False] * 10)
    new = base.copy()
    new[10:15] = True  # five items fixed, none broken
    result = paired_gain(new, base, n_bootstrap=500, seed=0)
    assert result["gain_points"] == pytest.approx(25.0)
    assert result["table"] == {"both": 10, "base_only": 0, "new_only": 5, "neither": 5}
    assert result["mcnemar_exact"] and result["mcnemar_p"] == pytest.approx(2 * 0.5**5)
    assert 0 < result["ci"][0] <= 25.0 <= result["ci"][1]
    same = paired_gain(base, base)
    assert same["gain_points"] == 0.0 and same["ci"] == [0.0, 0.0] and same["mcnemar_p"] == 1.0


def _arms(n_base_right: int, n_moved_right: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Per-item correctness of the target alone and with the transfer; the transfer only adds."""
    base = np.arange(n) < n_base_right
    moved = np.arange(n) < n_moved_right
    return base, moved


def _criteria_of(base, moved, shuffled, min_gain=2.0):
    gain = paired_gain(moved, base, n_bootstrap=500)
    over_shuffled = paired_gain(moved, shuffled, n_bootstrap=500)
    return transfer_criteria(gain, over_shuffled, min_gain)


def test_a_gain_that_the_shuffled_control_also_gives_fails_on_the_control():
    """+25 points over the target, far above the 2-point bar, but another item's mapped vector
    gives the same answers: the gain is not item-specific, so the transfer fails, and the
    failed part is the control."""
    base, moved = _arms(20, 30)
    parts = _criteria_of(base, moved, shuffled=moved.copy())
    plan_part, control = parts
    assert plan_part["value"] == pytest.approx(25.0) and plan_part["passed"] is True
    assert control["value"] == 0.0 and control["ci"] == [0.0, 0.0]
    assert control["passed"] is False
    assert criteria.success(parts) is False
    assert [c["name"] for c in criteria.failed(parts)] == ["beats_shuffled_control"]


def test_a_gain_beyond_the_shuffled_control_succeeds():
    base, moved = _arms(20, 30)
    parts = _criteria_of(base, moved, shuffled=base.copy())
    assert [c["passed"] for c in parts] == [True, True]
    assert criteria.success(parts) is True and criteria.failed(parts) == []


def test_a_gain_below_min_gain_fails_on_the_plan_even_with_an_interval_above_0():
    base, moved = _arms(20, 30)
    parts = _criteria_of(base, moved, shuffled=base.copy(), min_gain=30.0)
    assert parts[0]["ci"][0] > 0 and parts[0]["passed"] is False and parts[1]["passed"] is True
    assert [c["name"] for c in criteria.failed(parts)] == ["gain_over_target"]


def test_criteria_follow_the_contract():
    base, moved = _arms(20, 30)
    parts = _criteria_of(base, moved, shuffled=base.copy(), min_gain=2.0)
    assert [(c["name"], c["kind"]) for c in parts] == [
        ("gain_over_target", "plan"),
        ("beats_shuffled_control", "control"),
    ]
    for part in parts:
        assert set(part) == {"name", "kind", "rule", "value", "ci", "bound", "passed"}
        assert len(part["ci"]) == 2 and part["ci"][0] <= part["value"] <= part["ci"][1]
    assert parts[0]["bound"] == 2.0 and parts[1]["bound"] == 0.0
    assert "at least 2 accuracy points" in parts[0]["rule"]


def test_item_variation_known_values():
    assert _item_variation(np.tile([3.0, 4.0], (5, 1))) == 0.0
    assert _item_variation(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(1.0)


def test_splits_and_derangement():
    train, val, test = split_transfer_items(100, 50, 0.4, 0.2, seed=3)
    assert (train.size, val.size, test.size) == (20, 10, 20)
    assert len(set(train) | set(val) | set(test)) == 50
    perm = derangement(7, np.random.default_rng(0))
    assert sorted(perm) == list(range(7)) and not np.any(perm == np.arange(7))
    with pytest.raises(ValueError, match="below 1"):
        split_transfer_items(100, None, 0.6, 0.4, seed=0)


@pytest.fixture(scope="module")
def stores(models, tmp_path_factory):
    items = _items(40, seed=2)
    folder = tmp_path_factory.mktemp("transfer_stores")
    for family, (model, tokenizer) in models.items():
        extract_store(
            model, tokenizer, items, folder / family, progress=False, batch_size=8, **EXTRACT
        )
    return items, ActivationStore(folder / "gpt2"), ActivationStore(folder / "gpt_neox")


@pytest.fixture(scope="module")
def transfer_results(models, stores):
    items, source, target = stores
    model, tokenizer = models["gpt_neox"]
    return run(
        source, target, model, tokenizer, items, n_bootstrap=200, seed=4, source="g", target="n"
    )


def test_run_activation_transfer_end_to_end(stores, transfer_results):
    _, source, target = stores
    results = transfer_results
    assert (results["n_train"], results["n_val"], results["n_test"]) == (16, 8, 16)
    assert (results["source_layer"], results["target_layer"]) == (2, 2)
    # the unpatched target reproduces the store, item for item
    assert results["diagnostics"]["store_loglik_max_abs_diff"] < 1e-4
    assert results["diagnostics"]["store_activation_max_abs_diff"] < 1e-5
    test = split_transfer_items(40, None, 0.4, 0.2, seed=4)[2]
    assert results["accuracy"]["target"]["value"] == pytest.approx(target.correct()[test].mean())
    assert results["accuracy"]["source"]["value"] == pytest.approx(source.correct()[test].mean())
    gain = results["gain"]["transfer"]["gain_points"]
    delta = (
        results["accuracy"]["target_with_transfer"]["value"]
        - results["accuracy"]["target"]["value"]
    )
    assert gain == pytest.approx(100 * delta)
    over_shuffled = 100 * (
        results["accuracy"]["target_with_transfer"]["value"]
        - results["accuracy"]["shuffled_control"]["value"]
    )
    plan_part, control = results["criteria"]
    assert plan_part["passed"] == (gain >= 2.0 and results["ci"][0] > 0)
    assert control["value"] == pytest.approx(over_shuffled)
    assert control["passed"] == (results["transfer_over_shuffled"]["ci"][0] > 0)
    assert results["success"] == (plan_part["passed"] and control["passed"])
    assert results["verdict"] == ("SUCCESS" if results["success"] else "NO_TRANSFER")
    # the coefficient was chosen on validation items, the penalty on training items
    assert results["held_out"] is True and "validation items" in results["selection"]
    assert [row["coefficient"] for row in results["coefficients_tried"]] == [0.25, 0.5, 0.75, 1.0]
    text = summary_markdown(results)
    assert "Target + transferred activation" in text
    if not results["success"]:
        assert "Why it likely did not work" in text and likely_reasons(results)
        for part in criteria.failed(results["criteria"]):
            assert f"`{part['name']}`" in text


def test_comparison_block_matches_the_headline(transfer_results):
    results = transfer_results
    comparison = results["comparison"]
    assert comparison["kind"] == "paired" and comparison["unit"] == "item"
    assert comparison["binary"] is True and comparison["scale"] == 100.0
    a, b = np.array(comparison["a"]), np.array(comparison["b"])
    assert len(a) == len(b) == results["n"] == results["n_test"]
    assert set(np.unique(np.r_[a, b])) <= {0.0, 1.0}
    assert all(type(v) is float for v in comparison["a"] + comparison["b"])
    assert 100 * (a.mean() - b.mean()) == pytest.approx(results["value"])
    assert a.mean() == pytest.approx(results["accuracy"]["target_with_transfer"]["value"])
    assert b.mean() == pytest.approx(results["accuracy"]["target"]["value"])
    table = results["gain"]["transfer"]["table"]
    assert int(np.sum((a == 1) & (b == 0))) == table["new_only"]
    assert int(np.sum((a == 0) & (b == 1))) == table["base_only"]


def test_transfer_comparison_known_answer():
    base = np.array([True] * 10 + [False] * 10)
    moved = base.copy()
    moved[10:15] = True
    comparison = transfer_comparison(moved, base, "acc")
    gain = paired_gain(moved, base, n_bootstrap=100)["gain_points"]
    diff = np.mean(comparison["a"]) - np.mean(comparison["b"])
    assert comparison["scale"] * diff == pytest.approx(gain) == pytest.approx(25.0)
    assert comparison["a"][:15] == [1.0] * 15 and comparison["b"][10:] == [0.0] * 10


def test_bad_inputs_are_refused(models, stores):
    items, source, target = stores
    model, tokenizer = models["gpt_neox"]
    with pytest.raises(ValueError, match="not the task's items"):
        run(source, target, model, tokenizer, items[::-1])
    with pytest.raises(ValueError, match="out of range"):
        run(source, target, model, tokenizer, items, target_layer=0)
    with pytest.raises(ValueError, match="out of range 1..3"):
        run(source, target, model, tokenizer, items, target_layer=4)
    with pytest.raises(ValueError, match="pooling 'last'"):
        run(source, target, model, tokenizer, items, pooling="mean")
    with pytest.raises(ValueError, match="layer_depth"):
        run(source, target, model, tokenizer, items, layer_depth=-0.1)


def test_one_model_as_source_and_target_is_not_measured(models, stores):
    items, source, target = stores
    model, tokenizer = models["gpt_neox"]
    results = run(target, target, model, tokenizer, items, source="solo", target="solo")
    assert results["value"] is None and results["success"] is None
    assert "source and target are both solo" in results["reason"]
    assert summary_markdown(results).startswith("# Activation transfer (2A)\n\nNot measured:")


def test_script_reads_the_rules_params(stores, transfer_results, tiny_model_dir, tmp_path):
    """What the rule passes (the section, the target's model reference, dtype and device, the
    task file and the seed) gives the library's results; bad input is one line."""
    items, source, target = stores
    task = tmp_path / "task.jsonl"
    write_jsonl(task, items_to_rows(items))
    model_ref = {"name": "n", "path": str(tiny_model_dir("gpt_neox")), "revision": None}
    section = schema_defaults() | {"source": "g", "target": "n", "n_bootstrap": 200}
    section.pop("seed")
    params = section | {"model_ref": model_ref, "dtype": "float32", "device": "cpu"}
    stores_args = ["--source-store", str(source.path), "--target-store", str(target.path)]
    out = tmp_path / "out"
    main = load_script("activation_transfer").main
    main(
        ["--params", json.dumps(params), *stores_args, "--task", str(task), "--seed", "4"]
        + ["--output-dir", str(out)]
    )
    results = json.loads((out / "results.json").read_text())
    expected = json.loads(to_json(transfer_results))
    for wall_clock in ("date", "duration_s"):
        results.pop(wall_clock), expected.pop(wall_clock)
    assert results == expected
    config = json.loads((out / "config.json").read_text())
    assert config["model_ref"] == model_ref and config["seed"] == 4
    refused = ["--task", str(task), "--seed", "4", "--output-dir", str(tmp_path / "refused")]
    missing = ["--source-store", str(tmp_path / "a"), "--target-store", str(tmp_path / "b")]
    assert_clean_exit(main, ["--params", json.dumps(params), *missing, *refused], "not found")
    assert_clean_exit(main, [*stores_args, *refused], "no model")
    no_model = json.dumps({key: v for key, v in params.items() if key != "model_ref"})
    assert_clean_exit(main, ["--params", no_model, *stores_args, *refused], "no model")
    assert not (tmp_path / "refused").exists()
